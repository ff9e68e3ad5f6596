"""WebSocket routes; project/asgi.py wraps them in the origin and auth middleware."""

from __future__ import annotations

from django.urls import path, re_path

from jobs.web import consumers

websocket_urlpatterns = [
    path("ws/jobs/", consumers.JobListConsumer.as_asgi()),
    # str, not uuid: a malformed id is refused by the consumer rather than failing routing.
    path("ws/jobs/<str:job_id>/", consumers.JobConsumer.as_asgi()),
    re_path(r"", consumers.NotFoundConsumer.as_asgi()),
]
