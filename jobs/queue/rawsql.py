"""Raw SQL for the worker's hot paths (queue.record_results and claim_chunk, resultwrite).

They run a handful of one-table statements per call, several times a second:
as raw SQL each costs ~25 µs of CPU, where building and compiling the ORM
query cost ~230 µs. Values go in adapted as their column takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    """`model`'s table name, quoted for this database."""
    return connection.ops.quote_name(model._meta.db_table)


def db_value(value: Any, model: type[models.Model], field: str) -> Any:
    """`value` as `model.field`'s column takes it (SQLite stores UUIDs as hex text)."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)


def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows `sql` selects (or returns), as tuples."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any]) -> int:
    """Run `sql`; return the rows it changed (the cursor's rowcount)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
