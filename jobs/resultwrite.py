"""Writing a batch of fetch results onto their pending Result rows, fast.

Called by `queue.record_results` inside its fenced transaction; only rows still
pending are written, and the written rows are returned.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection

from .models import Result

if TYPE_CHECKING:
    from .fetcher import FetchResult

RESULT_FIELDS = ("outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error", "fetched_at")
# Written with RESULT_FIELDS (FetchResult attribute -> Result column).
DETAIL_FIELDS = {
    "error_class": "error_class", "final_url": "final_url", "content_type": "content_type", "sha256": "sha256",
    "redirects": "redirects", "body_path": "body",
}


def write_results(job_id: uuid.UUID, results: Sequence[FetchResult], at: datetime) -> list[Result]:
    """Finalize the batch's still-pending rows (in the caller's transaction); return them in position order."""
    if connection.vendor == "postgresql":
        return _write_results_postgresql(job_id, results, at)
    return _write_results_generic(job_id, results, at)


# Writing a batch: `bulk_update` builds one CASE WHEN per column and row and
# measured ~400 ms per 500 rows on both backends (1.2k rows/s). The paths below
# measured 12-15x faster, ~15k rows/s on PostgreSQL and ~30-40k on SQLite,
# with the fence and the counters included (PostgreSQL: one UPDATE ... FROM
# unnest(arrays) with a fixed number of parameters whatever the batch size,
# which also spares psycopg from parsing a query with thousands of
# placeholders; SQLite: executemany of a by-pk UPDATE in the transaction).


def _final_row(job_id: uuid.UUID, row_id: int, position: int, url: str, result: FetchResult, at: datetime) -> Result:
    return Result(
        id=row_id, job_id=job_id, position=position, url=url, outcome=result.outcome,
        status_code=result.status_code, bytes=result.bytes, elapsed_ms=result.elapsed_ms,
        attempts=result.attempts, error=result.error, fetched_at=at,
        **{column: getattr(result, attr) for attr, column in DETAIL_FIELDS.items()},
    )  # fmt: skip


def _write_results_postgresql(job_id: uuid.UUID, results: Sequence[FetchResult], at: datetime) -> list[Result]:
    """One statement: update the still-pending rows of the batch, return which ones."""
    if not results:
        return []
    table, qn = Result._meta.db_table, connection.ops.quote_name
    sql = f"""
        UPDATE {qn(table)} AS r
        SET outcome = v.outcome, status_code = v.status_code, bytes = v.bytes, elapsed_ms = v.elapsed_ms,
            attempts = v.attempts, error = v.error, fetched_at = %s,
            error_class = v.error_class, final_url = v.final_url, content_type = v.content_type, sha256 = v.sha256,
            redirects = v.redirects, body = v.body
        FROM unnest(%s::integer[], %s::text[], %s::integer[], %s::bigint[], %s::integer[], %s::integer[], %s::text[],
                    %s::text[], %s::text[], %s::text[], %s::text[], %s::integer[], %s::text[])
            AS v(position, outcome, status_code, bytes, elapsed_ms, attempts, error,
                 error_class, final_url, content_type, sha256, redirects, body)
        WHERE r.job_id = %s AND r.position = ANY(%s::integer[]) AND r.position = v.position AND r.outcome = %s
        RETURNING r.id, r.position, r.url
    """
    columns = [
        [getattr(result, name) for result in results]
        for name in ("position", "outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error", *DETAIL_FIELDS)
    ]
    with connection.cursor() as cursor:
        # The ANY() repeats the positions so the (job, position) index bounds the scan.
        cursor.execute(sql, [at, *columns, job_id, columns[0], Result.Outcome.PENDING])
        written = cursor.fetchall()
    by_position = {result.position: result for result in results}
    rows = [_final_row(job_id, row_id, pos, url, by_position[pos], at) for row_id, pos, url in written]
    rows.sort(key=lambda row: row.position)
    return rows


def _write_results_generic(job_id: uuid.UUID, results: Sequence[FetchResult], at: datetime) -> list[Result]:
    """Select the batch's still-pending rows, then update them by primary key.

    Runs inside the caller's transaction, which on SQLite holds the write lock
    (IMMEDIATE), so no other writer can finalize a row between the two steps.
    """
    by_position = {result.position: result for result in results}
    positions = sorted(by_position)
    rows: list[Result] = []
    # Chunked: SQLite builds may cap a statement at 999 parameters.
    for start in range(0, len(positions), 500):
        chunk = positions[start : start + 500]
        pending = Result.objects.filter(job_id=job_id, outcome=Result.Outcome.PENDING, position__in=chunk)
        for row_id, pos, url in pending.order_by("position").values_list("id", "position", "url"):
            rows.append(_final_row(job_id, row_id, pos, url, by_position[pos], at))
    if rows:
        table, qn = Result._meta.db_table, connection.ops.quote_name
        assignments = ", ".join(f"{qn(name)} = %s" for name in (*RESULT_FIELDS, *DETAIL_FIELDS.values()))
        sql = f"UPDATE {qn(table)} SET {assignments} WHERE {qn('id')} = %s"
        stamp = connection.ops.adapt_datetimefield_value(at)
        params = [
            (row.outcome, row.status_code, row.bytes, row.elapsed_ms, row.attempts, row.error, stamp,
             *(getattr(row, column) for column in DETAIL_FIELDS.values()), row.id)
            for row in rows
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
    return rows
