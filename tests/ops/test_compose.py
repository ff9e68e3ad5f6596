"""docker-compose.yml: every long-running service has a healthcheck, and starts after what it needs is healthy.

The structure is read with PyYAML (anchors and merge keys resolved, as compose
does), and `compose config` validates the file against the Compose specification:
the `docker compose` plugin where it is installed, else Debian's docker-compose.
"""

from __future__ import annotations

import re
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


def compose_command() -> list[str]:
    """`docker compose` where the plugin is installed, else Debian's docker-compose (`make test` installs it)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "neither `docker compose` nor docker-compose is here (make test installs it)"
    return ["docker-compose"]


def compose_config(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`compose config` of `path`, run from the repository with only the required secrets set.

    docker-compose 1.29 predates the top-level `name:` of the Compose specification: for it the
    name moves to `-p` and the rest of the file is validated unchanged.
    """
    command = compose_command()
    text = path.read_text()
    if command == ["docker-compose"]:
        name = yaml.safe_load(text).get("name", "batchfetch")
        path = tmp_path / "docker-compose.yml"
        path.write_text(re.sub(r"(?m)^name: .*$", "", text))
        command = [*command, "-p", name]
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "DJANGO_SECRET_KEY": "x" * 50, "POSTGRES_PASSWORD": "p"}
    argv = [*command, "-f", str(path), "--project-directory", str(COMPOSE.parent), "config"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    checked = compose_config(COMPOSE, tmp_path)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(checked.stdout)["services"]
    for name in LONG_RUNNING:
        assert resolved[name]["healthcheck"]["test"], name
    assert resolved["worker"]["environment"]["DJANGO_SECRET_KEY"] == "x" * 50


def test_docker_compose_config_refuses_a_file_off_the_specification(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "docker-compose.yml"
    broken.parent.mkdir()
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthcheck:\n      every: 5s\n", 1))
    checked = compose_config(broken, tmp_path)
    assert checked.returncode != 0
    assert "every" in checked.stderr
