"""Health: /healthz (alive, no I/O), /readyz (database and Redis within 1 s), `runworker --check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient

from jobs.worker import housekeeping
from tests import services

BASE_DIR = Path(__file__).resolve().parents[2]


def get_json(url: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def check_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "runworker", "--check", *args],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.integration
def test_readyz_names_redis_within_2_s_of_it_stopping_while_healthz_stays_200(
    live_database_url: str, tmp_path: Path
) -> None:
    port = services.free_port()
    redis = services.start_redis(port=port, workdir=tmp_path / "redis")  # our own: this test stops it
    redis_url = f"redis://127.0.0.1:{port}/0"
    health_file = tmp_path / "worker.alive"
    try:
        with services.live_stack(
            database_url=live_database_url, redis_url=redis_url, workdir=tmp_path / "stack",
            worker_args=("--concurrency", "4", "--health-file", str(health_file)),
        ) as stack:  # fmt: skip
            code, body = get_json(stack.url("/readyz"))
            assert (code, body["status"], body["failed"]) == (200, "ok", [])
            assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
            assert get_json(stack.url("/healthz")) == (200, {"status": "ok"})
            deadline = time.monotonic() + 30
            while not health_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert check_worker(stack.env, "--health-file", str(health_file)).returncode == 0

            redis.stop()
            stopped = time.monotonic()
            while True:
                code, body = get_json(stack.url("/readyz"))
                if code == 503:
                    break
                assert time.monotonic() - stopped < 2.0, f"/readyz still {code} {body} 2 s after Redis stopped"
                time.sleep(0.05)
            assert time.monotonic() - stopped < 2.0
            assert body["status"] == "unavailable" and body["failed"] == ["redis"]
            assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["error"]
            assert get_json(stack.url("/healthz")) == (200, {"status": "ok"})

            checked = check_worker(stack.env, "--health-file", str(health_file))
            assert checked.returncode == 1 and "redis" in checked.stderr
            stack.assert_alive()  # the worker rides the outage out
    finally:
        redis.stop()


@pytest.mark.django_db(transaction=True)
def test_runworker_check_fails_for_a_stale_or_missing_health_file(
    live_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    fresh = tmp_path / "fresh"
    fresh.touch()
    ok = check_worker(env, "--health-file", str(fresh))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"

    stale = tmp_path / "stale"
    stale.touch()
    old = time.time() - housekeeping.STALE_SECONDS - 5
    os.utime(stale, (old, old))
    checked = check_worker(env, "--health-file", str(stale))
    assert checked.returncode == 1 and "stuck" in checked.stderr
    missing = check_worker(env, "--health-file", str(tmp_path / "missing"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert check_worker(env).returncode == 0  # without a file: the database and Redis only


@pytest.mark.django_db(transaction=True)
async def test_healthz_and_readyz_answer_for_any_host(settings: Any) -> None:
    client = AsyncClient()
    response = await client.get("/healthz", HTTP_HOST="10.1.2.3:8000")  # a probe addresses the container by IP
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    response = await client.get("/readyz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200 and response.json()["failed"] == []

    settings.REDIS_URL = f"redis://127.0.0.1:{services.free_port()}/0"  # nothing listens there
    started = time.monotonic()
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["redis"]
    assert time.monotonic() - started < 1.5


def test_health_endpoints_skip_the_https_redirect(settings: Any) -> None:
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/accounts/login/").status_code == 301  # everything else is still redirected


def test_runworker_check_names_an_unreachable_database_and_exits_promptly(redis_url: str) -> None:
    env = services.product_env(database_url=f"postgres://u:p@127.0.0.1:{services.free_port()}/none", redis_url=redis_url)
    started = time.monotonic()
    checked = check_worker(env)
    assert checked.returncode == 1 and "not healthy: database:" in checked.stderr
    assert json.loads(checked.stdout)["failed"] == ["database"]
    assert time.monotonic() - started < 20  # Django's start-up, then 1 s: a hung connect does not hold the exit
