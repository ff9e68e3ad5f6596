"""End to end on real parts: Redis, daphne and the `runworker` process, driven over HTTP and WebSocket.

The client is aiohttp (tests/liveclient.py): it logs in through the login
form like a browser (as conftest's committed `credentials`), submits over the
JSON API with the CSRF header, and follows the job on `/ws/jobs/<id>/` with
the session cookie and the site's Origin. The URLs point at a loopback target
server in this process, which counts requests in flight, so the concurrency
bound is checked where it matters: on the server side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.liveclient import Client
from tests.services import LiveStack
from tests.target import Stats, TargetServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

URLS = 300
CONCURRENCY = 5
# The spec allows ~10 progress messages per second per job; this is the ceiling the test enforces.
MAX_PROGRESS_PER_SECOND = 10
# Cancel must be honoured within 1 s (seen here: 0.05-0.2 s from the cancel POST to `cancelled`).
CANCEL_DEADLINE = 1.0


async def wait_for_stats(target: TargetServer, predicate: Callable[[Stats], bool], timeout: float) -> Stats:
    """Poll the target's counters without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not predicate(stats := target.stats()):
        assert time.monotonic() < deadline, f"target stats never matched: {stats}"
        await asyncio.sleep(0.01)
    return stats


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20) as server:
        yield server


async def test_job_runs_end_to_end_with_live_progress_and_bounded_concurrency(
    live_stack: LiveStack, target: TargetServer, credentials: tuple[str, str]
) -> None:
    urls = [target.url(f"/ok/{position}") for position in range(URLS)]
    async with Client.logged_in(live_stack, *credentials) as client:
        status, submitted = await client.post_json(
            "/api/jobs/", {"urls": urls, "name": "e2e", "concurrency": CONCURRENCY, "timeout": 10}
        )
        assert status == 201, submitted
        assert (submitted["total"], submitted["concurrency"]) == (URLS, CONCURRENCY)

        started = time.monotonic()
        async with client.job_socket(submitted["id"]) as socket:
            await socket.until_terminal(timeout=90)
        elapsed = time.monotonic() - started

        _, api_job = await client.get_json(f"/api/jobs/{submitted['id']}/")
        rows = await client.get_jsonl(f"/api/jobs/{submitted['id']}/results.jsonl")
    live_stack.assert_alive()

    # The socket: a snapshot, then progress, ending with the terminal state.
    kinds = [message["type"] for message in socket.messages]
    assert kinds[0] == "snapshot" and set(kinds[1:]) <= {"progress"}, kinds
    final = socket.job
    assert final["status"] == "completed", final
    assert (final["total"], final["succeeded"], final["failed"], final["cancelled"]) == (URLS, URLS, 0, 0)
    done = [message["job"]["done"] for message in socket.messages]
    assert done == sorted(done), f"progress went backwards: {done}"
    streamed = [row for message in socket.messages[1:] for row in message["results"]]
    positions = [row["position"] for row in streamed]
    assert len(positions) == len(set(positions)), "a result was streamed twice"
    assert all(row["outcome"] == "succeeded" and row["status_code"] == 200 for row in streamed)
    # Coalesced: bounded messages per second however fast the URLs finish.
    progress_messages = len(socket.messages) - 1
    assert progress_messages <= MAX_PROGRESS_PER_SECOND * elapsed + 3, (progress_messages, elapsed)

    # The API agrees with the last message, and the export has every URL in submission order.
    assert api_job == final
    assert [row["position"] for row in rows] == list(range(URLS))
    assert [row["url"] for row in rows] == urls
    assert {(row["outcome"], row["status_code"], row["bytes"], row["attempts"]) for row in rows} == {
        ("succeeded", 200, target.body_bytes, 1)
    }

    # The server side: every URL fetched exactly once, never more than `concurrency` at a time,
    # and the bound is reached (300 URLs of 20 ms keep all 5 slots busy).
    stats = target.stats()
    assert stats.requests == URLS
    assert stats.peak_in_flight == CONCURRENCY, stats


async def test_cancel_mid_run_stops_requests_within_a_second(
    live_stack: LiveStack, target: TargetServer, credentials: tuple[str, str]
) -> None:
    # 50 quick URLs, then slow ones: when we cancel, 5 slow requests are in flight.
    fast = 50
    urls = [target.url(f"/ok/{position}?delay=10") for position in range(fast)]
    urls += [target.url(f"/ok/{position}?delay=5000") for position in range(fast, URLS)]
    async with Client.logged_in(live_stack, *credentials) as client:
        status, submitted = await client.post_json("/api/jobs/", {"urls": urls, "concurrency": CONCURRENCY})
        assert status == 201, submitted
        job_id = submitted["id"]
        async with client.job_socket(job_id) as socket:
            await socket.receive(timeout=10)  # the snapshot
            await wait_for_stats(target, lambda s: s.requests >= fast + CONCURRENCY and s.in_flight == CONCURRENCY, 30)
            cancelled_at = time.monotonic()
            status, answer = await client.post_json(f"/api/jobs/{job_id}/cancel/")
            assert status == 202, answer
            assert answer["status"] in {"cancelling", "cancelled"}, answer
            before_cancel = len(socket.messages)
            await socket.until_terminal(timeout=10)
            seen_cancelled_after = time.monotonic() - cancelled_at
            at_cancelled = target.stats()

            # In-flight requests were really cancelled (their connections closed), not waited for.
            await wait_for_stats(target, lambda s: s.in_flight == 0, timeout=1.0)
            # Once the client has seen `cancelled`, no request reaches the target any more.
            await asyncio.sleep(0.5)
            assert target.stats().requests == at_cancelled.requests
        _, api_job = await client.get_json(f"/api/jobs/{job_id}/")
        rows = await client.get_jsonl(f"/api/jobs/{job_id}/results.jsonl")
    live_stack.assert_alive()

    final = socket.job
    assert final["status"] == "cancelled", final
    assert seen_cancelled_after < CANCEL_DEADLINE, f"cancelled only after {seen_cancelled_after:.2f} s"
    statuses_after_cancel = {message["job"]["status"] for message in socket.messages[before_cancel:]}
    assert statuses_after_cancel <= {"running", "cancelling", "cancelled"}, statuses_after_cancel
    assert final["succeeded"] >= fast
    assert final["cancelled"] >= URLS - fast - CONCURRENCY
    assert final["succeeded"] + final["failed"] + final["cancelled"] == final["total"] == URLS
    assert api_job == final
    outcomes = [row["outcome"] for row in rows]
    assert len(rows) == URLS and "pending" not in outcomes
    assert outcomes.count("cancelled") == final["cancelled"]
    # No request started after the cancel: only the fast URLs and the 5 slow ones in flight then.
    assert at_cancelled.requests == fast + CONCURRENCY
