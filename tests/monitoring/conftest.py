"""Fixtures of the in-process monitoring tests: the in-memory channel layer, ann's logged-in client."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.monitoring.helpers import MEMORY_LAYER


@pytest.fixture
def memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER


@pytest.fixture
def client(ann: Any) -> Client:
    client = Client()
    client.force_login(ann)
    return client
