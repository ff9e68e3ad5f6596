"""The command-line client behind `manage.py fetch`: read URLs, submit, follow with a progress bar.

Submission goes through `submission` like every other entry point, so a bad
line is reported as `urls.txt line 4: ...`. `follow()` polls the job row (one
single-row query every POLL_SECONDS; the database is the source of truth) and
draws a tqdm bar on stderr until the job is terminal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse
from tqdm import tqdm

from jobs import conf
from jobs.exceptions import SubmissionError
from jobs.models import Job
from jobs.submission import parsing, requests
from jobs.submission.parsing import UrlLines
from jobs.submission.requests import RequestLines

POLL_SECONDS = 0.5
MAX_LISTED_ERRORS = 20

# Exit codes of `fetch --wait`; bad input or usage exits 2 (see the command).
EXIT_OK = 0
EXIT_URLS_FAILED = 1
EXIT_JOB_NOT_COMPLETED = 3
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Unusable input; the message names what and where."""


def read_urls(source: str, *, stdin: IO[bytes]) -> UrlLines | RequestLines:
    """URLs from a file (CSV if it ends in .csv, else one per line) or, for `-`, from standard input;
    requests (one JSON object per line) from a .jsonl file."""
    if source == "-":
        data, filename = stdin.read(), "-"
    else:
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise InputError(f"{source}: cannot read ({exc.strerror or exc})") from exc
        filename = source
    try:
        if requests.is_jsonl(filename):
            return requests.parse_request_file(data)
        return parsing.parse_url_file(data, filename=filename)
    except SubmissionError as exc:
        raise InputError(f"{_label(source)}: {exc.errors.get('file', exc.errors)}") from exc


def _label(source: str) -> str:
    return "standard input" if source == "-" else source


def describe_errors(errors: dict[str, Any], source: str) -> str:
    """SubmissionError details as lines: `urls.txt line 4: scheme must be http or https, not 'ftp' (ftp://x)`."""
    lines = []
    for field, detail in errors.items():
        if field not in ("urls", "requests"):
            lines.append(f"--{field}: {detail}")
            continue
        for item in detail[:MAX_LISTED_ERRORS]:
            bad = f" {item['field']}" if "field" in item else ""  # a request line's bad field
            where = f"{_label(source)} line {item['line']}{bad}: " if "line" in item else f"{_label(source)}: "
            value = f" ({item['value']})" if item.get("value") else ""
            lines.append(f"{where}{item['error']}{value}")
        if len(detail) > MAX_LISTED_ERRORS:
            lines.append(f"... and {len(detail) - MAX_LISTED_ERRORS} more")
    return "\n".join(lines)


def request_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The job-level request fields from the command's options (only those given)."""
    fields: dict[str, Any] = {}
    if options.get("method"):
        fields["method"] = options["method"]
    if options.get("header"):
        try:
            fields["headers"] = requests.parse_headers_text("\n".join(options["header"]))
        except ValueError as exc:
            raise InputError(f"--header: {str(exc).partition(': ')[2]} (not {options['header']!r})") from exc
    if options.get("secret_header"):
        fields["secret_headers"] = options["secret_header"]
    if options.get("json") is not None:
        try:
            fields["json"] = json.loads(options["json"])
        except json.JSONDecodeError as exc:
            raise InputError(f"--json: not JSON ({exc.msg} at column {exc.colno})") from exc
    if options.get("body") is not None:
        fields["body"] = options["body"]
    if options.get("retry_unsafe"):
        fields["retry_unsafe"] = True
    return fields


def plural(count: int, noun: str) -> str:
    """"1 URL", "2 URLs", "1,000 URLs"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def page_url(job: Job) -> str:
    """The job's live page as a full URL (setting JOBS_SITE_URL, env BATCHFETCH_SITE_URL), to click in a terminal."""
    return str(conf.get("JOBS_SITE_URL")).rstrip("/") + reverse("job_detail", kwargs={"job_id": job.pk})


def resolve_owner(username: str | None) -> AbstractBaseUser:
    """The user named `username`; without one, the only superuser if there is exactly one."""
    users = get_user_model().objects
    if username:
        try:
            return users.get_by_natural_key(username)
        except users.model.DoesNotExist:
            raise InputError(f"--user: no user named {username!r}") from None
    superusers = list(users.filter(is_superuser=True)[:2])
    if len(superusers) != 1:
        raise InputError("--user: name the job's owner (there is not exactly one superuser to default to)")
    return superusers[0]


def follow(
    job: Job, *, stream: IO[str], interrupted: threading.Event, on_poll: Callable[[Job], None] | None = None
) -> Job:
    """Draw a progress bar until `job` is terminal or `interrupted` is set; return the job as it was last read.

    Ctrl-C sets `interrupted` (see the command) instead of raising KeyboardInterrupt wherever the
    main thread happens to be (inside a database call, or tqdm's drawing), so it is noticed here,
    between two polls, with the connection and the terminal in a clean state.
    """
    with tqdm(total=job.total, unit="URL", file=stream, dynamic_ncols=True, desc=str(job)[:30]) as bar:
        while True:
            job.refresh_from_db()
            bar.update(job.done - bar.n)
            bar.set_postfix_str(f"{job.status}, {job.succeeded} ok, {job.failed} failed, {job.cancelled} cancelled")
            if on_poll is not None:
                on_poll(job)
            if job.is_terminal or interrupted.wait(POLL_SECONDS):
                return job


def summary(job: Job) -> str:
    seconds = job.duration.total_seconds() if job.duration else 0.0
    return (
        f"Job {job.pk} {job.status} in {seconds:.1f} s: {job.succeeded} succeeded, {job.failed} failed,"
        f" {job.cancelled} cancelled of {job.total}."
    )


def exit_code(job: Job) -> int:
    """0 when every URL succeeded, 1 when some failed, 3 when the job was cancelled or failed."""
    if job.status != Job.Status.COMPLETED:
        return EXIT_JOB_NOT_COMPLETED
    return EXIT_URLS_FAILED if job.failed else EXIT_OK


def ask_to_cancel(job: Job, *, stdin: IO[str], stdout: IO[str]) -> bool | None:
    """Ask whether to cancel after Ctrl-C: True/False, or None when stdin is not a terminal (no one to ask)."""
    if not stdin.isatty():
        return None
    stdout.write(f"\nCancel job {job.pk}? [y/N] ")
    stdout.flush()
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:
        answer = "n"
    return answer.strip().lower() in ("y", "yes")

