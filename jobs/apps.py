from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Batch fetch jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import (
            bodies,  # noqa: F401  (connects the receiver that deletes a deleted job's bodies)
            checks,  # noqa: F401  (registers system checks)
        )
