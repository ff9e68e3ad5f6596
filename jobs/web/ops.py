"""The endpoints orchestrators and Prometheus call: /healthz, /readyz and /metrics.

Served by a middleware placed first in MIDDLEWARE, before the host check
(ALLOWED_HOSTS), the HTTPS redirect, sessions and CSRF: probes and scrapers
address a container by its IP or service name (`web:8000`), over plain HTTP
inside the network, and need none of those. Nothing here builds a URL from
the Host header, and only /metrics tells more than "up", behind its token.

* `GET /healthz`: the process answers (no I/O): 200 `{"status": "ok"}`.
* `GET /readyz`: the database and Redis each answer within 1 s: 200, else
  503 with `failed` naming them (jobs/ops/health.py).
* `GET /metrics`: the queue's state from the database, in Prometheus' text
  format (or OpenMetrics if asked), with `Authorization: Bearer <METRICS_TOKEN>`;
  401 without the right token, 404 while METRICS_TOKEN is unset. The workers'
  own metrics are on their `--metrics-port`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client.exposition import choose_encoder

from jobs import conf
from jobs.ops import health, metrics

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> HttpResponse:
    result = await health.readiness()
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    token = conf.get("METRICS_TOKEN") or ""
    if not token:
        return JsonResponse({"error": "metrics are off: set METRICS_TOKEN"}, status=404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = JsonResponse({"error": "a valid bearer token is required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # database_sync_to_async: the queries' connection is closed (or pooled) again once the page is built.
    body = await database_sync_to_async(lambda: encoder(metrics.queue_registry()))()
    return HttpResponse(body, content_type=content_type)


ROUTES: dict[str, Handler] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class OpsEndpointsMiddleware:
    """Answers ROUTES (GET and HEAD) before the rest of the middleware runs; see the module docstring."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        handler = ROUTES.get(request.path_info)
        if handler is None:
            return await self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"error": "method not allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        response = await handler(request)
        response["Cache-Control"] = "no-store"
        return response
