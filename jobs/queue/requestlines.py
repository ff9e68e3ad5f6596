"""Per-line requests in the database: the `RequestLine` rows of a job's lines that override its request.

Only lines with an override have a row, and only jobs with such lines
(`Job.line_requests`) are ever asked for them: a job of plain URLs costs
nothing here. The worker gets a claimed chunk's rows with its URLs, in the
claim's query (claims.claim_chunk), and turns them into the engine's
`RequestSpec`s off the event loop (requestdata.line_specs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection

from jobs.models import Job, RequestLine
from jobs.queue.bulkinsert import insert_rows
from jobs.requestdata import LineRecord


COLUMNS = ("job_id", "position", "method", "headers", "sealed_headers", "body")


def insert_lines(job: Job, records: Sequence[LineRecord]) -> None:
    """Store the overrides of `job`'s lines (in the caller's transaction); `headers` go as their JSON text."""
    job_id = RequestLine._meta.get_field("job").get_db_prep_save(job.pk, connection=connection)
    rows = (
        (job_id, r.position, r.method, None if r.headers is None else json.dumps(r.headers), r.sealed_headers, r.body)
        for r in records
    )
    insert_rows(RequestLine, COLUMNS, rows)


def lines_between(job_id: object, first: int, last: int) -> dict[int, RequestLine]:
    """Position -> the RequestLine of each overriding line in [first, last] (exports)."""
    rows = RequestLine.objects.filter(job_id=job_id, position__gte=first, position__lte=last)
    return {row.position: row for row in rows}
