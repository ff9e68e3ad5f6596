"""Settings come from the environment: each case imports project.settings in a fresh interpreter.

A subprocess per case, because settings are read once at import; an in-process
reload would leak into every later test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import get_commands

BASE_DIR = Path(__file__).resolve().parent.parent
OUR_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DJANGO_", "FETCH_", "BATCHFETCH_", "WORKER_")

DUMP_SETTINGS = """
import json
import django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SECRET_KEY": settings.SECRET_KEY,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
    "FETCH_ALLOW_PRIVATE_ADDRESSES": settings.FETCH_ALLOW_PRIVATE_ADDRESSES,
    "CHANNEL_HOSTS": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
    "db": {key: db.get(key) for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS", "TEST")},
}, default=str))
"""


Runner = Callable[[str, dict[str, str]], "subprocess.CompletedProcess[str]"]
Dump = Callable[[dict[str, str]], dict[str, Any]]


@pytest.fixture
def run_python(tmp_path: Path) -> Runner:
    """Run code in a new interpreter: a clean environment plus the case's variables.

    BATCHFETCH_VAR_DIR defaults to a temporary directory, because settings create
    the SQLite directory on import and must not touch the project tree.
    """

    def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        base = {key: value for key, value in os.environ.items() if not key.startswith(OUR_VARIABLES)}
        base["DJANGO_SETTINGS_MODULE"] = "project.settings"
        base["BATCHFETCH_VAR_DIR"] = str(tmp_path / "var")
        return subprocess.run(
            [sys.executable, "-c", code], cwd=BASE_DIR, env={**base, **env}, capture_output=True, text=True, timeout=60
        )

    return run


@pytest.fixture
def dump_settings(run_python: Runner) -> Dump:
    """Import the settings under an environment and return the values that matter here."""

    def dump(env: dict[str, str]) -> dict[str, Any]:
        completed = run_python(DUMP_SETTINGS, env)
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout.strip().splitlines()[-1])

    return dump


def test_default_database_is_sqlite_in_var_dir_with_wal_busy_timeout_and_immediate(
    dump_settings: Dump, tmp_path: Path
) -> None:
    values = dump_settings({"DJANGO_DEBUG": "1", "BATCHFETCH_VAR_DIR": str(tmp_path)})
    db = values["db"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(db["NAME"]) == tmp_path / "db.sqlite3"
    assert db["OPTIONS"]["timeout"] == 20
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    # Tests share a file database between threads and processes, never an in-memory one.
    assert Path(db["TEST"]["NAME"]) == tmp_path / "test-db.sqlite3"


def test_sqlite_connection_really_uses_wal_busy_timeout_and_takes_the_write_lock_at_begin(
    run_python: Runner, tmp_path: Path
) -> None:
    """Open a real connection: the pragmas are in force, and `atomic()` holds the write lock before any write."""
    code = """
import json, sqlite3
import django
django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    journal = cursor.fetchone()[0]
    cursor.execute("PRAGMA busy_timeout")
    busy = cursor.fetchone()[0]
with transaction.atomic():
    connection.ensure_connection()
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        locked = False
    except sqlite3.OperationalError as exc:
        locked = "locked" in str(exc)
    finally:
        other.close()
print(json.dumps({"journal": journal, "busy": busy, "locked_at_begin": locked}))
"""
    completed = run_python(code, {"DJANGO_DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {
        "journal": "wal",
        "busy": 20000,
        "locked_at_begin": True,
    }


def test_postgres_database_url_is_parsed_without_sqlite_options(dump_settings: Dump) -> None:
    values = dump_settings(
        {"DJANGO_DEBUG": "1", "DATABASE_URL": "postgres://fetch:s%40cret@db.internal:5433/batchfetch"}
    )
    db = values["db"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], int(db["PORT"])) == (
        "batchfetch",
        "fetch",
        "s@cret",
        "db.internal",
        5433,
    )
    assert "transaction_mode" not in (db["OPTIONS"] or {})


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("on", True), ("yes", True), ("0", False)])
def test_debug_flag(dump_settings: Dump, raw: str, expected: bool) -> None:
    values = dump_settings({"DJANGO_DEBUG": raw, "DJANGO_SECRET_KEY": "k" * 50})
    assert values["DEBUG"] is expected


def test_production_settings_refuse_to_start_without_a_secret_key(run_python: Runner) -> None:
    completed = run_python("import django; django.setup()", {"DJANGO_DEBUG": "0"})
    assert completed.returncode != 0
    assert "ImproperlyConfigured" in completed.stderr
    assert "DJANGO_SECRET_KEY must be set" in completed.stderr


def test_production_settings_from_the_environment(dump_settings: Dump) -> None:
    values = dump_settings(
        {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "a-real-secret-" + "x" * 40,
            "DJANGO_ALLOWED_HOSTS": "fetch.example.com, .example.org",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://fetch.example.com",
            "REDIS_URL": "redis://redis.internal:6380/2",
        }
    )
    assert values["DEBUG"] is False
    assert values["SECRET_KEY"] == "a-real-secret-" + "x" * 40
    assert values["ALLOWED_HOSTS"] == ["fetch.example.com", ".example.org"]
    assert values["CSRF_TRUSTED_ORIGINS"] == ["https://fetch.example.com"]
    assert values["CHANNEL_HOSTS"] == [{"address": "redis://redis.internal:6380/2", "socket_timeout": 15}]
    # The SSRF guard stays on unless a developer lifts it.
    assert values["FETCH_ALLOW_PRIVATE_ADDRESSES"] is False


def test_fetch_allow_private_addresses_is_read_from_the_environment(
    dump_settings: Dump,
) -> None:
    assert dump_settings({"DJANGO_DEBUG": "1", "FETCH_ALLOW_PRIVATE_ADDRESSES": "1"})["FETCH_ALLOW_PRIVATE_ADDRESSES"]


def test_runworker_is_ours_not_channels() -> None:
    """`jobs` is listed before `channels`, and both ship a `runworker`: Django must pick ours."""
    assert get_commands()["runworker"] == "jobs"


def test_runworker_help_shows_our_options(run_python: Runner) -> None:
    completed = run_python(
        "from django.core.management import execute_from_command_line;"
        " execute_from_command_line(['manage.py', 'runworker', '--help'])",
        {"DJANGO_DEBUG": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    for option in ("--concurrency", "--max-jobs", "--batch"):
        assert option in completed.stdout


WORKER_TIMING = (
    "import django; django.setup(); from jobs import conf;"
    " print(conf.get('WORKER_HEARTBEAT_SECONDS'), conf.get('WORKER_LEASE_SECONDS'), conf.get('WORKER_MAX_CLAIMS'))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "10.0 30.0 5"),
        ({"WORKER_HEARTBEAT_SECONDS": "0.5", "WORKER_LEASE_SECONDS": "2", "WORKER_MAX_CLAIMS": "50"}, "0.5 2.0 50"),
    ],
    ids=["defaults", "from-env"],
)
def test_worker_heartbeat_lease_and_max_claims_are_read_from_the_environment(
    run_python: Runner, env: dict[str, str], expected: str
) -> None:
    completed = run_python(WORKER_TIMING, {"DJANGO_DEBUG": "1", **env})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == expected.split()
