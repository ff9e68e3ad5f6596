"""Inserting many rows fast: one prepared INSERT, executemany (COPY on PostgreSQL).

`bulk_create` builds and compiles a model instance and a placeholder per
column per row: 100,000 URLs took 13-17 s on the bench machine (the target is
< 3 s for the whole POST), and 10,000 request lines 0.27-0.31 s. Here the
rows go to the driver as plain tuples through one parameterised statement
(sqlite3's executemany), or on PostgreSQL through one COPY (`insert_rows`).
Pending Result rows differ only in job, position and url, so every other
column's value is computed once from a prototype row (its defaults and
`pre_save`, exactly what `bulk_create` would write, columns added later
included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from django.db import connection
from django.db.models import Model

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

    insert_rows(Result, [field.column for field in fields], rows())


def insert_rows(model: type[Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Insert `rows` (values in `columns` order, as the driver takes them) in the caller's transaction."""
    qn = connection.ops.quote_name
    table, names = qn(model._meta.db_table), ", ".join(map(qn, columns))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY streams the rows in one statement (psycopg's executemany measured ~10x slower here).
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
        source = iter(rows)
        while chunk := list(islice(source, CHUNK)):
            cursor.executemany(sql, chunk)
