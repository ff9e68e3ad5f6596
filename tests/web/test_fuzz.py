"""Bad input everywhere: hypothesis throws generated garbage at the JSON API and the WebSocket protocol.

Whatever comes in, the answer is a documented status with a JSON body that
validates against /api/schema/ (never a 500, never a traceback), and the
database holds only whole jobs: one row per URL, or no job at all.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db.models import Count, F
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs.models import Job, Result
from project.asgi import application
from tests.conftest import MEMORY_LAYER
from tests.web.schema_check import assert_documented

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
url_like = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", ""]),
    st.sampled_from(["a.example", "127.0.0.1", "[::1]", "[zz]", "", "a..b", "é.example", "a.example:0", "x:99999"])
    | st.text(max_size=20),
    st.text(max_size=30),
)
submissions = st.fixed_dictionaries(
    {},
    optional={
        "urls": st.lists(url_like | st.text(max_size=40) | json_values, max_size=6) | json_values,
        "name": st.text(max_size=250) | json_values,
        "concurrency": st.integers(-5, 2000) | st.text(max_size=8) | json_values,
        "timeout": st.floats() | st.text(max_size=8) | json_values,
        "per_host": st.integers(-5, 2000) | st.text(max_size=8) | json_values,
        "host_delay": st.floats() | st.text(max_size=8) | json_values,
        "retries": st.integers(-5, 50) | st.text(max_size=8) | json_values,
        "max_redirects": st.integers(-5, 50) | st.text(max_size=8) | json_values,
        "max_bytes": st.integers(-5, 2**40) | st.text(max_size=8) | json_values,
        "respect_robots": st.sampled_from(["on", "off", "yes", "", "maybe"]) | json_values,
        "save_bodies": st.sampled_from(["on", "off", "yes", "", "maybe"]) | json_values,
        "type": json_values,
    },
) | json_values


@pytest.fixture(autouse=True)
def generous_limits(settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    # The fuzzer submits hundreds of jobs; the limits themselves are tested in test_limits.py.
    settings.JOBS_MAX_QUEUED_PER_USER = 100_000
    settings.JOBS_SUBMISSIONS_PER_MINUTE = 100_000


@pytest.fixture
def job(ann: Any) -> Job:
    job = Job.objects.create(owner=ann, concurrency=1, timeout=1, total=2)
    Result.objects.bulk_create([Result(job=job, position=0, url="http://a.example/", outcome="failed", error="x"),
                                Result(job=job, position=1, url="http://b.example/")])
    return job


def assert_only_whole_jobs() -> None:
    partial = Job.objects.annotate(rows=Count("results")).exclude(rows=F("total"))
    assert not partial.exists(), list(partial.values("id", "total", "rows"))


def assert_clean(response: Any) -> None:
    assert response.status_code < 500
    assert b"Traceback" not in response.content and b"File \"" not in response.content


@FUZZ
@given(body=submissions)
def test_fuzzed_submissions(ann_client: Client, body: Any) -> None:
    before = Job.objects.count()
    response = ann_client.post("/api/jobs/", json.dumps(body), content_type="application/json")
    assert_clean(response)
    assert response.status_code in (201, 400), response.content
    assert_documented("/api/jobs/", "POST", response)
    assert Job.objects.count() == before + (response.status_code == 201)
    assert_only_whole_jobs()


@FUZZ
@given(body=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain", "", "x/y"]))
def test_fuzzed_raw_bodies(ann_client: Client, body: bytes, content_type: str) -> None:
    before = Job.objects.count()
    response = ann_client.generic("POST", "/api/jobs/", body, content_type=content_type)
    assert_clean(response)
    assert response.status_code == 400, response.content
    assert_documented("/api/jobs/", "POST", response)
    assert Job.objects.count() == before


query_values = (
    st.text(max_size=20) | st.integers(-10**12, 10**12).map(str)
    | st.sampled_from(["", "-1", "0", "1", "1e3", "0x10", "newest", "position", "404,500", "200,,", "failed,pending"])
)  # fmt: skip
query_names = st.sampled_from(["limit", "before", "after", "outcome", "order", "status_code", "q", "x"])


@FUZZ
@given(params=st.dictionaries(query_names, query_values, max_size=5))
def test_fuzzed_query_parameters(ann_client: Client, job: Job, params: dict[str, str]) -> None:
    query = urlencode(params)
    for path, template in (("/api/jobs/", "/api/jobs/"), (f"/api/jobs/{job.id}/results/", "/api/jobs/{job_id}/results/")):
        response = ann_client.get(f"{path}?{query}")
        assert_clean(response)
        assert response.status_code in (200, 400), (path, params, response.content)
        assert_documented(template, "GET", response)


JOB_SUFFIXES = ["", "results/", "results.csv", "cancel/", "pause/", "resume/", "rerun-failed/", "stats/",
                "results/0/body", "bodies.zip"]  # fmt: skip
POSTED = {"cancel/", "pause/", "resume/", "rerun-failed/"}


def test_a_nul_in_the_url_search_is_a_400_naming_q(ann_client: Client, job: Job) -> None:
    # PostgreSQL refuses NUL in text: passed through, it was a 500 there.
    response = ann_client.get(f"/api/jobs/{job.id}/results/?q=a%00b")
    assert response.status_code == 400, response.status_code
    assert "q" in response.json()["errors"]
    assert_documented("/api/jobs/{job_id}/results/", "GET", response)


@FUZZ
@given(job_id=st.text(min_size=1, max_size=60), suffix=st.sampled_from(JOB_SUFFIXES))
def test_fuzzed_job_ids(ann_client: Client, job_id: str, suffix: str) -> None:
    response = ann_client.generic("POST" if suffix in POSTED else "GET", f"/api/jobs/{quote(job_id, safe='')}/{suffix}")
    assert_clean(response)
    # An encoded "/" can land on a neighbouring route (then a 405 or another JSON 404); never a job.
    assert response.status_code in (404, 405), (job_id, response.status_code)
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}


@FUZZ
@given(position=st.integers(0, 10**30) | st.text(max_size=12))
def test_fuzzed_body_positions(ann_client: Client, job: Job, position: int | str) -> None:
    """No body was kept for the job: any position is a JSON 404 (a huge one too), never a 500."""
    response = ann_client.get(f"/api/jobs/{job.id}/results/{quote(str(position), safe='')}/body")
    assert_clean(response)
    assert response.status_code == 404, (position, response.content)
    assert response["Content-Type"] == "application/json"
    if str(position).isdigit() and str(position).isascii():
        assert_documented("/api/jobs/{job_id}/results/{position}/body", "GET", response)


@FUZZ
@given(header=st.text(max_size=80).filter(lambda value: "\n" not in value and "\r" not in value))
def test_fuzzed_authorization_headers(ann: Any, header: str) -> None:
    client = Client()
    client.force_login(ann)  # a session never rescues a bad Authorization header
    response = client.get("/api/jobs/", headers={"Authorization": header})
    assert_clean(response)
    assert response.status_code == 401
    assert_documented("/api/jobs/", "GET", response)


# --- the WebSocket protocol ------------------------------------------------------------------------


def session_headers(user: Any) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000"), (b"cookie", cookie)]


async def exchange(path: str, headers: list[tuple[bytes, bytes]], frame: dict[str, Any]) -> list[dict[str, Any]]:
    """Connect, read the snapshot, send one frame, return its replies (at least one); the socket must stay open."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.receive_json_from(timeout=5)
    # send_input, not send_to: an empty frame is valid WebSocket input that send_to refuses.
    key, value = next(iter(frame.items()))
    await communicator.send_input({"type": "websocket.receive", key.removesuffix("_data"): value})
    replies = []
    while not replies or not await communicator.receive_nothing(timeout=0.05):
        output = await communicator.receive_output(timeout=10)
        assert output["type"] == "websocket.send", output  # a close or a crash would show here
        replies.append(json.loads(output["text"]))
    await communicator.disconnect()
    return replies


