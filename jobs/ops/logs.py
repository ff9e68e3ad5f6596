"""Structured logs: `BATCHFETCH_LOG_FORMAT=json` writes one JSON object per line.

The worker binds its id and, in each job's task, the job's id to context
variables (`bind`); every record logged in that context, including from the
threads `sync_to_async` runs database calls in (asgiref copies the context),
carries them. Standard library only: settings.LOGGING names the formatter
before Django is set up.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("batchfetch_job_id", default=None)
worker_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("batchfetch_worker_id", default=None)
_CONTEXT = {"job_id": job_id, "worker_id": worker_id}


@contextlib.contextmanager
def bind(**values: object) -> Iterator[None]:
    """Set `job_id` and/or `worker_id` for the records logged in this context (and tasks it starts)."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(str(value))) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """timestamp (UTC, ISO 8601), level, logger, message, then job_id / worker_id when known, and the
    traceback (`exception`) if any. A record's own `job_id` / `worker_id` (logging's `extra=`) wins."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT.items():
            value = getattr(record, name, None) or var.get()
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


FORMATS = ("text", "json")


def logging_config(*, log_format: str, level: str) -> dict[str, object]:
    """settings.LOGGING for `log_format` (text: the human-readable default, or json)."""
    if log_format not in FORMATS:
        raise ValueError(f"BATCHFETCH_LOG_FORMAT must be text or json, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": "jobs.ops.logs.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {"jobs": {"level": level}},
    }
