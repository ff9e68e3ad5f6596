"""The worker keeps one database connection across its database calls (jobs.worker.dbconn)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connection, connections

from jobs.worker.dbconn import persistent_connections

pytestmark = pytest.mark.django_db(transaction=True)


def _backend_connection_id() -> int:
    """The identity of the DB-API connection the calling thread uses (opened if needed)."""
    connection.ensure_connection()
    return id(connection.connection)


def _is_connected() -> bool:
    return connection.connection is not None


@pytest.fixture
def max_age_zero() -> object:
    """The default configuration without a pool: DATABASE_CONN_MAX_AGE=0, no health checks."""
    settings_dict = connections.settings["default"]
    saved = settings_dict.get("CONN_MAX_AGE"), settings_dict.get("CONN_HEALTH_CHECKS"), settings_dict.get("OPTIONS")
    # Without the pool (on by default on PostgreSQL, for the web process): connections really close.
    settings_dict["OPTIONS"] = {key: value for key, value in (saved[2] or {}).items() if key != "pool"}
    settings_dict["CONN_MAX_AGE"], settings_dict["CONN_HEALTH_CHECKS"] = 0, False
    yield settings_dict
    settings_dict["CONN_MAX_AGE"], settings_dict["CONN_HEALTH_CHECKS"], settings_dict["OPTIONS"] = saved


async def test_without_it_every_call_reconnects(max_age_zero: dict) -> None:
    first = await database_sync_to_async(_backend_connection_id)()
    assert not await database_sync_to_async(_is_connected)()  # closed after the call
    second = await database_sync_to_async(_backend_connection_id)()
    assert not await database_sync_to_async(_is_connected)()
    assert first is not None and second is not None


async def test_calls_share_one_connection_and_it_is_closed_at_the_end(max_age_zero: dict) -> None:
    async with persistent_connections():
        first = await database_sync_to_async(_backend_connection_id)()
        assert await database_sync_to_async(_is_connected)()  # still open between calls
        second = await database_sync_to_async(_backend_connection_id)()
        assert first == second
        assert max_age_zero["CONN_MAX_AGE"] is None and max_age_zero["CONN_HEALTH_CHECKS"] is True
    assert (max_age_zero["CONN_MAX_AGE"], max_age_zero["CONN_HEALTH_CHECKS"]) == (0, False)
    assert not await database_sync_to_async(_is_connected)()


async def test_an_explicit_max_age_is_kept(max_age_zero: dict) -> None:
    max_age_zero["CONN_MAX_AGE"] = 30
    async with persistent_connections():
        assert max_age_zero["CONN_MAX_AGE"] == 30
    assert max_age_zero["CONN_MAX_AGE"] == 30


async def test_a_pooled_database_is_not_pooled_in_the_worker() -> None:
    """The worker keeps one connection of its own; the pool option comes back at the end."""
    settings_dict = connections.settings["default"]
    saved = settings_dict.get("CONN_MAX_AGE"), settings_dict.get("OPTIONS")
    pooled = {**(saved[1] or {}), "pool": {"max_size": 2}}
    settings_dict["CONN_MAX_AGE"], settings_dict["OPTIONS"] = 0, pooled
    try:
        async with persistent_connections():
            assert "pool" not in settings_dict["OPTIONS"] and settings_dict["CONN_MAX_AGE"] is None
            if connection.vendor == "postgresql":
                first = await database_sync_to_async(_backend_connection_id)()
                assert await database_sync_to_async(_is_connected)()
                assert first == await database_sync_to_async(_backend_connection_id)()
        assert settings_dict["OPTIONS"] is pooled and settings_dict["CONN_MAX_AGE"] == 0
    finally:
        settings_dict["CONN_MAX_AGE"], settings_dict["OPTIONS"] = saved
