"""One URL, start to outcome: `fetch_one` makes attempts, retries them, and returns one `FetchResult`.

A failed attempt is retried (connect errors, timeouts, the statuses in
`options.retry_statuses`) after an exponential backoff with full jitter, or
the server's Retry-After; while it waits it holds no slot. Errors never escape
`fetch_one`: only cancellation (and `Stopped`) propagates.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import replace

import httpx

from jobs.engine.attempt import _attempt
from jobs.engine.errors import _describe, _Failure
from jobs.engine.netguard import Guard
from jobs.engine.response import _Attempt
from jobs.engine.slots import Slots, Stopped
from jobs.engine.values import BodySink, FetchOptions, FetchResult

MAX_REASONS = 10
"""Failed attempts described in `error` at most (the count is always right)."""


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
) -> FetchResult:
    """GET `url` with redirects, retries and limits per `options` (`timeout` overrides `options.timeout`).

    Never raises, except CancelledError: every failure becomes a "failed" result.
    """
    options = options or FetchOptions()
    if timeout is not None:
        options = replace(options, timeout=timeout)
    slots = slots or Slots(job=asyncio.Semaphore(1))
    started = time.monotonic()
    reasons: list[str] = []
    attempt = _Attempt(url)
    failure: _Failure | None = None
    for number in range(1, options.retries + 2):
        attempt = _Attempt(url)
        try:
            await _attempt(client, attempt, options, guard, slots, sink)
        except _Failure as exc:
            failure = exc
        except Stopped:
            raise
        except Exception as exc:  # not CancelledError: that is a BaseException and propagates
            failure = _Failure(*_describe(exc, options.timeout))
        else:
            failure = None
            break
        delay = _retry_delay(failure, number, options)
        if delay is None:
            break
        reasons.append(f"attempt {number}: {failure.error_class}: {failure.message}")
        await asyncio.sleep(delay)  # outside every slot: a waiting retry holds none
    return _result(position, url, attempt, failure, reasons, attempts=number, started=started)


def _result(
    position: int, url: str, attempt: _Attempt, failure: _Failure | None, reasons: list[str], *, attempts: int,
    started: float,
) -> FetchResult:
    error = f"{failure.error_class}: {failure.message}" if failure else ""
    if reasons:
        shown = reasons[:MAX_REASONS] + ([f"{len(reasons) - MAX_REASONS} more"] if len(reasons) > MAX_REASONS else [])
        error = "; ".join(filter(None, [error, *[f"({r})" for r in shown]]))
    blocked_early = failure is not None and failure.error_class in ("blocked", "robots") and attempt.status_code is None
    return FetchResult(
        position=position,
        url=url,
        outcome="failed" if failure else "succeeded",
        status_code=attempt.status_code,
        bytes=attempt.bytes,
        elapsed_ms=round((time.monotonic() - started) * 1000),
        attempts=0 if blocked_early and attempts == 1 else attempts,
        error=error,
        error_class=failure.error_class if failure else "",
        final_url=attempt.url,
        content_type=attempt.content_type,
        sha256=attempt.sha256,
        redirects=attempt.redirects,
        body_path=attempt.body_path,
    )


def _retry_delay(failure: _Failure, number: int, options: FetchOptions) -> float | None:
    """Seconds to wait before attempt `number + 1`, or None if the failure is final."""
    if number > options.retries:
        return None
    if not failure.retryable:
        return None
    backoff = random.uniform(0, min(options.backoff_cap, options.backoff_base * 2 ** (number - 1)))
    hint = failure.retry_after
    if hint > options.retry_after_cap:
        failure.message += f" (Retry-After {hint:g} s is longer than the cap of {options.retry_after_cap:g} s)"
        return None
    return max(backoff, hint)
