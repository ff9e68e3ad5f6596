"""The authorization matrix's rows (every HTTP and WebSocket route x who asks -> the answer) and its world.

Shared by tests/web/test_authorization.py, which checks every row (and that
every route has one; it explains the roles and answers), and the CSP page scan
of tests/web/test_security.py, which renders every page that answers 200.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from jobs.models import Job, Result
from jobs.monitoring_models import Delivery, Schedule
from jobs.web import tokens
from tests.conftest import MEMORY_LAYER

ROLES = ("anon", "owner", "other", "staff", "token")
LOGIN = "login"


@dataclass(frozen=True)
class Row:
    """One route: a concrete path (formatted with the world's ids) and the answers per method and role."""

    pattern: str
    path: str
    answers: dict[str, dict[str, int | str]]
    data: dict[str, Any] = field(default_factory=dict)


def roles(anon: int | str, owner: int | str, other: int | str, staff: int | str, token: int | str) -> dict[str, Any]:
    return dict(zip(ROLES, (anon, owner, other, staff, token), strict=True))


PAGE_OWN = roles(LOGIN, 200, 200, 200, LOGIN)  # a logged-in page of one's own
JOB_PAGE = roles(LOGIN, 200, 404, 404, LOGIN)
API_OWN = roles(401, 200, 200, 200, 200)
API_JOB = roles(401, 200, 404, 404, 200)
PUBLIC = roles(200, 200, 200, 200, 200)
ADMIN_ONLY = roles(LOGIN, LOGIN, LOGIN, 200, LOGIN)
SUBMIT = json.dumps({"urls": ["http://a.example/"]})
REFUSED = roles(*[405] * 5)

HTTP_ROWS = [
    Row("", "/", {"GET": PAGE_OWN, "POST": roles(LOGIN, 302, 302, 302, LOGIN)}, {"urls": "http://a.example/"}),
    Row("jobs/<uuid:job_id>/", "/jobs/{job}/", {"GET": JOB_PAGE, "POST": roles(LOGIN, 302, 404, 404, LOGIN)},
        {"action": "cancel"}),
    Row("jobs/<uuid:job_id>/results/<int:position>/", "/jobs/{job}/results/0/", {"GET": JOB_PAGE, "POST": REFUSED}),
    Row("api/jobs/", "/api/jobs/", {"GET": API_OWN, "POST": roles(401, 201, 201, 201, 201), "PUT": roles(*[405] * 5)},
        {"json": SUBMIT}),
    Row("api/jobs/<str:job_id>/", "/api/jobs/{job}/", {"GET": API_JOB, "POST": roles(*[405] * 5)}),
    Row("api/jobs/<str:job_id>/cancel/", "/api/jobs/{job}/cancel/",
        {"POST": roles(401, 202, 404, 404, 202), "GET": roles(*[405] * 5)}),
    # The world's job is queued: a pause leaves it paused (pausing it again is still a 202), a resume leaves a
    # queued job queued (202); its one row failed, so each re-run is a new job (201).
    Row("api/jobs/<str:job_id>/pause/", "/api/jobs/{job}/pause/",
        {"POST": roles(401, 202, 404, 404, 202), "GET": REFUSED}),
    Row("api/jobs/<str:job_id>/resume/", "/api/jobs/{job}/resume/",
        {"POST": roles(401, 202, 404, 404, 202), "GET": REFUSED}),
    Row("api/jobs/<str:job_id>/rerun-failed/", "/api/jobs/{job}/rerun-failed/",
        {"POST": roles(401, 201, 404, 404, 201), "GET": REFUSED}),
    Row("api/jobs/<str:job_id>/stats/", "/api/jobs/{job}/stats/", {"GET": API_JOB, "POST": REFUSED}),
    Row("api/jobs/<str:job_id>/results/", "/api/jobs/{job}/results/", {"GET": API_JOB}),
    Row("api/jobs/<str:job_id>/results.jsonl", "/api/jobs/{job}/results.jsonl", {"GET": API_JOB}),
    Row("api/jobs/<str:job_id>/results.csv", "/api/jobs/{job}/results.csv", {"GET": API_JOB}),
    Row("api/jobs/<str:job_id>/results/<int:position>/", "/api/jobs/{job}/results/0/",
        {"GET": API_JOB, "POST": REFUSED}),
    # Row 0 has a saved body (see make_world).
    Row("api/jobs/<str:job_id>/results/<int:position>/body", "/api/jobs/{job}/results/0/body",
        {"GET": API_JOB, "POST": REFUSED}),
    Row("api/jobs/<str:job_id>/bodies.zip", "/api/jobs/{job}/bodies.zip", {"GET": API_JOB, "POST": REFUSED}),
    Row("favicon.ico", "/favicon.ico", {"GET": roles(*[301] * 5)}),
    Row("schedules/", "/schedules/", {"GET": PAGE_OWN}),
    Row("schedules/<int:schedule_id>/", "/schedules/{schedule}/", {"GET": JOB_PAGE}),
    Row("account/", "/account/", {"GET": PAGE_OWN}),
    Row("api/jobs/<str:job_id>/changes/", "/api/jobs/{job}/changes/", {"GET": API_JOB, "POST": REFUSED}),
    Row("api/jobs/<str:job_id>/changes.csv", "/api/jobs/{job}/changes.csv", {"GET": API_JOB}),
    Row("api/schedules/", "/api/schedules/", {"GET": API_OWN, "POST": roles(401, 201, 201, 201, 201), "PUT": REFUSED},
        {"json": json.dumps({"urls": ["http://a.example/"], "interval": 60})}),
    Row("api/schedules/<str:schedule_id>/", "/api/schedules/{schedule}/", {"GET": API_JOB, "POST": REFUSED}),
    # The owner's run now queues a job; the token's (the same user) is then skipped: the previous run goes on.
    Row("api/schedules/<str:schedule_id>/run/", "/api/schedules/{schedule}/run/",
        {"POST": roles(401, 201, 404, 404, 409), "GET": REFUSED}),
    Row("api/schedules/<str:schedule_id>/runs/", "/api/schedules/{schedule}/runs/", {"GET": API_JOB, "POST": REFUSED}),
    Row("api/schema/", "/api/schema/", {"GET": PUBLIC, "POST": roles(*[405] * 5)}),
    Row("^api/", "/api/nothing-here/", {"GET": roles(*[404] * 5)}),
    Row("accounts/login/", "/accounts/login/", {"GET": PUBLIC}),
    Row("accounts/logout/", "/accounts/logout/", {"GET": roles(*[405] * 5), "POST": roles(*[LOGIN] * 5)}),
    Row("accounts/password_change/", "/accounts/password_change/", {"GET": PAGE_OWN}),
    Row("accounts/password_change/done/", "/accounts/password_change/done/", {"GET": PAGE_OWN}),
    Row("accounts/password_reset/", "/accounts/password_reset/", {"GET": PUBLIC}),
    Row("accounts/password_reset/done/", "/accounts/password_reset/done/", {"GET": PUBLIC}),
    Row("accounts/reset/<uidb64>/<token>/", "/accounts/reset/MQ/bad-token/", {"GET": PUBLIC}),
    Row("accounts/reset/done/", "/accounts/reset/done/", {"GET": PUBLIC}),
    Row("admin/", "/admin/", {"GET": ADMIN_ONLY}),
    Row("admin/login/", "/admin/login/", {"GET": roles(200, 200, 200, 302, 200)}),
    # Logging out is POST-only; the admin first sends non-staff to its index (which then asks them to log in).
    Row("admin/logout/", "/admin/logout/", {"GET": roles(302, 302, 302, 405, 302)}),
    Row("admin/password_change/", "/admin/password_change/", {"GET": ADMIN_ONLY}),
    Row("admin/password_change/done/", "/admin/password_change/done/", {"GET": ADMIN_ONLY}),
    Row("admin/autocomplete/", "/admin/autocomplete/", {"GET": roles(LOGIN, LOGIN, LOGIN, 403, LOGIN)}),
    Row("admin/jsi18n/", "/admin/jsi18n/", {"GET": ADMIN_ONLY}),
    Row("admin/r/<path:content_type_id>/<path:object_id>/", "/admin/r/{job_type}/{job}/",
        {"GET": roles(LOGIN, LOGIN, LOGIN, 404, LOGIN)}),
    Row("admin/^(?P<app_label>jobs|auth)/$", "/admin/jobs/", {"GET": ADMIN_ONLY}),
    Row("admin/(?P<url>.*)$", "/admin/no/such/page/", {"GET": roles(LOGIN, LOGIN, LOGIN, 404, LOGIN)}),
    Row("admin/auth/user/<id>/password/", "/admin/auth/user/{owner}/password/", {"GET": ADMIN_ONLY}),
]

# Admin views a model's admin refuses even to staff: jobs come from submissions, results from the worker.
ADMIN_REFUSED = {("job", "add"), ("result", "add"), ("result", "delete"), ("schedule", "add"), ("delivery", "add")}


def admin_model_rows() -> list[Row]:
    """The six routes of every registered ModelAdmin, all behind the admin's staff check."""
    rows = []
    for model in admin.site._registry:
        meta = model._meta
        base = f"admin/{meta.app_label}/{meta.model_name}/"
        concrete = f"/{base}{{{meta.model_name}}}/"
        for suffix, view in (("", "changelist"), ("add/", "add"), ("<path:object_id>/history/", "history"),
                             ("<path:object_id>/delete/", "delete"), ("<path:object_id>/change/", "change"),
                             ("<path:object_id>/", "redirect")):
            staff = 403 if (meta.model_name, view) in ADMIN_REFUSED else 302 if view == "redirect" else 200
            path = f"/{base}" + suffix.replace("<path:object_id>/", concrete.removeprefix(f"/{base}"))
            rows.append(Row(base + suffix, path, {"GET": roles(LOGIN, LOGIN, LOGIN, staff, LOGIN)}))
    return rows


ALL_HTTP_ROWS = HTTP_ROWS + admin_model_rows()

WS_ROWS = [
    Row("ws/jobs/", "/ws/jobs/", {"CONNECT": roles(403, 200, 200, 200, 403)}),
    Row("ws/jobs/<str:job_id>/", "/ws/jobs/{job}/", {"CONNECT": roles(403, 200, 403, 403, 403)}),
    Row("", "/ws/nothing/", {"CONNECT": roles(*[403] * 5)}),
]


# --- the world ------------------------------------------------------------------------------------


def make_world(django_user_model: Any, settings: Any, media_root: Path) -> dict[str, Any]:
    """ann owns a queued job (with one failed result row whose body was saved) and a token; bob is another
    user; root is staff."""
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = media_root
    ann = django_user_model.objects.create_user(username="ann", password="x")
    bob = django_user_model.objects.create_user(username="bob", password="x")
    staff = django_user_model.objects.create_superuser(username="root", password="x")
    job = Job.objects.create(owner=ann, concurrency=1, timeout=1.0, total=1, failed=1, save_bodies=True)
    body = default_storage.save(f"bodies/{job.pk}/0", ContentFile(b"not found"))
    result = Result.objects.create(job=job, position=0, url="http://a.example/", outcome="failed", status_code=404,
                                   error="http_status: 404 Not Found", error_class="http_status", body=body)
    new = tokens.create_token(user=ann)
    schedule = Schedule.objects.create(owner=ann, urls=["http://a.example/"], options={"concurrency": 1, "timeout": 1.0},
                                       interval=3600)  # fmt: skip
    delivery = Delivery.objects.create(job=job, channel="webhook", target="http://hooks.example/", body="{}")
    ids = {
        "schedule": schedule.pk, "delivery": delivery.pk,
        "job": job.pk, "result": result.pk, "apitoken": new.token.pk, "owner": ann.pk, "user": ann.pk,
        "group": Group.objects.create(name="g").pk, "job_type": ContentType.objects.get_for_model(Job).pk,
    }
    return {"users": {"owner": ann, "other": bob, "staff": staff}, "secret": new.secret, "ids": ids}


def http_client(world: dict[str, Any], role: str) -> Client:
    if role == "token":
        return Client(headers={"Authorization": f"Bearer {world['secret']}"})
    client = Client()
    if role in world["users"]:
        client.force_login(world["users"][role])
    return client
