"""API tokens (jobs/web/tokens.py): Bearer auth on the JSON API, CSRF for sessions only, the
`apitoken` command and the admin."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client
from django.utils import timezone

from jobs.models import ApiToken, Job
from jobs.web import tokens

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("memory_layer", "fast_password_hashing"),
]

BODY = json.dumps({"urls": ["http://a.example/"]})


@pytest.fixture
def ann() -> Any:
    return get_user_model().objects.create_user(username="ann", password="x")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_only_the_digest_is_stored_and_the_prefix_identifies_the_token(ann: Any) -> None:
    new = tokens.create_token(user=ann, name="cron")
    row = ApiToken.objects.get()
    assert re.fullmatch(r"bf_[A-Za-z0-9_-]{43}", new.secret)
    assert row.digest == hashlib.sha256(new.secret.encode()).hexdigest()
    assert row.prefix == new.secret[:11]
    assert new.secret not in {getattr(row, field.attname) for field in ApiToken._meta.fields if field.attname}
    assert tokens.create_token(user=ann).secret != new.secret


async def test_bearer_token_submits_without_csrf_and_sees_own_jobs(ann: Any) -> None:
    new = await sync_to_async(tokens.create_token)(user=ann)
    client = AsyncClient(enforce_csrf_checks=True)

    created = await client.post("/api/jobs/", BODY, content_type="application/json", headers=bearer(new.secret))
    listing = await client.get("/api/jobs/", headers=bearer(new.secret))

    assert created.status_code == 201, created.content
    job = await Job.objects.aget()
    assert job.owner_id == ann.pk
    assert [item["id"] for item in listing.json()["jobs"]] == [str(job.id)]


async def test_session_requests_still_need_csrf(ann: Any) -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(ann)
    refused = await client.post("/api/jobs/", BODY, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("CSRF check failed")
    assert await Job.objects.acount() == 0


@pytest.mark.parametrize(
    "header",
    ["Bearer bf_not-a-real-token", "Bearer something", "Bearer ", "Basic YW5uOng=", "Token abc", "bf_abc"],
)
async def test_bad_authorization_headers_get_401_and_no_session_fallback(ann: Any, header: str) -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(ann)  # a valid session must not rescue a bad token

    for response in (
        await client.get("/api/jobs/", headers={"Authorization": header}),
        await client.post("/api/jobs/", BODY, content_type="application/json", headers={"Authorization": header}),
    ):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
        assert "token" in response.json()["error"] or "Authorization" in response.json()["error"]
    assert await Job.objects.acount() == 0


def test_revoked_token_and_inactive_user_are_refused(ann: Any) -> None:
    client = Client()
    revoked, kept = tokens.create_token(user=ann), tokens.create_token(user=ann)
    tokens.revoke(revoked.token)
    assert client.get("/api/jobs/", headers=bearer(revoked.secret)).status_code == 401
    assert client.get("/api/jobs/", headers=bearer(kept.secret)).status_code == 200

    ann.is_active = False
    ann.save()
    assert client.get("/api/jobs/", headers=bearer(kept.secret)).status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(ann: Any, django_assert_num_queries: Any) -> None:
    new = tokens.create_token(user=ann)
    assert new.token.last_used_at is None

    with django_assert_num_queries(2):  # lookup + first stamp
        assert tokens.user_for_token(new.secret) == ann
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    with django_assert_num_queries(1):  # lookup only
        tokens.user_for_token(new.secret)
    assert ApiToken.objects.get().last_used_at == first

    ApiToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=5))
    with django_assert_num_queries(2):
        tokens.user_for_token(new.secret)
    assert ApiToken.objects.get().last_used_at > first


def test_apitoken_command_create_list_revoke(ann: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("apitoken", "create", "--user", "ann", "--name", "nightly", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert tokens.user_for_token(secret) == ann
    assert "shown only now" in err.getvalue()

    listing = io.StringIO()
    call_command("apitoken", "list", "--user", "ann", stdout=listing)
    assert secret[:11] in listing.getvalue() and "nightly" in listing.getvalue() and "active" in listing.getvalue()
    assert secret not in listing.getvalue()

    call_command("apitoken", "revoke", "--user", "ann", "--name", "nightly", stdout=io.StringIO())
    assert tokens.user_for_token(secret) is None
    listing = io.StringIO()
    call_command("apitoken", "list", "--user", "ann", stdout=listing)
    assert "revoked" in listing.getvalue()


def test_apitoken_command_errors_name_the_problem(ann: Any) -> None:
    with pytest.raises(CommandError, match="--user: no user 'nobody'"):
        call_command("apitoken", "create", "--user", "nobody")
    with pytest.raises(CommandError, match="--name or --prefix"):
        call_command("apitoken", "revoke", "--user", "ann")
    with pytest.raises(CommandError, match="no active token"):
        call_command("apitoken", "revoke", "--user", "ann", "--prefix", "bf_zzzz")


def test_admin_creates_a_token_shows_it_once_and_revokes(admin_client: Client, ann: Any) -> None:
    page = admin_client.post("/admin/jobs/apitoken/add/", {"user": ann.pk, "name": "ci"})
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    secret = re.search(rb"bf_[A-Za-z0-9_-]{43}", page.content).group().decode()
    row = ApiToken.objects.get()
    assert (row.user, row.name, row.digest) == (ann, "ci", tokens.digest(secret))

    change = admin_client.get(f"/admin/jobs/apitoken/{row.pk}/change/")
    assert change.status_code == 200 and secret.encode() not in change.content
    assert row.prefix.encode() in change.content

    admin_client.post(
        "/admin/jobs/apitoken/", {"action": "revoke_tokens", "_selected_action": [row.pk]}, follow=True
    )
    assert tokens.user_for_token(secret) is None
