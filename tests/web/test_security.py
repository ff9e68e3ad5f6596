"""Production settings (DJANGO_HTTPS, check --deploy) and the Content-Security-Policy.

The deploy settings are checked in fresh interpreters (settings are read once
at import); the page scan renders every page of the authorization matrix that
answers 200 and parses its HTML for anything a strict CSP would block.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.web.matrix import ALL_HTTP_ROWS, http_client, make_world

BASE_DIR = Path(__file__).resolve().parents[2]
OUR_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DJANGO_", "FETCH_", "BATCHFETCH_", "WORKER_", "JOBS_", "WS_")
SECRET = secrets.token_urlsafe(50)


def run(argv: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run argv in a clean environment (none of our variables) plus `env`."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(OUR_VARIABLES)}
    base.update(DJANGO_SETTINGS_MODULE="project.settings", BATCHFETCH_VAR_DIR=str(tmp_path / "var"))
    return subprocess.run(argv, cwd=BASE_DIR, env={**base, **env}, capture_output=True, text=True, timeout=120)


def check_deploy(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return run(argv, env, tmp_path)


def test_check_deploy_is_clean_with_https_on(tmp_path: Path) -> None:
    completed = check_deploy({"DJANGO_DEBUG": "0", "DJANGO_HTTPS": "1", "DJANGO_SECRET_KEY": SECRET}, tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "System check identified no issues" in completed.stdout


def test_check_deploy_warns_without_https_and_with_debug(tmp_path: Path) -> None:
    plain = check_deploy({"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": SECRET}, tmp_path)
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr
    debug = check_deploy({"DJANGO_DEBUG": "1", "DJANGO_HTTPS": "1", "DJANGO_SECRET_KEY": SECRET}, tmp_path)
    assert debug.returncode != 0 and "security.W018" in debug.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    completed = check_deploy({"DJANGO_DEBUG": "0", "DJANGO_HTTPS": "1"}, tmp_path)
    assert completed.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in completed.stderr


# Requests through Django's test client in a fresh interpreter, under the given environment.
PROBE = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client(HTTP_HOST="localhost")
plain = client.get("/accounts/login/")
proxied = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
cookie = proxied.cookies.get("csrftoken")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "proxied": [proxied.status_code, proxied.get("Strict-Transport-Security")],
    "csrf_cookie_secure": bool(cookie and cookie["secure"]),
}))
"""


def probe(env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    completed = run([sys.executable, "-c", PROBE], {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": SECRET, **env}, tmp_path)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_https_mode_redirects_trusts_the_proxy_header_and_sends_hsts(tmp_path: Path) -> None:
    assert probe({"DJANGO_HTTPS": "1"}, tmp_path) == {
        "plain": [301, "https://localhost/accounts/login/"],
        "proxied": [200, "max-age=31536000; includeSubDomains; preload"],
        "csrf_cookie_secure": True,
    }


def test_without_https_mode_plain_http_works(tmp_path: Path) -> None:
    assert probe({}, tmp_path) == {"plain": [200, None], "proxied": [200, None], "csrf_cookie_secure": False}


# --- Content-Security-Policy -------------------------------------------------------------------------


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.pages = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names and names.get("type") != "application/json":
            self.problems.append(f"inline <script {attrs}>")
        if tag == "style":
            self.problems.append("<style> element")
        if "style" in names:
            self.problems.append(f"style attribute on <{tag}>")
        self.problems.extend(f"{name} handler on <{tag}>" for name in names if name.startswith("on"))
        if tag == "a" and (names.get("href") or "").lower().startswith("javascript:"):
            self.problems.append("javascript: link")


HTML_ROWS = [row for row in ALL_HTTP_ROWS if "GET" in row.answers]


@pytest.mark.django_db(transaction=True)
def test_no_page_has_inline_script_or_style(django_user_model: Any, settings: Any, tmp_path: Path) -> None:
    world = make_world(django_user_model, settings, tmp_path / "media")
    scanned: dict[str, list[str]] = {}
    for row in HTML_ROWS:
        for role in ("owner", "staff"):
            if row.answers["GET"][role] != 200:
                continue
            path = row.path.format(**world["ids"])
            response = http_client(world, role).get(path)
            if not response["Content-Type"].startswith("text/html"):
                continue
            parser = InlineCode()
            parser.feed(response.content.decode())
            scanned[f"{role} {path}"] = parser.problems
    # The pages that matter most are among them, with their live scripts.
    for page in ("owner /", f"owner /jobs/{world['ids']['job']}/", "staff /admin/", "staff /admin/jobs/job/"):
        assert page in scanned
    assert len(scanned) >= 25
    assert {page: problems for page, problems in scanned.items() if problems} == {}


@pytest.mark.django_db
def test_form_error_and_token_pages_have_no_inline_code(admin_client: Client, django_user_model: Any) -> None:
    pages = [
        admin_client.post("/", {"urls": "not a url"}),  # the dashboard's error summary
        admin_client.post("/admin/jobs/apitoken/add/", {"user": django_user_model.objects.get().pk, "name": "x"}),
    ]
    for page in pages:
        parser = InlineCode()
        parser.feed(page.content.decode())
        assert parser.problems == []


@pytest.mark.django_db
def test_every_response_carries_the_strict_policy(admin_client: Client) -> None:
    for path in ("/", "/admin/", "/api/jobs/", "/api/nothing/", "/accounts/login/"):
        policy = admin_client.get(path, HTTP_HOST="localhost:8000")["Content-Security-Policy"]
        assert policy == (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
            "base-uri 'self'; form-action 'self'; frame-ancestors 'none'; "
            "connect-src 'self' ws://localhost:8000 wss://localhost:8000"
        ), path
