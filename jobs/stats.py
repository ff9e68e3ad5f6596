"""Aggregates of a job's results for the live page and the CLI: cheap GROUP BYs, never a row scan in Python.

`breakdown()` counts the final rows by outcome, status code and error class
in one GROUP BY; `throughput()` counts the fetched rows per second of
`fetched_at` in another. Both use the (job, outcome) / (job, -fetched_at)
indexes and return plain dicts, ready for JSON.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Case, CharField, Count, Q, Value, When
from django.db.models.functions import StrIndex, Substr, TruncSecond

from jobs.models import Result

FETCHED = (Result.Outcome.SUCCEEDED, Result.Outcome.FAILED)
# Error texts are "<class>: <message>" (jobs.engine.errors._describe); the class is what the page groups by.
_ERROR_CLASS = Case(
    When(Q(error="") | ~Q(error__contains=":"), then=Value("")),
    default=Substr("error", 1, StrIndex("error", Value(":")) - 1),
    output_field=CharField(),
)


def breakdown(job_id: uuid.UUID) -> dict[str, Any]:
    """{"status_codes": [{"code", "count"}], "errors": [{"class", "count"}]}, biggest first.

    Status codes cover every fetched row that got a response; error classes
    cover the failed rows (`http_status` for responses >= 400, `timeout`,
    `connect`, `dns`, ...).
    """
    groups = (
        Result.objects.filter(job_id=job_id, outcome__in=FETCHED)
        .values_list("outcome", "status_code")
        .annotate(error_class=_ERROR_CLASS, count=Count("id"))
        .values_list("outcome", "status_code", "error_class", "count")
        .order_by()
    )
    codes: dict[int, int] = {}
    errors: dict[str, int] = {}
    for outcome, status_code, error_class, count in groups:
        if status_code is not None:
            codes[status_code] = codes.get(status_code, 0) + count
        if outcome == Result.Outcome.FAILED:
            name = error_class or "other"
            errors[name] = errors.get(name, 0) + count
    return {
        "status_codes": [{"code": code, "count": n} for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))],
        "errors": [{"class": name, "count": n} for name, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))],
    }


def throughput(job_id: uuid.UUID) -> list[dict[str, Any]]:
    """[{"t": ISO second, "n": URLs fetched in that second}], oldest first (seconds with none are left out)."""
    rows = (
        Result.objects.filter(job_id=job_id, outcome__in=FETCHED, fetched_at__isnull=False)
        .annotate(second=TruncSecond("fetched_at"))
        .values_list("second")
        .annotate(n=Count("id"))
        .values_list("second", "n")
        .order_by("second")
    )
    return [{"t": second.isoformat(), "n": n} for second, n in rows]
