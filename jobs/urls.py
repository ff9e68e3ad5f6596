"""HTTP routes: the pages and the JSON API."""

from __future__ import annotations

from django.urls import path, re_path

from . import api, schema, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job_detail"),
    # API job ids are str, not uuid: a malformed id gets the API's JSON 404, not an HTML page.
    path("api/jobs/", api.jobs, name="api_jobs"),
    path("api/jobs/<str:job_id>/", api.job, name="api_job"),
    path("api/jobs/<str:job_id>/cancel/", api.job_cancel, name="api_job_cancel"),
    path("api/jobs/<str:job_id>/results/", api.job_results, name="api_job_results"),
    path("api/jobs/<str:job_id>/results.jsonl", api.job_results_jsonl, name="api_job_results_jsonl"),
    path("api/jobs/<str:job_id>/results.csv", api.job_results_csv, name="api_job_results_csv"),
    path("api/schema/", schema.openapi, name="api_schema"),
    re_path(r"^api/", api.not_found, name="api_not_found"),
]
