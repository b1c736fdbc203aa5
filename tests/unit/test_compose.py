"""docker-compose.yml (no Docker engine runs here, so the file itself is checked): healthchecks, start order,
every Tandem service runs a `tandem` command the suite exercises, and no secret is written inline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
# Commands the test suite runs itself (tests/integration/test_cli.py, test_service.py, test_scheduler.py,
# test_stream_ingest.py).
EXERCISED = {("tandem", "apply"), ("tandem", "scheduler"), ("tandem", "serve"), ("tandem", "stream")}


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_stores_have_healthchecks_and_tandem_waits_for_them() -> None:
    """postgres and redis have healthchecks; migrate waits for both healthy; the rest wait for migrate."""
    services = _compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("scheduler", "stream", "service"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_roles_and_replicas() -> None:
    """One scheduler, two API replicas with a readiness healthcheck, a one-shot migration."""
    services = _compose()["services"]
    assert services["service"]["deploy"]["replicas"] == 2
    assert "replicas" not in services["scheduler"].get("deploy", {})
    assert "/health/ready" in " ".join(services["service"]["healthcheck"]["test"])
    assert services["migrate"]["restart"] == "no"


def test_every_tandem_command_is_one_the_suite_runs() -> None:
    """Each Tandem service's command is `tandem apply`, `tandem scheduler`, `tandem stream` or `tandem serve`."""
    for name in ("migrate", "scheduler", "stream", "service"):
        command = _compose()["services"][name]["command"]
        assert tuple(command[:2]) in EXERCISED, (name, command)


def test_no_secret_inline() -> None:
    """Passwords and keys come from .env: the compose file only references variables, and .env is ignored."""
    text = COMPOSE.read_text()
    for match in re.finditer(r"(?i)(password|secret|api_keys?)\s*[:=]\s*(\S+)", text):
        assert match.group(2).startswith("${"), match.group(0)
    assert "${POSTGRES_PASSWORD}" in text
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    example = (PROJECT_ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=change-me" in example


def test_every_tandem_service_gets_the_model_signing_key_from_env() -> None:
    """The API, the scheduler, the stream and the migration share TANDEM_MODEL_SIGNING_KEY, required (compose refuses to
    start without it), read from .env; .env.example's placeholder is too short to be accepted."""
    from core.errors import ConfigurationError
    from core.model.signing import SigningKeys

    services = _compose()["services"]
    for name in ("migrate", "scheduler", "stream", "service"):
        value = services[name]["environment"]["TANDEM_MODEL_SIGNING_KEY"]
        assert value.startswith("${TANDEM_MODEL_SIGNING_KEY:?"), value
    example = (PROJECT_ROOT / ".env.example").read_text()
    placeholder = re.search(r"^TANDEM_MODEL_SIGNING_KEY=(.*)$", example, re.MULTILINE)
    assert placeholder is not None
    with pytest.raises(ConfigurationError, match="at least 32"):
        SigningKeys.parse(placeholder.group(1))


def test_image_installs_the_project() -> None:
    """The Dockerfile installs this project and runs the API by default."""
    dockerfile = Path(PROJECT_ROOT / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    assert '"tandem", "serve"' in dockerfile
