"""ShareLimit: a semaphore whose size changes while requests hold it (pure asyncio, no Django)."""

from __future__ import annotations

import asyncio

import pytest

from jobs.worker.sharelimit import ShareLimit


async def hold(limit: ShareLimit, release: asyncio.Event, log: list[str], name: str) -> None:
    async with limit:
        log.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_it_admits_size_holders_in_order_and_the_next_when_one_leaves() -> None:
    limit, release, log = ShareLimit(2), asyncio.Event(), []
    tasks = [asyncio.create_task(hold(limit, release, log, name)) for name in "abcd"]
    await settle()
    assert (log, limit.in_flight) == (["a", "b"], 2)
    release.set()
    await asyncio.gather(*tasks)
    assert (log, limit.in_flight) == (["a", "b", "c", "d"], 0)


async def test_growing_admits_waiters_and_shrinking_never_interrupts_holders() -> None:
    limit, release, log = ShareLimit(1), asyncio.Event(), []
    tasks = [asyncio.create_task(hold(limit, release, log, name)) for name in "abcd"]
    await settle()
    assert log == ["a"]
    limit.resize(3)
    await settle()
    assert (log, limit.in_flight) == (["a", "b", "c"], 3)
    limit.resize(1)  # three stay in flight; nobody new starts until fewer than one remain
    await settle()
    assert (log, limit.in_flight) == (["a", "b", "c"], 3)
    release.set()
    await asyncio.gather(*tasks)
    assert log == ["a", "b", "c", "d"] and limit.in_flight == 0


async def test_size_zero_holds_everyone_until_it_grows() -> None:
    limit, release, log = ShareLimit(0), asyncio.Event(), []
    release.set()
    task = asyncio.create_task(hold(limit, release, log, "a"))
    await settle()
    assert log == [] and not task.done()
    limit.resize(1)
    await task
    assert log == ["a"]


@pytest.mark.parametrize("granted_first", [False, True], ids=["waiting", "granted"])
async def test_a_cancelled_waiter_raises_cancelled_and_leaves_the_count_right(granted_first: bool) -> None:
    """Cancelling a waiter must raise CancelledError (never another error a caller could swallow as a failure),
    whether it was still waiting or had just been granted a slot, and must not leak or lose a slot."""
    limit, release, log = ShareLimit(1), asyncio.Event(), []
    first = asyncio.create_task(hold(limit, release, log, "first"))
    await settle()
    waiter = asyncio.create_task(hold(limit, release, log, "waiter"))
    await settle()
    if granted_first:
        limit.resize(2)  # the waiter is granted a slot, but cancelled before it runs
    waiter.cancel()
    if not granted_first:
        limit.resize(2)  # _wake meets (and drops) the cancelled waiter
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.in_flight == 1 and log == ["first"]
    release.set()
    await first
    assert limit.in_flight == 0
    async with limit:  # both slots are still there
        async with limit:
            assert limit.in_flight == 2
