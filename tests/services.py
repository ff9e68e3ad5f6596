"""Real processes for tests: Redis, and the product itself (daphne + `runworker`).

The process plumbing (free ports, process groups, the Redis binary) lives in
`scripts/localservices.py`, shared with `make run` and `make test`; this module
adds what tests need on top: the database URL of the *test* database, and
`live_stack()`, which runs daphne and a worker against it.

How the subprocesses see the test's data: pytest-django creates the test
database (SQLite: the file `DATABASES["default"]["TEST"]["NAME"]` under
BATCHFETCH_VAR_DIR; PostgreSQL: `test_<name>`), and after that
`connection.settings_dict` describes it. `database_url()` turns that into a
DATABASE_URL for the children. The test must use `transactional_db` (as
pytest-django's `live_server` does), so what it writes is committed and visible
to other processes; pytest-django flushes the tables afterwards. The `live_stack`
fixture depends on `transactional_db`, so the children are stopped before that
flush (fixtures are torn down in reverse order) and no connection of theirs is
left when the test database is dropped at the end of the session.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scripts.localservices import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    free_port,
    redis_address,
    redis_answers,
    start_process,
    start_redis,
    wait_for_port,
)

BASE_DIR = Path(__file__).resolve().parent.parent

__all__ = [
    "LiveStack",
    "ManagedProcess",
    "ServiceError",
    "database_url",
    "free_port",
    "live_stack",
    "redis_address",
    "redis_answers",
    "start_redis",
]


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """A DATABASE_URL for the database described by a Django `settings_dict` (SQLite file or PostgreSQL)."""
    engine = settings_dict["ENGINE"]
    name = str(settings_dict["NAME"])
    if engine == "django.db.backends.sqlite3":
        if name == ":memory:" or "mode=memory" in name:
            raise ServiceError("an in-memory SQLite database cannot be shared with other processes")
        return f"sqlite:///{Path(name).resolve()}"
    if engine == "django.db.backends.postgresql":
        user = quote(str(settings_dict.get("USER") or ""), safe="")
        password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = quote(str(settings_dict.get("HOST") or ""), safe="")  # a socket directory becomes %2F...
        port = settings_dict.get("PORT") or ""
        return f"postgres://{credentials}{host}{':' if port else ''}{port}/{quote(name, safe='')}"
    raise ServiceError(f"no DATABASE_URL form for {engine}")


@dataclass
class LiveStack:
    """daphne and a worker running as separate processes, as in production."""

    base_url: str
    """http://127.0.0.1:<port>, also the Origin a browser on the site sends."""
    env: dict[str, str]
    daphne: ManagedProcess
    worker: ManagedProcess
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def url(self, path: str) -> str:
        return self.base_url + path

    def assert_alive(self) -> None:
        """Fail with the process logs if daphne or the worker has exited."""
        for process in (self.daphne, self.worker):
            if process.poll() is not None:
                raise AssertionError(f"{process.name} exited with {process.poll()}{process.log_tail(80)}")

    def restart_daphne(self, *, down_for: float = 0.0, startup_timeout: float = 30.0) -> None:
        """Stop daphne (SIGTERM), wait `down_for` seconds, start it again on the same port (for reconnect tests)."""
        old = self.daphne
        old.stop()
        time.sleep(down_for)
        self.daphne = start_process("daphne", old.argv, env=self.env, cwd=BASE_DIR, log_path=old.log_path)
        self.processes.append(self.daphne)  # the same list live_stack() stops at the end
        port = int(self.base_url.rsplit(":", 1)[1])
        wait_for_port(LOOPBACK, port, timeout=startup_timeout, process=self.daphne)

    def logs(self) -> str:
        return "".join(process.log_tail(200) for process in self.processes)


def product_env(*, database_url: str, redis_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a product process started by a test."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DJANGO_DEBUG": "1",
            "FETCH_ALLOW_PRIVATE_ADDRESSES": "1",
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


@contextmanager
def live_stack(
    *,
    database_url: str,
    redis_url: str,
    workdir: Path,
    worker_args: Sequence[str] = ("--concurrency", "100"),
    extra_env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 20.0,
) -> Iterator[LiveStack]:
    """Run `daphne project.asgi:application` on a free port and `manage.py runworker`; stop both afterwards.

    Output goes to log files in `workdir`; the tails are printed at the end, so
    pytest shows them when the test failed. The worker is stopped first
    (SIGTERM: graceful), then daphne; each is SIGKILLed after `stop_timeout`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = product_env(database_url=database_url, redis_url=redis_url, extra=extra_env)
    port = free_port()
    daphne_argv = [sys.executable, "-m", "daphne", "-b", LOOPBACK, "-p", str(port), "project.asgi:application"]
    worker_argv = [sys.executable, "manage.py", "runworker", *worker_args]
    started: list[ManagedProcess] = []
    try:
        daphne = start_process("daphne", daphne_argv, env=env, cwd=BASE_DIR, log_path=workdir / "daphne.log")
        started.append(daphne)
        worker = start_process("runworker", worker_argv, env=env, cwd=BASE_DIR, log_path=workdir / "worker.log")
        started.append(worker)
        wait_for_port(LOOPBACK, port, timeout=startup_timeout, process=daphne)
        stack = LiveStack(f"http://{LOOPBACK}:{port}", env, daphne, worker, processes=started)
        stack.assert_alive()
        yield stack
    finally:
        for process in reversed(started):
            process.stop(timeout=stop_timeout)
        for process in started:
            print(process.log_tail(200))
