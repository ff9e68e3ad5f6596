"""Per-line requests in the database: the `RequestLine` rows of a job's lines that override its request.

Only lines with an override have a row, and only jobs with such lines
(`Job.line_requests`) are ever asked for them: a job of plain URLs costs
nothing here. The worker reads a claimed chunk's rows in one query and gets
them as the engine's `RequestSpec`s, unsealed, off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from channels.db import database_sync_to_async

from jobs import requestdata
from jobs.engine.requestspec import RequestSpec
from jobs.models import Job, RequestLine
from jobs.requestdata import LineRecord

BATCH = 2000


def insert_lines(job: Job, records: Sequence[LineRecord]) -> None:
    """Store the overrides of `job`'s lines (in the caller's transaction)."""
    RequestLine.objects.bulk_create(
        (
            RequestLine(job=job, position=r.position, method=r.method, headers=r.headers,
                        sealed_headers=r.sealed_headers, body=r.body)
            for r in records
        ),
        batch_size=BATCH,
    )  # fmt: skip


def line_specs(job: Job, start: int, end: int) -> dict[int, RequestSpec]:
    """Position -> the request of each line of [start, end) with overrides. SealBroken if a secret does not open."""
    rows = RequestLine.objects.filter(job=job, position__gte=start, position__lt=end)
    return requestdata.line_specs(job, rows.values_list(*requestdata.LINE_FIELDS))


aline_specs = database_sync_to_async(line_specs)


def lines_between(job_id: object, first: int, last: int) -> dict[int, RequestLine]:
    """Position -> the RequestLine of each overriding line in [first, last] (exports)."""
    rows = RequestLine.objects.filter(job_id=job_id, position__gte=first, position__lte=last)
    return {row.position: row for row in rows}
