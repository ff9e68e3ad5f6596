"""Structured logs: BATCHFETCH_LOG_FORMAT=json writes one JSON object per line, with job and worker ids."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs.ops import logs
from jobs.queue import control
from tests import services
from tests.target import TargetServer

BASE_DIR = Path(__file__).resolve().parents[2]


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("jobs.worker.runner", logging.WARNING, __file__, 1, message, args, exc_info)


def test_the_json_formatter_writes_one_object_with_the_context() -> None:
    formatter = logs.JsonFormatter()
    plain = json.loads(formatter.format(record("Job %s: %d URLs", "abc", 3)))
    assert plain.keys() == {"timestamp", "level", "logger", "message"}
    assert (plain["level"], plain["logger"], plain["message"]) == ("WARNING", "jobs.worker.runner", "Job abc: 3 URLs")
    assert plain["timestamp"].endswith("+00:00") and "T" in plain["timestamp"]

    with logs.bind(worker_id="host:1:ab"), logs.bind(job_id="1234"):
        try:
            raise ValueError("multi\nline")
        except ValueError as exc:
            line = formatter.format(record("failed", exc=exc))
    assert "\n" not in line  # one line per record, even with a traceback
    entry = json.loads(line)
    assert (entry["job_id"], entry["worker_id"]) == ("1234", "host:1:ab")
    assert entry["exception"].startswith("Traceback") and "ValueError: multi\nline" in entry["exception"]
    assert "job_id" not in json.loads(formatter.format(record("after")))  # the context was reset


def test_a_bad_log_format_stops_the_settings() -> None:
    with pytest.raises(ValueError, match="text or json"):
        logs.logging_config(log_format="xml", level="INFO")
    env = services.product_env(database_url="sqlite:///:memory:", redis_url="redis://127.0.0.1:1/0",
                               extra={"BATCHFETCH_LOG_FORMAT": "xml"})  # fmt: skip
    checked = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode != 0 and "BATCHFETCH_LOG_FORMAT must be text or json" in checked.stderr


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_worker_logs_json_lines_with_job_and_worker_ids(
    live_database_url: str, redis_url: str, owner: Any, tmp_path: Path
) -> None:
    with TargetServer() as target:
        job = control.enqueue_job(owner=owner, urls=[target.url("/ok"), target.url("/status/500")], name="logs",
                                 concurrency=2, timeout=5, options={"retries": 0})  # fmt: skip
        env = services.product_env(database_url=live_database_url, redis_url=redis_url,
                                   extra={"BATCHFETCH_LOG_FORMAT": "json"})  # fmt: skip
        done = subprocess.run(
            [sys.executable, "manage.py", "runworker", "--batch", "--worker-id", "w-json", "--concurrency", "4"],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]  # every line is one JSON object
    assert entries and all(entry["worker_id"] == "w-json" for entry in entries)
    about_job = [entry for entry in entries if entry.get("job_id") == str(job.pk)]
    assert any(entry["message"].startswith(f"Job {job.pk} claimed") for entry in about_job)
    assert any(f"Job {job.pk} completed" in entry["message"] for entry in about_job)
    assert {entry["level"] for entry in entries} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}

    text = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--batch", "--worker-id", "w-text"],
        cwd=BASE_DIR, env={**env, "BATCHFETCH_LOG_FORMAT": ""}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert text.returncode == 0 and " INFO jobs.worker.runner: Worker w-text started" in text.stderr
