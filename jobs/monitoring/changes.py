"""What changed since the previous run of a list: per URL, computed in the database.

`compare()` fills the Change rows of a job with one INSERT ... SELECT per batch
of positions (CHANGES_BATCH), joining the job's final rows with the previous
run's on the URL, so a 100,000-URL comparison is a few queries, not 100,000
Python steps (bench/changes.py measures it). A URL counts once, under the first
kind in this order that fits it:

- new_failure: it succeeded last time and failed now;
- recovered: it failed last time and succeeded now;
- status_changed: the status code differs (none for a network error);
- content_changed: both bodies were read completely and their sha256 differ;
- unchanged: none of these.

Only URLs fetched in both runs are compared (not those cancelled, nor URLs the
previous run did not have); a URL listed twice is compared with its first
occurrence in the previous run.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from jobs.models import Job, Result
from jobs.monitoring_models import Change

CHANGES_BATCH = 50_000
"""Positions compared per query: small enough for one statement, large enough for few round trips."""
KINDS = tuple(Change.Kind.values)

_COMPARE = """
INSERT INTO {change} (job_id, position, url, kind, old_outcome, new_outcome, old_status, new_status,
                      old_sha256, new_sha256)
SELECT n.job_id, n.position, n.url,
       CASE
         WHEN n.outcome = 'failed' AND o.outcome = 'succeeded' THEN 'new_failure'
         WHEN n.outcome = 'succeeded' AND o.outcome = 'failed' THEN 'recovered'
         WHEN COALESCE(n.status_code, 0) <> COALESCE(o.status_code, 0) THEN 'status_changed'
         WHEN n.sha256 <> '' AND o.sha256 <> '' AND n.sha256 <> o.sha256 THEN 'content_changed'
         ELSE 'unchanged'
       END,
       o.outcome, n.outcome, o.status_code, n.status_code, o.sha256, n.sha256
FROM {result} n
CROSS JOIN (SELECT url, MIN(position) AS position FROM {result}
            WHERE job_id = %s AND outcome IN ('succeeded', 'failed') GROUP BY url) f
CROSS JOIN {result} o
WHERE n.job_id = %s AND n.position >= %s AND n.position < %s AND n.outcome IN ('succeeded', 'failed')
  AND f.url = n.url AND o.job_id = %s AND o.position = f.position
"""
# CROSS JOIN: SQLite then keeps this order (the batch's rows outside, an automatic index on f.url inside),
# instead of scanning the batch once per URL of the previous run (quadratic: 9 s for 5,000 URLs).
# PostgreSQL plans a CROSS JOIN with these conditions like any inner join (see _hash_joins).


def compare(job: Job, previous: Job) -> dict[str, int]:
    """Store `job`'s Change rows against `previous` (replacing any) and return the counts per kind."""
    sql = _COMPARE.format(change=Change._meta.db_table, result=Result._meta.db_table)
    new_id, old_id = _db_id(job.pk), _db_id(previous.pk)
    with transaction.atomic(), connection.cursor() as cursor:
        Change.objects.filter(job=job).delete()
        with _hash_joins(cursor):
            for start in range(0, max(job.total, 1), CHANGES_BATCH):
                cursor.execute(sql, [old_id, new_id, start, start + CHANGES_BATCH, old_id])
        return counts(job.pk)


@contextlib.contextmanager
def _hash_joins(cursor: Any) -> Iterator[None]:
    """On PostgreSQL, no nested loops for the comparison, only until it is done (SET LOCAL, then back).

    A job that just ended has rows autovacuum has not analysed yet: estimating one row per side, the
    planner nests the GROUP BY of the previous run under every row of the batch, which is quadratic
    (30 s for 20,000 URLs, bench/changes.py); hash joins do it in well under a second at any size.
    """
    if connection.vendor != "postgresql":
        yield
        return
    cursor.execute("SET LOCAL enable_nestloop = off")
    try:
        yield
    finally:
        cursor.execute("SET LOCAL enable_nestloop TO DEFAULT")


def counts(job_id: uuid.UUID) -> dict[str, int]:
    """The job's Change rows per kind, every kind present (0 when none)."""
    found = dict(Change.objects.filter(job_id=job_id).values_list("kind").annotate(n=Count("id")).order_by())
    return {kind: int(found.get(kind, 0)) for kind in KINDS}


def changed(change_counts: dict[str, int] | None) -> int:
    """URLs that changed in any way (every kind but unchanged)."""
    return sum(n for kind, n in (change_counts or {}).items() if kind != Change.Kind.UNCHANGED)


def _db_id(pk: uuid.UUID) -> object:
    """A job id as the database backend stores it (SQLite: hex text; PostgreSQL: uuid)."""
    return Job._meta.pk.get_db_prep_value(pk, connection)  # type: ignore[union-attr]
