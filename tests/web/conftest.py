"""Fixtures of the web tests: the page tests' user `alice` (logged in)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="s3cret-pass!")


@pytest.fixture
def alice(client: Client, user: Any) -> Client:
    """pytest-django's `client`, logged in as `user`."""
    client.force_login(user)
    return client
