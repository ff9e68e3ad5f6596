"""One URL, start to outcome: `fetch_one` makes attempts, retries them, and returns one `FetchResult`.

A failed attempt is retried (connect errors, timeouts, the statuses in
`options.retry_statuses`) after an exponential backoff with full jitter, or
the server's Retry-After; while it waits it holds no slot. Errors never escape
`fetch_one`: only cancellation (and `Stopped`) propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import replace

import httpx

from jobs.engine.attempt import _attempt
from jobs.engine.errors import DEADLINE, _describe, _Failure, format_error
from jobs.engine.netguard import Guard
from jobs.engine.requestspec import RequestSpec
from jobs.engine.response import _Attempt
from jobs.engine.slots import Slots, Stopped
from jobs.engine.values import BodySink, FetchOptions, FetchResult


async def fetch_one(
    client: httpx.AsyncClient,
    position: int,
    url: str,
    *,
    timeout: float | None = None,
    options: FetchOptions | None = None,
    guard: Guard | None = None,
    slots: Slots | None = None,
    sink: Callable[[], BodySink] | None = None,
    request: RequestSpec | None = None,
) -> FetchResult:
    """GET `url` with redirects, retries and limits per `options` (`timeout` overrides `options.timeout`).

    `request` (else `options.request`) sends another method, headers or a body instead of a plain GET.

    Never raises, except CancelledError: every failure becomes a "failed" result.
    """
    options = options or FetchOptions()
    if timeout is not None:
        options = replace(options, timeout=timeout)
    slots = slots or Slots(job=asyncio.Semaphore(1))
    reasons: list[tuple[str, str]] = []
    attempt = _Attempt(url)
    failure: _Failure | None = None
    number = 0
    spec = request if request is not None else options.request
    # The URL's deadline over all attempts and waits: armed once its first attempt holds its slots (_attempt).
    clock = asyncio.timeout(None) if options.url_deadline is not None else None
    try:
        async with clock or contextlib.nullcontext():
            for number in range(1, options.retries + 2):
                attempt = _Attempt(url, started=attempt.started)
                try:
                    await _attempt(client, attempt, options, guard, slots, sink, clock, spec)
                except _Failure as exc:
                    failure = exc
                except Stopped:
                    raise
                except Exception as exc:  # not CancelledError: that is a BaseException and propagates
                    failure = _Failure(*_describe(exc, options.timeout))
                else:
                    failure = None
                    break
                delay = _retry_delay(failure, number, options, spec)
                if delay is None:
                    break
                reasons.append((failure.error_class, failure.message))
                await asyncio.sleep(delay)  # outside every slot: a waiting retry holds none
    except TimeoutError:
        if clock is None or not clock.expired():
            raise
        # Mid-attempt or waiting for the next one; the earlier attempts' reasons are in `reasons` already.
        failure = _Failure(DEADLINE, f"not finished within the URL deadline of {options.url_deadline:g} s")
    return _result(position, url, attempt, failure, reasons, attempts=number)


def _result(
    position: int, url: str, attempt: _Attempt, failure: _Failure | None, reasons: list[tuple[str, str]], *,
    attempts: int,
) -> FetchResult:
    error = format_error((failure.error_class, failure.message) if failure else None, reasons)
    blocked_early = failure is not None and failure.error_class in ("blocked", "robots") and attempt.status_code is None
    return FetchResult(
        position=position,
        url=url,
        outcome="failed" if failure else "succeeded",
        status_code=attempt.status_code,
        bytes=attempt.bytes,
        elapsed_ms=_elapsed_ms(attempt),
        attempts=0 if blocked_early and attempts == 1 else attempts,
        error=error,
        error_class=failure.error_class if failure else "",
        final_url=attempt.url,
        content_type=attempt.content_type,
        headers=attempt.headers,
        sha256=attempt.sha256,
        redirects=attempt.redirects,
        body_path=attempt.body_path,
    )


def _elapsed_ms(attempt: _Attempt) -> int:
    """From the URL's first request on (its wait for a slot excluded); 0 for a URL that never sent one."""
    if attempt.started is None:
        return 0
    return round((asyncio.get_running_loop().time() - attempt.started) * 1000)


def _retry_delay(failure: _Failure, number: int, options: FetchOptions, spec: RequestSpec | None) -> float | None:
    """Seconds to wait before attempt `number + 1`, or None if the failure is final.

    A request that is not idempotent (POST, PATCH) may have had its effect although it failed, so it is
    retried only after a connect error (it never left) unless the job allows it (`retry_unsafe`)."""
    if number > options.retries:
        return None
    if not failure.retryable:
        return None
    if spec is not None and not spec.idempotent and not options.retry_unsafe and failure.error_class != "connect":
        failure.message += f" (not retried: {spec.method} is not idempotent; the job's retry_unsafe allows it)"
        return None
    backoff = random.uniform(0, min(options.backoff_cap, options.backoff_base * 2 ** (number - 1)))
    hint = failure.retry_after
    if hint > options.retry_after_cap:
        failure.message += f" (Retry-After {hint:g} s is longer than the cap of {options.retry_after_cap:g} s)"
        return None
    return max(backoff, hint)
