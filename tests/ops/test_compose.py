"""docker-compose.yml: every long-running service has a healthcheck, and starts after what it needs is healthy.

The structure is read with PyYAML (anchors and merge keys resolved, as compose
does). Where the `docker compose` plugin is installed, `docker compose config`
validates the file against the Compose specification as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
LONG_RUNNING = ("postgres", "redis", "web", "worker")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def command_text(test: list[str] | str) -> str:
    return test if isinstance(test, str) else " ".join(test)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    assert set(LONG_RUNNING) <= set(services)
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert {"interval", "timeout", "retries"} <= set(check), name
    assert "/readyz" in command_text(services["web"]["healthcheck"]["test"])
    worker_check = command_text(services["worker"]["healthcheck"]["test"])
    assert "runworker --check" in worker_check
    # The worker touches the file its check reads.
    health_file = worker_check.split("--health-file", 1)[1].split()[0]
    assert command_text(services["worker"]["command"]).count(f"--health-file {health_file}") == 1


def test_the_app_services_start_once_their_dependencies_are_healthy(services: dict[str, Any]) -> None:
    for name in ("migrate", "web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="the docker compose plugin is not installed here (the structure is checked above)",
)
def test_docker_compose_config_validates() -> None:
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "DJANGO_SECRET_KEY": "x" * 50, "POSTGRES_PASSWORD": "p"}
    checked = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
