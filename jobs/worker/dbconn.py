"""The worker's database connections: kept open between its database calls.

Every `database_sync_to_async` call runs `close_old_connections()` before and
after the function, which with the default `DATABASE_CONN_MAX_AGE=0` closes the
connection each time: the worker then reconnects for every result batch and
every status check (PostgreSQL: a TCP connect, SCRAM authentication and a
backend fork, ~5-20 ms; SQLite: opening the file and the WAL pragmas). The
worker is a long-lived process making a few such calls a second, the case
persistent connections are for, so while it runs, a max age of 0 becomes
"unlimited" with Django's health checks on: a connection that broke (e.g. the
database restarted) fails its check and is replaced on the next call. An
explicit `DATABASE_CONN_MAX_AGE` > 0 is kept as it is. A pooled database
(PostgreSQL with `DATABASE_POOL`, for the web process) is not pooled in the
worker: it keeps its one connection the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections


@contextlib.asynccontextmanager
async def persistent_connections() -> AsyncIterator[None]:
    """Keep database connections open while the block runs; close them (in their thread) at the end."""
    saved: list[tuple[dict[str, Any], Any, Any, Any]] = []
    for alias in connections:
        settings_dict = connections.settings[alias]
        options = settings_dict.get("OPTIONS", {})
        if options.get("pool") or not settings_dict.get("CONN_MAX_AGE"):
            saved.append((settings_dict, settings_dict.get("CONN_MAX_AGE"), settings_dict.get("CONN_HEALTH_CHECKS"), options))
            # No pool in the worker (Django allows none with a max age): during a database outage a pool
            # waits for its connection (30 s), where the worker's retries expect the error at once.
            settings_dict["OPTIONS"] = {key: value for key, value in options.items() if key != "pool"}
            settings_dict["CONN_MAX_AGE"] = None
            settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        yield
    finally:
        try:
            # database_sync_to_async runs in asgiref's thread-sensitive thread, like this call: its connections
            # close. Before the settings come back: a connection opened without the pool is closed without it.
            await sync_to_async(connections.close_all)()
        finally:
            for settings_dict, max_age, health_checks, options in saved:
                settings_dict["CONN_MAX_AGE"] = max_age
                settings_dict["CONN_HEALTH_CHECKS"] = health_checks
                settings_dict["OPTIONS"] = options
