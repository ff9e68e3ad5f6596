"""Validate API responses against the published OpenAPI description (jobs/web/openapi.json)."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator

from jobs.web import schema

DOCUMENT = schema.document()


def openapi_path(django_pattern: str) -> str:
    """`api/jobs/<str:job_id>/` → `/api/jobs/{job_id}/`."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", django_pattern)


def _resolve(item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = DOCUMENT
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        item = node
    return item


def response_content(path: str, method: str, status: int) -> dict[str, Any]:
    """The documented content of that response (media type → media object); KeyError if undocumented.

    A method the path does not list must be refused: 405, described once in components.
    """
    operation = DOCUMENT["paths"][path].get(method.lower())
    if operation is None:
        if status != 405:
            raise KeyError(method)
        response = _resolve({"$ref": "#/components/responses/MethodNotAllowed"})
    else:
        response = _resolve(operation["responses"][str(status)])
    return response.get("content", {})


def assert_documented(path: str, method: str, response: Any) -> None:
    """Fail unless the response's status and media type are documented for the operation, and its JSON validates."""
    try:
        content = response_content(path, method, response.status_code)
    except KeyError:
        raise AssertionError(f"{method} {path}: status {response.status_code} is not documented") from None
    media_type = response["Content-Type"].partition(";")[0].strip()
    if content:
        assert media_type in content, f"{method} {path} {response.status_code}: {media_type} is not documented"
    if "application/json" not in content:
        return
    body_schema = content["application/json"]["schema"]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    # "components" beside the schema lets its "#/components/..." references resolve.
    validator = Draft202012Validator({**body_schema, "components": DOCUMENT["components"]})
    errors = sorted(validator.iter_errors(json.loads(response.content)), key=str)
    assert not errors, f"{method} {path} {response.status_code}: {errors[0].message}"
