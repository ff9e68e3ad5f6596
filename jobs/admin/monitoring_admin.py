"""Admin: schedules (enable, disable, run now), their runs, and notification deliveries with their attempts.

A schedule's URL list and options are edited through the API or its page (they
are validated there); the admin switches schedules on and off, runs them, and
shows what was sent to whom and how each try went.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from jobs.monitoring import schedules
from jobs.monitoring_models import Delivery, DeliveryAttempt, Schedule, ScheduleRun
from jobs.progress import groups


class ScheduleRunInline(admin.TabularInline):
    model = ScheduleRun
    fields = ("due_at", "status", "manual", "job", "reason")
    readonly_fields = fields
    extra = 0
    max_num = 0
    ordering = ("-due_at",)
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduleRun]:
        return super().get_queryset(request).select_related("job")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "every", "enabled", "url_count", "next_run_at", "created_at")
    list_filter = ("enabled", "owner")
    list_select_related = ("owner",)
    search_fields = ("name",)
    actions = ("enable", "disable", "run_now")
    fields = ("name", "owner", "enabled", "cron", "interval", "timezone", "next_run_at", "url_count",
              "options", "notify_url", "notify_on", "notify_email", "created_at")  # fmt: skip
    readonly_fields = ("owner", "cron", "interval", "timezone", "next_run_at", "url_count", "options",
                       "notify_url", "notify_on", "notify_email", "created_at", "enabled")  # fmt: skip
    inlines = (ScheduleRunInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created through the API or the schedules page, which validate the list and options

    @admin.display(description="URLs")
    def url_count(self, schedule: Schedule) -> int:
        return len(schedule.urls)

    @admin.action(description="Enable selected schedules")
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        count = 0
        for schedule in queryset.filter(enabled=False):
            schedule.enabled = True
            schedule.next_run_at = None
            schedule.next_run_at = schedules.next_tick(schedule, after=timezone.now())
            schedule.save(update_fields=["enabled", "next_run_at", "updated_at"])
            count += 1
        self.message_user(request, f"Enabled {count} schedule(s).", messages.SUCCESS)

    @admin.action(description="Disable selected schedules")
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        count = queryset.filter(enabled=True).update(enabled=False, next_run_at=None, updated_at=timezone.now())
        self.message_user(request, f"Disabled {count} schedule(s).", messages.SUCCESS)

    @admin.action(description="Run selected schedules now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        started = skipped = 0
        for schedule in queryset:
            run = schedules.run_now(schedule)
            if run.job is None:
                skipped += 1
            else:
                started += 1
        if started:
            groups.wake_workers_sync()
        level = messages.SUCCESS if started else messages.WARNING
        self.message_user(request, f"Started {started} run(s); skipped {skipped} (previous run still going).", level)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("at", "status_code", "elapsed_ms", "error")
    readonly_fields = fields
    extra = 0
    max_num = 0

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("__str__", "job", "channel", "status", "attempts", "next_attempt_at", "created_at")
    list_filter = ("status", "channel")
    list_select_related = ("job",)
    search_fields = ("target",)
    readonly_fields = ("job", "channel", "target", "events", "body", "status", "attempts", "next_attempt_at",
                       "created_at", "delivered_at", "last_error")  # fmt: skip
    inlines = (DeliveryAttemptInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
