"""Saved response bodies (job option `save_bodies`): storing them, and downloading them.

The worker gets a `StorageSink` per URL: the body streams into a spooled
temporary file (memory up to 1 MiB, then disk) and, once complete, goes to
Django's default storage (a FileSystemStorage under MEDIA_ROOT unless
STORAGES says otherwise) as `bodies/<job id>/<position>`. An incomplete body
(too large, timeout, reset) is discarded. Deleting a job deletes its bodies
(the receiver below; jobs/ops/retention.py deletes them itself, counting them).

Downloading them is `downloads.py`'s business.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from typing import IO

from asgiref.sync import sync_to_async
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from jobs.engine.values import BodySink
from jobs.models import Job

SPOOL_BYTES = 1024 * 1024
"""A body is kept in memory up to this size while it streams, then on disk."""


def body_dir(job_id: uuid.UUID) -> str:
    """The storage directory of a job's saved bodies."""
    return f"bodies/{job_id}"


def body_name(job_id: uuid.UUID, position: int) -> str:
    """The storage name of one saved body."""
    return f"{body_dir(job_id)}/{position}"


class StorageSink(BodySink):
    """Streams one body to a temporary file, then saves it to the default storage."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    async def finish(self) -> str:
        # Storage backends do blocking I/O (a disk, or a network for S3-like ones): off the loop.
        return await sync_to_async(self._save, thread_sensitive=False)()

    def _save(self) -> str:
        try:
            self._file.seek(0)
            # A URL fetched again (its job was re-claimed) replaces its body rather than adding a sibling.
            if default_storage.exists(self.name):
                default_storage.delete(self.name)
            return default_storage.save(self.name, File(self._file))
        finally:
            self._file.close()

    def discard(self) -> None:
        self._file.close()


def sink_factory(job: Job) -> Callable[[int], BodySink] | None:
    """What the worker hands `fetch_all`: a StorageSink per position, or None if the job keeps no bodies."""
    if not job.save_bodies:
        return None
    return lambda position: StorageSink(body_name(job.pk, position))


@receiver(post_delete, sender=Job, dispatch_uid="jobs.bodies.delete_bodies")
def delete_bodies(sender: type[Job], instance: Job, **kwargs: object) -> None:
    """A deleted job (admin, API, cascade) takes its saved bodies along, once the deletion is committed."""
    if instance.save_bodies:
        # The id now: Django sets the instance's pk to None once it is deleted, before an outer
        # transaction (the admin's delete view runs in one) commits and runs this callback.
        job_id = instance.pk
        transaction.on_commit(lambda: delete_stored_bodies(job_id))


def count_stored_bodies(job_id: uuid.UUID) -> int:
    """How many saved bodies of the job are in the storage."""
    return len(_stored(body_dir(job_id)))


def delete_stored_bodies(job_id: uuid.UUID) -> int:
    """Delete the job's saved bodies (and their directory); return how many there were."""
    directory = body_dir(job_id)
    files = _stored(directory)
    for name in files:
        default_storage.delete(f"{directory}/{name}")
    if files or default_storage.exists(directory):
        default_storage.delete(directory)  # FileSystemStorage removes the (now empty) directory
    return len(files)


def _stored(directory: str) -> list[str]:
    try:
        _, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return []  # nothing was ever saved
    return files
