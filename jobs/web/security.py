"""Security headers Django does not send itself: a strict Content-Security-Policy.

No page of ours has an inline script, inline style or event-handler attribute
(tests/test_security.py checks the rendered pages), so scripts and styles may
come only from our own origin. The JSON data a page needs is a
`<script type="application/json">` block (json_script), which browsers never
execute. WebSockets go to the same host: 'self' covers ws:/wss: in current
browsers, the explicit ws(s)://host keeps older ones working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def content_security_policy(request: HttpRequest) -> str:
    try:
        host = request.get_host()
    except DisallowedHost:  # the response is the 400 for that host; no socket will be opened
        return "; ".join((*POLICY, "connect-src 'self'"))
    return "; ".join((*POLICY, f"connect-src 'self' ws://{host} wss://{host}"))


def _add_header(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = content_security_policy(request)
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header to every response that has none yet.

    Sync and async capable, so the async API views stay on the event loop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return _add_header(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _add_header(request, await self.get_response(request))
