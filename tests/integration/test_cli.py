"""The command line: user mistakes and unreachable stores end in one readable line and a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from core.stores.database import head_revision
from tests.servers import free_port, store_env

BIN = Path(sys.executable).parent


def _tandem(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tandem"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_negative_customers_is_a_usage_error_naming_the_option() -> None:
    """`tandem seed --customers -5`: exit 2 and one line that names --customers."""
    done = _tandem("seed", "--customers", "-5")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--customers" in lines[0]
    assert "Traceback" not in done.stderr


def test_unreachable_postgres_names_host_and_port_with_password_masked() -> None:
    """A PostgreSQL nobody listens on: exit 1, one line naming host:port, never the password."""
    port = free_port()
    done = _tandem(
        "seed",
        "--customers",
        "10",
        env={
            "TANDEM_POSTGRES_URL": f"postgresql://app:hunter2@127.0.0.1:{port}/tandem",
            "TANDEM_REDIS_URL": "redis://127.0.0.1:6379/0",
        },
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "hunter2" not in done.stderr + done.stdout
    assert "***" in lines[0]


def test_only_one_store_url_is_a_configuration_error() -> None:
    """Setting the PostgreSQL URL without the Redis one says which variable is missing."""
    done = _tandem("apply", env={"TANDEM_POSTGRES_URL": "postgresql://127.0.0.1/x"})
    assert done.returncode == 1
    assert "TANDEM_REDIS_URL is not set" in done.stderr


def test_no_local_stack_says_run_tandem_up(tmp_path: Path) -> None:
    """No URLs and no local stack running: one line telling the user to run `tandem up`."""
    done = _tandem("materialize", env={"TANDEM_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "tandem up" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_apply_then_seed_on_configured_stores(settings: Settings) -> None:
    """`tandem apply` and `tandem seed` succeed on the configured stores and report what they did."""
    env = store_env(settings)
    applied = _tandem("apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"revision {head_revision()}" in applied.stdout
    assert "3 feature views" in applied.stdout
    seeded = _tandem("seed", "--customers", "200", "--days", "3", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 200 customers x 3 days" in seeded.stdout


def test_every_command_has_help() -> None:
    """Every command answers --help with its description."""
    for command in (
        "up", "down", "env", "seed", "apply", "train", "models", "materialize", "batch-predict",
        "serve", "scheduler", "stream", "runs", "demo",
    ):  # fmt: skip
        done = _tandem(command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert "Usage: tandem" in done.stdout


def test_demo_with_unreachable_stores_says_so_and_starts_nothing() -> None:
    """`tandem demo` against stores nobody answers: one line naming the server, exit 1, nothing started."""
    port, api_port = free_port(), free_port()
    done = _tandem(
        "demo",
        "--once",
        "--port",
        str(api_port),
        env={
            "TANDEM_POSTGRES_URL": f"postgresql://app:pw@127.0.0.1:{port}/tandem",
            "TANDEM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        },
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", api_port)) != 0
