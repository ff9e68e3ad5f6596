"""WebSocket consumers: one job's live progress, and the user's live job list.

Both refuse anonymous users before accepting (the handshake fails with 403);
project/asgi.py puts them behind AllowedHostsOriginValidator, so foreign
origins never get here. Channel-layer messages are at-most-once, so every
connection starts with a snapshot from the database and then applies events.

Protocol (client <- server):
  /ws/jobs/<id>/  {"type": "snapshot", "job", "results"}, then {"type": "progress", "job", "results"}
  /ws/jobs/       {"type": "jobs", "jobs"}, then {"type": "job", "job"}
Client -> server: {"type": "cancel"} on a job socket; {"type": "submit", "urls", ...}
on the list socket, answered {"type": "submitted", "job"} or {"type": "error", "errors"}.
Anything malformed or unknown is answered {"type": "error", "errors": {...}}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.contrib.auth.models import AbstractBaseUser

from jobs import conf, serializers
from jobs.exceptions import SubmissionError
from jobs.models import Job, Result
from jobs.progress import groups
from jobs.submission import limits, service, validation

# Rows in a job snapshot: the newest final ones; the page loads older rows over the API.
SNAPSHOT_RESULTS = 100
# Jobs in the list snapshot, newest first.
SNAPSHOT_JOBS = 50


class JsonMessageConsumer(AsyncJsonWebsocketConsumer):
    """Decodes client frames itself, so bad input gets an error reply instead of a crash."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.send_error({"body": "binary frames are not supported; send JSON text"})
            return
        limit = conf.get("WS_MAX_MESSAGE_BYTES")
        if len(text_data.encode("utf-8", "surrogatepass")) > limit:
            await self.send_error({"body": f"message larger than {limit} bytes"})
            return
        try:
            content = json.loads(text_data)
        except json.JSONDecodeError as exc:
            await self.send_error({"body": f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"})
            return
        except RecursionError:
            await self.send_error({"body": "malformed JSON: nested too deeply"})
            return
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error({"type": "send a JSON object with a string 'type'"})
            return
        await self.receive_json(content)

    async def send_error(self, errors: dict[str, Any]) -> None:
        await self.send_json({"type": "error", "errors": errors})

    async def unknown_type(self, kind: str, expected: str) -> None:
        await self.send_error({"type": f"unknown message type {kind!r} (expected {expected})"})


class JobConsumer(JsonMessageConsumer):
    """`/ws/jobs/<id>/`: the owner's live view of one job."""

    job_id: uuid.UUID | None = None
    group: str | None = None
    # The last job state sent; late messages older than it are dropped.
    last_job: dict[str, Any] | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        job_id = _uuid_or_none(self.scope["url_route"]["kwargs"]["job_id"])
        if not user.is_authenticated or job_id is None or not await _owns(user, job_id):
            await self.close()
            return
        self.job_id = job_id
        # Join before reading the snapshot, so no update falls between the two.
        self.group = groups.job_group(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await _job_snapshot(job_id)
        if snapshot is None:  # deleted in the meantime
            await self.close()
            return
        job, results = snapshot
        self.last_job = job
        await self.send_json({"type": "snapshot", "job": job, "results": results})

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_progress(self, event: dict[str, Any]) -> None:
        """Relay a `job.progress` group message (its pre-encoded `text` if it has one)."""
        await self.send_progress(event["job"], event.get("results") or [], text=event.get("text"))

    async def send_progress(self, job: dict[str, Any], results: list[dict[str, Any]], *, text: str | None = None) -> None:
        """Send a progress message unless it is older than what the client already has.

        `text` is the message already encoded (by the publisher, once for every watching socket)."""
        if self._is_stale(job) or (not results and job == self.last_job):
            return
        self.last_job = job
        if text is None:
            text = await self.encode_json({"type": "progress", "job": job, "results": results})
        await self.send(text_data=text)

    def _is_stale(self, job: dict[str, Any]) -> bool:
        # Messages published before the snapshot was read can arrive after it.
        last = self.last_job
        if last is None:
            return False
        if last["status"] in Job.TERMINAL and job["status"] not in Job.TERMINAL:
            return True
        return bool(job.get("done", 0) < last.get("done", 0))

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if content["type"] != "cancel":
            await self.unknown_type(content["type"], "'cancel'")
            return
        assert self.job_id is not None  # set before accept
        try:
            job = await service.acancel(self.job_id)
        except Job.DoesNotExist:
            await self.send_error({"job": "not found"})
            return
        # Answer at once; the group copy of this update is then a duplicate and skipped.
        await self.send_progress(serializers.job_to_dict(job), [])


class JobListConsumer(JsonMessageConsumer):
    """`/ws/jobs/`: the user's live job list, and submitting new jobs."""

    group: str | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()
            return
        self.group = groups.user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "jobs", "jobs": await _recent_jobs(user)})

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_update(self, event: dict[str, Any]) -> None:
        """Relay a `job.update` group message (its pre-encoded `text` if it has one)."""
        text = event.get("text")
        if text is None:
            text = await self.encode_json({"type": "job", "job": event["job"]})
        await self.send(text_data=text)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if content["type"] != "submit":
            await self.unknown_type(content["type"], "'submit'")
            return
        fields = {key: value for key, value in content.items() if key != "type"}
        try:
            job_request = await validation.avalidate_submission(fields)
        except SubmissionError as exc:
            await self.send_error(exc.errors)
            return
        try:
            job = await service.asubmit(self.scope["user"], job_request)
        except limits.LimitExceeded as exc:
            await self.send_error(exc.errors)
            return
        await self.send_json({"type": "submitted", "job": serializers.job_to_dict(job)})


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other socket path: refuse the handshake instead of raising 'No route found'."""

    async def connect(self) -> None:
        await self.close()


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@database_sync_to_async
def _owns(user: AbstractBaseUser, job_id: uuid.UUID) -> bool:
    return Job.objects.filter(pk=job_id, owner=user).exists()


@database_sync_to_async
def _job_snapshot(job_id: uuid.UUID) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The job and its newest final rows, newest first; None if the job is gone."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return None
    rows = (
        Result.objects.filter(job_id=job_id)
        .exclude(outcome=Result.Outcome.PENDING)
        .order_by("-fetched_at", "-position")[:SNAPSHOT_RESULTS]
    )
    return serializers.job_to_dict(job), [serializers.result_to_dict(row) for row in rows]


@database_sync_to_async
def _recent_jobs(user: AbstractBaseUser) -> list[dict[str, Any]]:
    jobs = Job.objects.filter(owner=user).order_by("-created_at", "-id")[:SNAPSHOT_JOBS]
    return [serializers.job_to_dict(job) for job in jobs]
