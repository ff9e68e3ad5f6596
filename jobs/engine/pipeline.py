"""The batch pipeline: `fetch_all` fetches a job's URLs through a bounded queue, one result per URL.

One producer feeds an `asyncio.Queue` from the job's items; consumers take
them, consult robots.txt if asked, and call `fetch_one` under the shared
`Slots`. A failure of the callback or the items stops the run and is raised;
a stop event lets the requests in flight finish and starts no new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import replace

import httpx

from jobs.engine.fetch import fetch_one
from jobs.engine.hostslots import HostLimits
from jobs.engine.netguard import Guard
from jobs.engine.requestspec import RequestSpec
from jobs.engine.robots import RobotsCache
from jobs.engine.slots import Limit, Slots, Stopped
from jobs.engine.values import BodySink, FetchOptions, FetchResult

Item = tuple[int, str] | tuple[int, str, RequestSpec | None]
"""(position, url), or (position, url, its own request)."""


async def fetch_all(
    client: httpx.AsyncClient,
    items: Iterable[Item] | AsyncIterable[Item],
    *,
    concurrency: int,
    on_result: Callable[[FetchResult], None],
    timeout: float | None = None,
    options: FetchOptions | None = None,
    global_limit: asyncio.Semaphore | None = None,
    hosts: HostLimits | None = None,
    guard: Guard | None = None,
    sink: Callable[[int], BodySink] | None = None,
    stop: asyncio.Event | None = None,
    job_limit: Limit | None = None,
) -> None:
    """Fetch every (position, url) of `items`, at most `concurrency` at a time; call `on_result` for each.

    An item may be (position, url, request): its own `RequestSpec` (None: `options.request`).

    One producer feeds a bounded queue from `items` (sync, or async so callers
    can stream pages from the database; fetch_all does not close it), and
    2 × `concurrency` consumers fetch from it: at most `concurrency` requests
    are in flight (a job semaphore), while up to as many more URLs wait for a
    retry holding no slot. `global_limit` (shared by all jobs of a worker, FIFO,
    so a later job's requests queue in turn with an earlier job's) and `hosts`
    (per-host caps, also worker-wide) are held only while a request is in
    flight. `sink(position)` makes a `BodySink` per URL to keep bodies. With
    `options.respect_robots`, URLs that robots.txt disallows become `robots`
    results without a request.
    `on_result` runs on the loop, so it must be cheap; if it or `items` raises,
    the run stops and that error is raised. Cancelling fetch_all cancels every
    fetch, then re-raises. Once `stop` is set no new request starts (not even a
    queued item, a retry or a redirect hop; such URLs get no result) and
    fetch_all returns when the requests in flight have finished. `job_limit`
    replaces the job semaphore (e.g. a `ShareLimit`, whose size changes while
    the job runs; `concurrency` is then its largest size).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    options = options or FetchOptions()
    if timeout is not None:
        options = replace(options, timeout=timeout)
    slots = Slots(job=job_limit or asyncio.Semaphore(concurrency), worker=global_limit, hosts=hosts, stop=stop)
    consumers = concurrency * 2 if options.retries else concurrency
    robots = RobotsCache(client, options=options, slots=slots, guard=guard) if options.respect_robots else None
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=concurrency)

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    async def produce() -> None:
        if isinstance(items, AsyncIterable):
            async for item in items:
                if stopped():
                    break
                await queue.put(item)
        else:
            for item in items:
                if stopped():
                    break
                await queue.put(item)
        for _ in range(consumers):
            await queue.put(None)  # one stop mark per consumer

    async def consume() -> None:
        while (item := await queue.get()) is not None:
            if stopped():
                continue  # drain without fetching, so the producer is never stuck on a full queue
            if len(item) == 2:
                position, url = item
                request = None
            else:
                position, url, request = item
            try:
                refusal = await robots.refusal(position, url) if robots is not None else None
                if refusal is not None:
                    result = refusal
                else:
                    make_sink = (lambda: sink(position)) if sink is not None else None  # noqa: B023 (used at once)
                    result = await fetch_one(
                        client, position, url, options=options, guard=guard, slots=slots, sink=make_sink,
                        request=request,
                    )
            except Stopped:
                continue  # the stop came while this URL waited for a slot: it stays without a result
            on_result(result)

    try:
        # The task group cancels the other tasks when one fails or when fetch_all itself is cancelled.
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(consumers):
                group.create_task(consume())
    except ExceptionGroup as errors:
        # Callers want the error itself (e.g. for Job.error), not the group around it.
        failure: BaseException = errors.exceptions[0] if len(errors.exceptions) == 1 else errors
    else:
        return
    finally:
        if robots is not None:
            robots.close()
    raise failure  # outside the except block, so the group is not chained to it
