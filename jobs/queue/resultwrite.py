"""Writing a batch of fetch results onto their pending Result rows, fast.

Called by `queue.record_results` inside its fenced transaction; only rows still
pending are written, and the written rows are returned.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, NamedTuple

from django.db import connection

from jobs.models import Result
from jobs.queue.rawsql import db_value, fetch, table

if TYPE_CHECKING:
    from jobs.engine.values import FetchResult

# A batch's values in this order (FetchResult attributes), then the Result columns written from them.
VALUE_FIELDS = (
    "position", "outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error", "error_class", "final_url",
    "content_type", "sha256", "redirects", "body_path", "headers",
)  # fmt: skip
COLUMNS = ("outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error", "error_class", "final_url",
           "content_type", "sha256", "redirects", "body", "headers")  # fmt: skip
_values = attrgetter(*VALUE_FIELDS)
PG_TYPES = ("integer", "text", "integer", "bigint", "integer", "integer", "text", "text", "text", "text", "text",
            "integer", "text", "jsonb")  # fmt: skip
"""The PostgreSQL type of each of VALUE_FIELDS."""
Written = tuple[int, int, str]
"""A written row's id, position and url."""


class FinalRow(NamedTuple):
    """A Result row as `write_results` finalized it, under Result's field names (`serializers.result_to_dict`
    takes either). Not a model: Model.__init__, with its pre/post_init signals, cost more than the write."""

    id: int
    position: int
    url: str
    outcome: str
    status_code: int | None
    bytes: int | None
    elapsed_ms: int | None
    attempts: int
    error: str
    error_class: str
    final_url: str
    content_type: str
    sha256: str
    redirects: int
    body: str
    headers: tuple[tuple[str, str], ...] | None
    fetched_at: datetime


def write_results(job_id: uuid.UUID, results: Sequence[FetchResult], at: datetime) -> list[FinalRow]:
    """Finalize the batch's still-pending rows (in the caller's transaction); return them in position order.

    A position given twice is written once, with its last result.
    """
    if not results:
        return []
    by_position = {result.position: result for result in results}
    if connection.vendor == "postgresql":
        written = _write_postgresql(job_id, by_position, at)
    elif connection.vendor == "sqlite" and sqlite_single_statement():
        written = _write_sqlite(job_id, by_position, at)
    else:
        written = _write_generic(job_id, by_position, at)
    rows = [
        FinalRow(row_id, position, url, *_values(by_position[position])[1:], at) for row_id, position, url in written
    ]
    rows.sort(key=attrgetter("position"))
    return rows


# Writing a batch: `bulk_update` builds one CASE WHEN per column and row and
# measured ~400 ms per 500 rows on both backends (1.2k rows/s). One UPDATE ...
# FROM the batch's values, with a fixed number of parameters whatever the batch
# size (one JSON text, which json.dumps writes in C: psycopg dumps array
# parameters element by element in Python, twice the CPU per row), measured
# 12-15x faster, and spares the driver from parsing a query with thousands of
# placeholders (PostgreSQL; SQLite from 3.35; older SQLite selects the pending
# rows, then updates them by primary key). Returning plain rows instead of
# Result models halved the CPU per row again.


def _write_postgresql(job_id: uuid.UUID, by_position: Mapping[int, FetchResult], at: datetime) -> list[Written]:
    """One statement: update the still-pending rows of the batch, return which ones."""
    qn = connection.ops.quote_name
    sets = ", ".join(f"{qn(column)} = v.{column}" for column in COLUMNS)
    names = ("position", *COLUMNS)
    values = ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(zip(names, PG_TYPES, strict=True)))
    sql = f"""
        UPDATE {table(Result)} AS r SET {sets}, fetched_at = %s
        FROM (SELECT {values} FROM json_array_elements(%s::json) AS e) AS v
        WHERE r.job_id = %s AND r.position = ANY(%s::integer[]) AND r.position = v.position AND r.outcome = %s
        RETURNING r.id, r.position, r.url
    """
    # The ANY() repeats the positions so the (job, position) index bounds the scan whatever the plan.
    return fetch(sql, [at, _batch_json(by_position), job_id, list(by_position), Result.Outcome.PENDING])


def sqlite_single_statement() -> bool:
    """Whether this SQLite has what `_write_sqlite` uses: RETURNING and MATERIALIZED (3.35), JSON functions."""
    return connection.Database.sqlite_version_info >= (3, 35) and connection.features.supports_json_field


def _write_sqlite(job_id: uuid.UUID, by_position: Mapping[int, FetchResult], at: datetime) -> list[Written]:
    """One statement: update the still-pending rows of the batch, return which ones.

    The batch is one JSON array of rows (`headers` a nested array, which
    json_extract returns as JSON text). The materialized CTE fixes the plan:
    each batch row looks its Result up by the unique (job, position) index, and
    the UPDATE then goes by primary key. Joined directly, SQLite scans the
    job's pending rows and the JSON array once per row.
    """
    qn, results = connection.ops.quote_name, table(Result)
    sets = ", ".join(f"{qn(column)} = json_extract(v.value, '$[{i}]')" for i, column in enumerate(COLUMNS, 1))
    sql = f"""
        WITH v AS MATERIALIZED (
            SELECT p.id, j.value FROM json_each(%s) AS j CROSS JOIN {results} AS p
            WHERE p.job_id = %s AND p.position = json_extract(j.value, '$[0]') AND p.outcome = %s
        )
        UPDATE {results} SET {sets}, fetched_at = %s FROM v WHERE {results}.id = v.id
        RETURNING id, position, url
    """
    job = db_value(job_id, Result, "job")
    stamp = connection.ops.adapt_datetimefield_value(at)
    return fetch(sql, [_batch_json(by_position), job, Result.Outcome.PENDING, stamp])


def _batch_json(by_position: Mapping[int, FetchResult]) -> str:
    """The batch as one JSON array of rows, each its VALUE_FIELDS (one parameter whatever the batch size)."""
    return json.dumps(list(map(_values, by_position.values())), ensure_ascii=False)


def _write_generic(job_id: uuid.UUID, by_position: Mapping[int, FetchResult], at: datetime) -> list[Written]:
    """Select the batch's still-pending rows, then update them by primary key.

    Runs inside the caller's transaction, which on SQLite holds the write lock
    (IMMEDIATE), so no other writer can finalize a row between the two steps.
    """
    positions = sorted(by_position)
    written: list[Written] = []
    # Chunked: SQLite builds may cap a statement at 999 parameters.
    for start in range(0, len(positions), 500):
        pending = Result.objects.filter(
            job_id=job_id, outcome=Result.Outcome.PENDING, position__in=positions[start : start + 500]
        )
        written.extend(pending.order_by("position").values_list("id", "position", "url"))
    if written:
        qn = connection.ops.quote_name
        assignments = ", ".join(f"{qn(name)} = %s" for name in (*COLUMNS, "fetched_at"))
        sql = f"UPDATE {table(Result)} SET {assignments} WHERE {qn('id')} = %s"
        stamp = connection.ops.adapt_datetimefield_value(at)
        params = [(*_row_params(by_position[position]), stamp, row_id) for row_id, position, _url in written]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
    return written


def _row_params(result: FetchResult) -> tuple[object, ...]:
    """The COLUMNS values of one result as driver parameters (the headers as their JSON text)."""
    *values, headers = _values(result)[1:]
    return (*values, None if headers is None else json.dumps(headers, ensure_ascii=False))
