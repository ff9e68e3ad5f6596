"""The rules every JSON API endpoint shares: authentication, methods, JSON errors, query parameters.

Async views behind the session cookie or an API token (`Authorization: Bearer
…`, see tokens.py). Session requests with unsafe methods need the CSRF token in
an `X-CSRFToken` header; token requests are CSRF-exempt. Every answer is JSON,
errors included: anonymous or bad token 401, someone else's or an unknown job
404, wrong method 405, bad input 400 `{"errors": {...}}`, over a limit 429
(jobs/submission/limits.py), body too large 413.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.views.csrf import csrf_failure as html_csrf_failure

from jobs.exceptions import SubmissionError
from jobs.models import Job, Result
from jobs.submission import limits
from jobs.web import tokens

ApiView = Callable[..., Awaitable[HttpResponse]]


class BadRequest(Exception):
    """A 400 naming the bad fields: `errors` maps each to its problem."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def api_view(*methods: str) -> Callable[[ApiView], ApiView]:
    """Wrap an async view `(request, user, **kwargs)` with the API's JSON rules.

    Answers 405 for other methods, 401 for anonymous users, 404 for Http404
    and 400 for BadRequest/SubmissionError, all as JSON.
    """
    allowed = frozenset(methods)

    def decorator(view: ApiView) -> ApiView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                response = error_response(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            user = await tokens.authenticate(request)
            if isinstance(user, HttpResponse):
                return user
            if not user.is_authenticated:
                return error_response(401, "authentication required")
            if request.method == "GET":
                # Sets the csrftoken cookie, so a script client can bootstrap its X-CSRFToken from any GET.
                get_token(request)
            try:
                return await view(request, user, *args, **kwargs)
            except Http404:
                return error_response(404, "not found")
            except (BadRequest, SubmissionError) as exc:
                return JsonResponse({"errors": exc.errors}, status=400)
            except limits.LimitExceeded as exc:
                response = JsonResponse({"errors": exc.errors}, status=429)
                response["Retry-After"] = str(exc.retry_after)
                return response

        # tokens.authenticate() applies CSRF to session requests only.
        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


async def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/: JSON 404 rather than Django's HTML page."""
    return error_response(404, "not found")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON 403 under /api/, Django's HTML page elsewhere."""
    if request.path_info.startswith("/api/"):
        return error_response(403, f"CSRF check failed: {reason}; send the csrftoken cookie value as X-CSRFToken")
    return html_csrf_failure(request, reason)


def decode_json(body: bytes | str) -> Any:
    """Parse a JSON document; SubmissionError({"body": ...}) says where it is malformed."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            {"body": f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
        ) from exc
    except UnicodeDecodeError as exc:
        raise SubmissionError({"body": f"malformed JSON: not UTF-8 (byte {exc.start})"}) from exc
    except RecursionError as exc:
        raise SubmissionError({"body": "malformed JSON: nested too deeply"}) from exc



async def get_job(user: AbstractBaseUser, job_id: str) -> Job:
    """The user's job `job_id`, else Http404 (bad ids and other users' jobs alike)."""
    pk = uuid_or_none(job_id)
    if pk is None:
        raise Http404
    try:
        return await Job.objects.aget(pk=pk, owner=user)
    except Job.DoesNotExist:
        raise Http404 from None


def uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- Query parameters ---------------------------------------------------------------------


def int_param(request: HttpRequest, name: str, *, default: int, lowest: int, highest: int | None) -> int:
    raw = request.GET.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lowest or (highest is not None and value > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
        raise BadRequest({name: f"must be an integer {bounds}"})
    return value


def outcomes_param(request: HttpRequest) -> list[str] | None:
    return choices_param(request, "outcome", Result.Outcome.values)


def choices_param(request: HttpRequest, name: str, choices: list[str]) -> list[str] | None:
    """`?name=a,b` as a list of known choices (None when absent); an unknown one is a 400 naming it."""
    raw = request.GET.get(name, "").strip()
    if not raw:
        return None
    values = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = sorted(set(values) - set(choices))
    if unknown:
        raise BadRequest({name: f"unknown {name} {', '.join(unknown)} (expected {', '.join(choices)})"})
    return values


def status_codes_param(request: HttpRequest) -> list[int] | None:
    raw = request.GET.get("status_code", "").strip()
    if not raw:
        return None
    codes = [item.strip() for item in raw.split(",") if item.strip()]
    if not all(code.isdigit() and 100 <= int(code) <= 599 for code in codes):
        raise BadRequest({"status_code": "must be HTTP status codes from 100 to 599, separated by commas"})
    return [int(code) for code in codes]


def search_param(request: HttpRequest) -> str:
    q = request.GET.get("q", "").strip()
    if "\x00" in q:  # PostgreSQL text cannot hold NUL, and no stored URL contains one
        raise BadRequest({"q": "must not contain NUL characters"})
    return q


def page_url(request: HttpRequest, **params: Any) -> str:
    query = request.GET.copy()
    for key, value in params.items():
        query[key] = str(value)
    return f"{request.path}?{urlencode(sorted(query.items()))}"
