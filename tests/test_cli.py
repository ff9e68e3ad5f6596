"""`manage.py fetch`: submit from a file or stdin, follow with a progress bar, exit codes, Ctrl-C.

Submitting is checked in-process with call_command. Waiting runs the command as
a real process against the live stack (daphne + `runworker` + Redis on the test
database), with URLs on the loopback target server.
"""

from __future__ import annotations

import io
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.models import Job, Result
from tests.services import BASE_DIR, LiveStack
from tests.target import TargetServer


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=0) as server:
        yield server


def write_urls(tmp_path: Path, urls: list[str], name: str = "urls.txt") -> Path:
    path = tmp_path / name
    path.write_text("# a comment\n" + "\n".join(urls) + "\n")
    return path


def fetch_process(stack: LiveStack, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "fetch", *args], cwd=BASE_DIR, env=stack.env, text=True, **popen
    )


# --- submitting ---------------------------------------------------------------------------


def test_fetch_submits_a_file_with_its_options(admin: Any, tmp_path: Path) -> None:
    path = write_urls(tmp_path, ["https://a.example/", "https://b.example/x"])
    out = io.StringIO()
    call_command("fetch", str(path), "--concurrency", "3", "--timeout", "2.5", stdout=out)
    job = Job.objects.get()
    assert (job.owner, job.name, job.concurrency, job.timeout, job.total) == (admin, str(path), 3, 2.5, 2)
    assert list(Result.objects.filter(job=job).order_by("position").values_list("url", flat=True)) == [
        "https://a.example/", "https://b.example/x"
    ]  # fmt: skip
    assert f"Job {job.pk} queued: 2 URLs" in out.getvalue()


def test_fetch_reads_a_csv_and_names_the_owner(admin: Any, django_user_model: Any, tmp_path: Path) -> None:
    bob = django_user_model.objects.create_user(username="bob")
    path = tmp_path / "list.csv"
    path.write_text("id,url\n1,https://a.example/\n2,https://b.example/\n")
    call_command("fetch", str(path), "--user", "bob", "--name", "from csv", stdout=io.StringIO())
    job = Job.objects.get()
    assert (job.owner, job.name, job.total) == (bob, "from csv", 2)


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        ([], "https://a.example/\nftp://b.example/\n", "urls.txt line 3: scheme must be http or https, not 'ftp'"),
        (["--timeout", "0"], "https://a.example/\n", "--timeout: must be a number of seconds greater than 0"),
        ([], "", "urls.txt: must not be empty"),
        (["--user", "nobody"], "https://a.example/\n", "--user: no user named 'nobody'"),
    ],
)
def test_bad_input_names_what_and_where_and_creates_nothing(
    admin: Any, tmp_path: Path, args: list[str], content: str, message: str
) -> None:
    path = tmp_path / "urls.txt"
    path.write_text("# header\n" + content)
    with pytest.raises(CommandError, match=message) as error:
        call_command("fetch", str(path), *args, stdout=io.StringIO())
    assert error.value.returncode == 2
    assert not Job.objects.exists()


def test_a_missing_file_is_named(admin: Any, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"missing\.txt: cannot read \(No such file or directory\)"):
        call_command("fetch", str(tmp_path / "missing.txt"), stdout=io.StringIO())


# --- waiting, against a real worker ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_wait_from_stdin_shows_a_progress_bar_and_exits_by_outcome(
    live_stack: LiveStack, admin: Any, target: TargetServer
) -> None:
    ok = "\n".join(target.url(f"/ok/{i}?delay=20") for i in range(60))
    done = subprocess.run(
        [sys.executable, "manage.py", "fetch", "-", "--wait", "--concurrency", "5"],
        cwd=BASE_DIR, env=live_stack.env, input=ok, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100%" in done.stderr and "60/60" in done.stderr  # the tqdm bar
    assert "completed" in done.stdout and "60 succeeded, 0 failed" in done.stdout

    with_failures = ok + "\n" + target.url("/status/500")
    done = subprocess.run(
        [sys.executable, "manage.py", "fetch", "-", "--wait"],
        cwd=BASE_DIR, env=live_stack.env, input=with_failures, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "60 succeeded, 1 failed" in done.stdout


def _start_slow_job(stack: LiveStack, target: TargetServer, tmp_path: Path, **popen: Any) -> tuple[Any, str]:
    path = write_urls(tmp_path, [target.url(f"/ok/{i}?delay=1000") for i in range(200)])
    process = fetch_process(stack, str(path), "--wait", "--concurrency", "2", stdout=subprocess.PIPE, **popen)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("Job "), first
    deadline = time.monotonic() + 30
    while target.stats().requests < 2:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    return process, first.split()[1]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_ctrl_c_without_a_terminal_leaves_the_job_running(
    live_stack: LiveStack, admin: Any, target: TargetServer, tmp_path: Path
) -> None:
    process, job_id = _start_slow_job(live_stack, target, tmp_path, stdin=subprocess.DEVNULL)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "not asking (standard input is not a terminal)" in out and f"Job {job_id} keeps running" in out
    time.sleep(1.0)
    assert Job.objects.get(pk=job_id).status == Job.Status.RUNNING


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_ctrl_c_on_a_terminal_asks_and_cancels(
    live_stack: LiveStack, admin: Any, target: TargetServer, tmp_path: Path
) -> None:
    controller, terminal = pty.openpty()
    try:
        process, job_id = _start_slow_job(live_stack, target, tmp_path, stdin=terminal)
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the prompt is up; answer it
        os.write(controller, b"y\n")
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert f"Cancel job {job_id}? [y/N]" in out
    assert f"Cancel requested for job {job_id}." in out
    assert process.returncode == 3, out  # it followed the job to its end: cancelled
    assert f"Job {job_id} cancelled" in out
    assert Job.objects.get(pk=job_id).status == Job.Status.CANCELLED
