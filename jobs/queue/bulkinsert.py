"""Inserting a job's pending Result rows fast: one prepared INSERT, executemany.

`bulk_create` builds and compiles a model instance and a placeholder per
column per row: 100,000 URLs took 13-17 s on the bench machine (the target is
< 3 s for the whole POST). Pending rows differ only in job, position and url,
so every other column's value is computed once from a prototype row (its
defaults and `pre_save`, exactly what `bulk_create` would write, columns added
later included) and the rows go to the driver as plain tuples through one
parameterised statement (sqlite3's executemany), or on PostgreSQL through one
COPY.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from django.db import connection

from jobs.models import Job, Result

CHUNK = 5000
"""Rows per executemany call (bounds the memory of the parameter list)."""
PER_ROW = ("job_id", "position", "url")


def insert_pending_results(job: Job, urls: Sequence[str]) -> None:
    """Insert one pending Result per URL of `job`, positions 0..n-1 (in the caller's transaction)."""
    fields = [field for field in Result._meta.concrete_fields if not field.primary_key]
    prototype = Result(job=job, position=0, url="")
    constant: dict[str, Any] = {
        field.attname: field.get_db_prep_save(field.pre_save(prototype, add=True), connection=connection)
        for field in fields
        if field.attname not in PER_ROW
    }
    qn = connection.ops.quote_name
    columns = ", ".join(qn(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(Result._meta.db_table)} ({columns}) VALUES ({placeholders})"
    job_id = Result._meta.get_field("job").get_db_prep_save(job.pk, connection=connection)
    order = [field.attname for field in fields]
    # One row as a list in column order; each row sets its position and url in it and goes out as a copy.
    template = [job_id if name == "job_id" else constant.get(name) for name in order]
    at_position, at_url = order.index("position"), order.index("url")

    def rows() -> Iterator[tuple[Any, ...]]:
        row = template
        for position, url in enumerate(urls):
            row[at_position] = position
            row[at_url] = url
            yield tuple(row)

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY streams the rows in one statement (psycopg's executemany measured ~10x slower here).
            with cursor.cursor.copy(f"COPY {qn(Result._meta.db_table)} ({columns}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
            return
        source = rows()
        while chunk := list(islice(source, CHUNK)):
            cursor.executemany(sql, chunk)
