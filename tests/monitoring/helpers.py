"""Shared helpers of the monitoring tests: finished jobs with chosen rows, a loopback webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.utils import timezone

from jobs.models import Job, Result
from jobs.queue.control import enqueue_job


def finished_job(owner: Any, rows: Sequence[tuple[str, str, int | None, str]], **fields: Any) -> Job:
    """A completed job whose rows are (url, outcome, status_code, sha256), in order."""
    job = enqueue_job(owner=owner, urls=[row[0] for row in rows], name=fields.pop("name", "list"),
                             concurrency=5, timeout=3.0)  # fmt: skip
    now = timezone.now()
    for position, (_, outcome, code, sha) in enumerate(rows):
        Result.objects.filter(job=job, position=position).update(
            outcome=outcome, status_code=code, sha256=sha, fetched_at=now
        )
    succeeded = sum(row[1] == "succeeded" for row in rows)
    failed = sum(row[1] == "failed" for row in rows)
    Job.objects.filter(pk=job.pk).update(
        status=fields.pop("status", Job.Status.COMPLETED), succeeded=succeeded, failed=failed,
        started_at=now, finished_at=now, **fields,
    )  # fmt: skip
    job.refresh_from_db()
    return job


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback server on 127.0.0.1: records every POST (webhooks) and answers the codes in `script`,
    then 200; answers a GET of a path in `pages` with its (status, body), which a test may change between runs."""

    port: int
    requests: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    pages: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@contextmanager
def webhook_receiver(script: Sequence[int] = (), pages: dict[str, tuple[int, bytes]] | None = None) -> Iterator[Receiver]:
    state = Receiver(port=0, script=list(script), pages=dict(pages or {}))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = state.script.pop(0) if state.script else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            with state.lock:
                code, body = state.pages.get(self.path, (404, b"not here"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
