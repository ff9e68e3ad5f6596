"""A schedule's run history for its page and API: rows, and a sparkline of failures over runs (SVG points)."""

from __future__ import annotations

from typing import Any

from jobs.monitoring import serialize
from jobs.monitoring_models import Schedule, ScheduleRun

HISTORY_ROWS = 50
SPARK_WIDTH = 200
SPARK_HEIGHT = 40


def recent_runs(schedule: Schedule, *, limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
    """The newest runs first, each as the API shows it."""
    runs = ScheduleRun.objects.filter(schedule=schedule).select_related("job").order_by("-due_at", "-id")[:limit]
    return [serialize.run_to_dict(run) for run in runs]


def sparkline(schedule: Schedule, *, limit: int = HISTORY_ROWS) -> dict[str, Any]:
    """Failed URLs per started run, oldest to newest, as an SVG polyline's points and the values behind them."""
    runs = list(reversed(recent_runs(schedule, limit=limit)))
    return sparkline_of([run["failed"] for run in runs if run["job"] is not None and run["failed"] is not None])


def sparkline_of(values: list[int]) -> dict[str, Any]:
    top = max(values, default=0) or 1
    step = SPARK_WIDTH / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (value / top) * (SPARK_HEIGHT - 4):.1f}" for i, value in enumerate(values)
    )
    return {"points": points, "values": values, "max": max(values, default=0), "width": SPARK_WIDTH,
            "height": SPARK_HEIGHT}  # fmt: skip