frames = (
    st.text(max_size=200).map(lambda text: {"text_data": text})
    | st.binary(max_size=50).map(lambda data: {"bytes_data": data})
    | submissions.map(lambda body: {"text_data": json.dumps(body)})
    | submissions.map(lambda body: {"text_data": json.dumps({**body, "type": "submit"} if isinstance(body, dict) else body)})
)


@FUZZ
@given(frame=frames)
def test_fuzzed_job_list_socket(ann: Any, frame: dict[str, Any]) -> None:
    before = Job.objects.count()
    replies = async_to_sync(exchange)("/ws/jobs/", session_headers(ann), frame)
    kinds = [reply["type"] for reply in replies]
    # One answer per frame: an error, or the new job (its list update may follow).
    assert kinds[:1] in (["error"], ["submitted"]), replies
    assert set(kinds[1:]) <= {"job"}, replies
    assert Job.objects.count() == before + (kinds[0] == "submitted")
    assert "Traceback" not in json.dumps(replies)
    assert_only_whole_jobs()


@FUZZ
@given(frame=frames.filter(lambda frame: '"cancel"' not in frame.get("text_data", "")))
def test_fuzzed_job_socket(ann: Any, job: Job, frame: dict[str, Any]) -> None:
    replies = async_to_sync(exchange)(f"/ws/jobs/{job.id}/", session_headers(ann), frame)
    assert [reply["type"] for reply in replies] == ["error"], replies
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
