"""`manage.py fetch requests.jsonl`: a job of requests from the shell, its defaults from the options."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.models import Job, RequestLine


def write_jsonl(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_fetch_submits_a_jsonl_file_with_the_request_options(admin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, {"url": "https://a.example/1", "json": {"n": 1}}, {"url": "https://a.example/2"})
    call_command("fetch", str(path), "--method", "post", "--header", "Authorization: Bearer cli-s3cr3t",
                 "--header", "X-Mine: m", "--secret-header", "X-Mine", "--retry-unsafe", stdout=io.StringIO())  # fmt: skip
    job = Job.objects.get()
    assert (job.method, job.total, job.retry_unsafe, job.line_requests) == ("POST", 2, True, True)
    assert job.request_headers == [["Authorization", None], ["X-Mine", None]]
    assert "cli-s3cr3t" not in job.sealed_headers
    assert [(line.position, line.body) for line in RequestLine.objects.filter(job=job)] == [(0, '{"n":1}')]


def test_bad_lines_name_the_file_line_and_field(admin: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, {"url": "https://a.example/"}, {"url": "https://a.example/", "method": "FETCH"})
    with pytest.raises(CommandError, match=r"calls\.jsonl line 2 method: must be one of GET") as error:
        call_command("fetch", str(path), stdout=io.StringIO())
    assert error.value.returncode == 2
    with pytest.raises(CommandError, match="--json: not JSON"):
        call_command("fetch", str(path), "--json", "{nope", stdout=io.StringIO())
    assert not Job.objects.exists()
