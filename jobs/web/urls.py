"""HTTP routes: the pages and the JSON API."""

from __future__ import annotations

from django.urls import path, re_path

from jobs.web import (
    api,
    api_base,
    api_exports,
    api_live,
    api_monitoring,
    downloads,
    result_detail,
    result_page,
    schema,
    views,
    views_monitoring,
)

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/results/<int:position>/", result_page.result_detail, name="result_detail"),
    path("schedules/", views_monitoring.schedule_list, name="schedule_list"),
    path("schedules/<int:schedule_id>/", views_monitoring.schedule_detail, name="schedule_detail"),
    path("account/", views_monitoring.account, name="account"),
    # API job ids are str, not uuid: a malformed id gets the API's JSON 404, not an HTML page.
    path("api/jobs/", api.jobs, name="api_jobs"),
    path("api/jobs/<str:job_id>/", api.job, name="api_job"),
    path("api/jobs/<str:job_id>/cancel/", api.job_cancel, name="api_job_cancel"),
    path("api/jobs/<str:job_id>/pause/", api_live.job_pause, name="api_job_pause"),
    path("api/jobs/<str:job_id>/resume/", api_live.job_resume, name="api_job_resume"),
    path("api/jobs/<str:job_id>/rerun-failed/", api_live.job_rerun_failed, name="api_job_rerun_failed"),
    path("api/jobs/<str:job_id>/stats/", api_live.job_stats, name="api_job_stats"),
    path("api/jobs/<str:job_id>/results/", api.job_results, name="api_job_results"),
    path("api/jobs/<str:job_id>/results.jsonl", api_exports.job_results_jsonl, name="api_job_results_jsonl"),
    path("api/jobs/<str:job_id>/results.csv", api_exports.job_results_csv, name="api_job_results_csv"),
    path("api/jobs/<str:job_id>/results/<int:position>/", result_detail.result_detail, name="api_result_detail"),
    path("api/jobs/<str:job_id>/results/<int:position>/body", downloads.result_body, name="api_result_body"),
    path("api/jobs/<str:job_id>/bodies.zip", downloads.job_bodies_zip, name="api_job_bodies_zip"),
    path("api/jobs/<str:job_id>/changes/", api_monitoring.job_changes, name="api_job_changes"),
    path("api/jobs/<str:job_id>/changes.csv", api_monitoring.job_changes_csv, name="api_job_changes_csv"),
    path("api/schedules/", api_monitoring.schedule_list, name="api_schedules"),
    path("api/schedules/<str:schedule_id>/", api_monitoring.schedule_detail, name="api_schedule"),
    path("api/schedules/<str:schedule_id>/run/", api_monitoring.schedule_run, name="api_schedule_run"),
    path("api/schedules/<str:schedule_id>/runs/", api_monitoring.schedule_runs, name="api_schedule_runs"),
    path("api/schema/", schema.openapi, name="api_schema"),
    re_path(r"^api/", api_base.not_found, name="api_not_found"),
]
