"""The README's command line from a fresh environment, as a new user runs it.

No inherited settings: a clean environment (PATH, HOME, a Redis URL when the
suite has one), a temporary var/ (BATCHFETCH_VAR_DIR) holding no database and
no `.env`. First `manage.py` without any setting must say in one line what is
missing (no traceback). Then the steps of a fresh clone: `make migrate` (what
`make run` starts with; it writes var/.env), the demo admin `make run` creates,
a worker, and the README's `fetch … --wait` line itself, read from README.md.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import BASE_DIR, start_process
from tests.target import TargetServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

README_FETCH = re.compile(r"^(\.venv/bin/python manage\.py fetch urls\.txt --wait)\b", re.MULTILINE)


def clean_env(var_dir: Path, home: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "BATCHFETCH_VAR_DIR": str(var_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
    }
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]  # `make run` starts one; the suite has its own
    return env


def run(argv: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, check=False, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=180, **kwargs,
    )


def readme_fetch_line() -> str:
    match = README_FETCH.search((BASE_DIR / "README.md").read_text())
    assert match, "README.md no longer shows `.venv/bin/python manage.py fetch urls.txt --wait`"
    return match.group(1)


def test_a_missing_setting_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "var", tmp_path)
    for command in (["check"], ["fetch", "-"], ["migrate", "--noinput"]):
        completed = run([sys.executable, "manage.py", *command], env)
        assert completed.returncode == 1, completed
        assert "Traceback" not in completed.stderr
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1, completed.stderr
        assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in lines[0]
        assert "make migrate" in lines[0]  # ... and how a fresh clone gets going
    assert not (tmp_path / "var" / ".env").exists()


def test_the_readme_fetch_line_works_from_a_fresh_clone(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    env = clean_env(var_dir, tmp_path)
    migrated = run(["make", "--no-print-directory", "migrate"], env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert (var_dir / ".env").read_text().count("=1") == 2  # DJANGO_DEBUG, FETCH_ALLOW_PRIVATE_ADDRESSES
    assert (var_dir / "db.sqlite3").exists()
    demo = run([sys.executable, "manage.py", "ensure_demo_user"], env)  # what `make run` does next
    assert demo.returncode == 0, demo.stderr

    worker = start_process(
        "runworker", [sys.executable, "manage.py", "runworker"], env=env, cwd=BASE_DIR,
        log_path=tmp_path / "worker.log",
    )
    try:
        with TargetServer(delay_ms=0) as target:
            urls = tmp_path / "urls.txt"
            urls.write_text(f"{target.url('/ok/1')}\n{target.url('/ok/2')}\n")
            line = readme_fetch_line().replace("urls.txt", shlex.quote(str(urls)))
            completed = run(["bash", "-c", line], env)
        assert worker.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output + worker.log_tail()
    assert "Traceback" not in output
    assert re.search(r"queued: 2 URLs, concurrency 10\. Page: http://127\.0\.0\.1:8000/jobs/[0-9a-f-]{36}/", output)
    assert re.search(r"completed in [\d.]+ s: 2 succeeded, 0 failed, 0 cancelled of 2\.", output), output
