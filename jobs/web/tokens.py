"""API tokens and who a JSON API request is from.

A token is `bf_` plus 43 URL-safe characters (256 random bits). Only its
SHA-256 digest is stored: a database leak gives no usable tokens, and a plain
hash suffices (no slow KDF) because the secret is random, not a password.
Lookups go through the unique `digest` index, so no comparison of secrets
happens in Python.

`authenticate()` is the API's single door:
- `Authorization: Bearer <token>` → the token's user, or 401 if the token is
  unknown or revoked. No session fallback, and no CSRF check: a browser never
  attaches this header by itself, so a cross-site request cannot carry it.
- no Authorization header → the session user, with Django's CSRF check for
  unsafe methods (the API views are csrf_exempt so that the token path can
  skip it; this module re-applies it to the session path).
- any other Authorization scheme → 401.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from jobs.models import ApiToken

TOKEN_PREFIX = "bf_"
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
# last_used_at is written at most this often per token: one UPDATE per minute, not per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly created token: `secret` exists only here, the row keeps its digest."""

    token: ApiToken
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(*, user: AbstractBaseUser, name: str = "") -> NewToken:
    """Make and store a token for `user`; the caller shows `secret` once."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=secret[:PREFIX_LENGTH], digest=digest(secret))
    return NewToken(token=token, secret=secret)


def revoke(token: ApiToken) -> None:
    """Revoke `token` from now on; the row stays for the record."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def user_for_token(secret: str) -> AbstractBaseUser | None:
    """The active user owning the live token `secret`, else None. Records last use (coarsely)."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=digest(secret), revoked_at__isnull=True).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Run Django's CSRF check as if the view were not exempt; its failure response, or None."""
    check = CsrfViewMiddleware(lambda _request: HttpResponse())
    return check.process_view(request, _csrf_protected, (), {})


def _csrf_protected(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    """Stands in for the view in the CSRF check (a view without csrf_exempt)."""
    raise AssertionError("only passed to CsrfViewMiddleware.process_view")


async def authenticate(request: HttpRequest) -> AbstractBaseUser | AnonymousUser | HttpResponse:
    """The request's user, or the error response to send instead (401, or 403 for CSRF)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return _unauthorized("unsupported Authorization header: send 'Authorization: Bearer <token>'")
        user = await sync_to_async(user_for_token)(secret.strip())
        if user is None:
            return _unauthorized("invalid or revoked API token")
        # Later code (and logging) sees the token's user, never a session user.
        request.user = user
        return user
    user = await request.auser()
    if user.is_authenticated:
        failure = _csrf_failure(request)
        if failure is not None:
            return failure
    return user
