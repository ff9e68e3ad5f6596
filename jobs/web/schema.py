"""GET /api/schema/: the OpenAPI 3.1 description of the JSON API (jobs/web/openapi.json).

Hand-written and kept honest by tests/test_schema.py (every API route is
described, and real responses validate against it). The submission limits in
it follow the current settings.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from django.http import HttpRequest, JsonResponse

from jobs import conf

DOCUMENT = Path(__file__).with_name("openapi.json")


@cache
def _document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def document() -> dict[str, Any]:
    """The description, with the submission limits of the current settings."""
    data = copy.deepcopy(_document())
    urls = data["components"]["schemas"]["Submission"]["properties"]["urls"]
    urls["maxItems"] = conf.get("JOBS_MAX_URLS")
    urls["items"]["maxLength"] = conf.get("JOBS_MAX_URL_LENGTH")
    return data


def openapi(request: HttpRequest) -> JsonResponse:
    """Public: the description holds nothing secret, and clients need it before they have a token."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": f"method {request.method} not allowed"}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    return JsonResponse(document(), json_dumps_params={"ensure_ascii": False})
