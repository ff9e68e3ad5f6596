"""`dbretry.retrying`: transient database errors are retried with backoff and logged once per outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from django.db import IntegrityError, OperationalError

from jobs.worker import dbretry


def failing(times: int, error: Exception) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A call that raises `error` on its first `times` attempts, then returns "ok"; and its attempt log."""
    attempts: list[int] = []

    async def call() -> str:
        attempts.append(len(attempts))
        if len(attempts) <= times:
            raise error
        return "ok"

    return call, attempts


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbretry, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(dbretry, "MAX_BACKOFF", 0.02)


async def test_transient_errors_are_retried_and_the_outage_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    call, attempts = failing(4, OperationalError("database is locked"))
    with caplog.at_level(logging.WARNING, logger="jobs.worker.dbretry"):
        assert await dbretry.retrying(call, doing="testing") == "ok"
    assert len(attempts) == 5
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("Database unreachable while testing (OperationalError: database is locked)")
    assert messages[1].startswith("Database reachable again after")
    assert not dbretry.outage.down


async def test_other_database_errors_are_not_retried() -> None:
    call, attempts = failing(1, IntegrityError("duplicate key"))
    with pytest.raises(IntegrityError):
        await dbretry.retrying(call, doing="testing")
    assert len(attempts) == 1


async def test_give_up_raises_the_next_transient_error() -> None:
    give_up = asyncio.Event()
    call, attempts = failing(1000, OperationalError("connection refused"))
    task = asyncio.create_task(dbretry.retrying(call, doing="testing", give_up=give_up))
    await asyncio.sleep(0.1)
    assert not task.done() and len(attempts) > 2
    give_up.set()
    with pytest.raises(OperationalError):
        await asyncio.wait_for(task, timeout=1)
    dbretry.outage.succeeded()  # leave the process-wide state clean for other tests
