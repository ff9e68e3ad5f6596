"""asyncio's debug mode in the worker (`runworker -v 3`, BATCHFETCH_ASYNCIO_DEBUG=1) and startup hooks.

The real `runworker` process runs with a startup hook (tests/worker/loophooks.py, via
the settings module tests/worker/settings_loophook.py) that blocks its loop for 0.3 s;
in debug mode asyncio's slow-callback warning must be in the worker's log, and
the job it was given must still complete.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.checks import run_checks

from jobs.models import Job
from jobs.worker import eventloop
from jobs.worker.runner import Worker
from tests import services
from tests.target import TargetServer
from tests.worker.conftest import make_job

SLOW_CALLBACK = "took 0.3"  # asyncio: "Executing <Handle sleep(0.3) ...> took 0.300 seconds"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def run_worker(env: dict[str, str], *args: str) -> str:
    """`runworker --batch` with the blocking startup hook; its log (stderr), once it exited 0."""
    done = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--batch", *args],
        env={**env, "DJANGO_SETTINGS_MODULE": "tests.worker.settings_loophook"},
        cwd=services.BASE_DIR, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "extra_env", "reported"),
    [
        (["-v", "3"], {}, True),
        ([], {"BATCHFETCH_ASYNCIO_DEBUG": "1"}, True),
        ([], {}, False),
    ],
    ids=["verbosity-3", "environment", "off"],
)
def test_the_worker_logs_a_callback_that_blocks_its_loop_in_debug_mode(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str,
    args: list[str], extra_env: dict[str, str], reported: bool,
) -> None:  # fmt: skip
    job = make_job(owner, [target.url(f"/ok?i={i}") for i in range(20)], concurrency=5)
    env = services.product_env(database_url=live_database_url, redis_url=redis_url, extra=extra_env)
    log = run_worker(env, *args)
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 20), log
    assert (SLOW_CALLBACK in log) is reported, log
    if reported:
        line = next(line for line in log.splitlines() if SLOW_CALLBACK in line)
        assert "WARNING asyncio: Executing" in line and "sleep" in line  # the culprit is named
        assert "asyncio debug mode: callbacks over 0.1 s are logged" in log


def test_debug_mode_sets_the_slow_callback_threshold_from_the_settings(settings: Any) -> None:
    settings.WORKER_SLOW_CALLBACK_SECONDS = 0.25

    async def probe() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        return loop.get_debug(), loop.slow_callback_duration

    assert eventloop.run(probe(), debug=True) == (True, 0.25)
    assert eventloop.run(probe(), debug=False) == (False, 0.1)  # asyncio's default, untouched


def test_debug_mode_routes_never_awaited_coroutines_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    async def forgotten() -> None:
        pass

    async def main() -> None:
        forgotten()  # never awaited: the interpreter warns when it is collected

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as a production process would: the log must still get it
        eventloop.run(main(), debug=True)
    assert any(r.name == "py.warnings" and "was never awaited" in r.getMessage() for r in caplog.records)


def test_verbosity_3_or_the_setting_turns_debug_mode_on(settings: Any) -> None:
    settings.WORKER_ASYNCIO_DEBUG = False
    assert [eventloop.debug_requested(v) for v in (0, 1, 2, 3)] == [False, False, False, True]
    settings.WORKER_ASYNCIO_DEBUG = True
    assert eventloop.debug_requested(1)


@pytest.mark.django_db(transaction=True)
async def test_startup_hooks_run_on_the_loop_before_the_first_claim(settings: Any) -> None:
    settings.WORKER_STARTUP_HOOKS = ["tests.worker.loophooks.say_hello"]
    worker = Worker(batch=True, handle_signals=False)
    await worker.run()
    assert worker.hello == "from a startup hook"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "error_id"),
    [
        ("WORKER_SLOW_CALLBACK_SECONDS", 0, "jobs.E181"),
        ("WORKER_SLOW_CALLBACK_SECONDS", "fast", "jobs.E181"),
        ("WORKER_STARTUP_HOOKS", ["tests.worker.loophooks.no_such_hook"], "jobs.E182"),
        ("WORKER_STARTUP_HOOKS", "tests.worker.loophooks.block_the_loop", "jobs.E182"),
        ("WORKER_STARTUP_HOOKS", ["tests.worker.loophooks.BLOCK_SECONDS"], "jobs.E182"),
    ],
)
def test_bad_loop_settings_are_reported(settings: Any, name: str, value: Any, error_id: str) -> None:
    setattr(settings, name, value)
    assert error_id in {error.id for error in run_checks()}
