"""The worker's event loop: asyncio's debug mode on request, and startup hooks.

`run()` runs the worker's coroutine on a new loop, as `asyncio.run` does. In
debug mode (`runworker -v 3`, or WORKER_ASYNCIO_DEBUG, which settings read
from BATCHFETCH_ASYNCIO_DEBUG=1) the loop runs with `debug=True`: every
callback that holds the loop longer than WORKER_SLOW_CALLBACK_SECONDS is
logged ("Executing <Handle ...> took 0.300 seconds"), coroutines that were
never awaited say where they were created, and unclosed transports are
reported. Those go to the worker's log: the `asyncio` logger's warnings and
errors propagate to its handlers, and the interpreter's warnings
(RuntimeWarning, ResourceWarning) are captured into logging (`py.warnings`).
Debug mode costs CPU on every callback: for finding a stall, not for
production.

WORKER_STARTUP_HOOKS names callables (dotted paths) that the worker calls on
its loop before it claims a job, each with the `Worker` (instrumentation: a
monitor, tracing, a test's probe); an awaitable they return is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from django.utils.module_loading import import_string

from jobs import conf

T = TypeVar("T")

logger = logging.getLogger(__name__)


def debug_requested(verbosity: int) -> bool:
    """Debug mode: at `-v 3`, or when the WORKER_ASYNCIO_DEBUG setting is on."""
    return verbosity >= 3 or bool(conf.get("WORKER_ASYNCIO_DEBUG"))


def run(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run `main` on a new event loop (closed afterwards), in asyncio's debug mode if `debug`."""
    with asyncio.Runner(debug=debug) as runner:
        if debug:
            runner.get_loop().slow_callback_duration = float(conf.get("WORKER_SLOW_CALLBACK_SECONDS"))
            with _debug_logging():
                logger.info(
                    "asyncio debug mode: callbacks over %g s are logged", runner.get_loop().slow_callback_duration
                )
                return runner.run(main)
        return runner.run(main)


@contextlib.contextmanager
def _debug_logging() -> Iterator[None]:
    """While the loop runs in debug mode: asyncio's warnings and the interpreter's warnings go to the log.

    The state found is restored afterwards (tests run the command in-process).
    """
    asyncio_logger = logging.getLogger("asyncio")
    level = asyncio_logger.level
    # Its DEBUG/INFO records in debug mode (every connection, slow DNS lookups) would drown the log.
    asyncio_logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("default", ResourceWarning)  # ignored by default: unclosed sockets, transports
        warnings.simplefilter("default", RuntimeWarning)  # "coroutine ... was never awaited"
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            asyncio_logger.setLevel(level)


def startup_hooks() -> list[Callable[..., Any]]:
    """The callables WORKER_STARTUP_HOOKS names (ImportError if one cannot be imported: checks.py reports it)."""
    return [import_string(path) for path in conf.get("WORKER_STARTUP_HOOKS")]


async def call_startup_hooks(worker: Any) -> None:
    """Call each startup hook with `worker` on the running loop; await what it returns if awaitable."""
    for hook in startup_hooks():
        result = hook(worker)
        if inspect.isawaitable(result):
            await result
