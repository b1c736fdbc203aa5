"""The embedded local stack of `tandem up` / `tandem down`: real PostgreSQL and Redis daemons in a temporary home."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from core.errors import StackError
from core.settings import PROJECT_ROOT, Settings
from core.stack.local import (
    LocalStack,
    env_lines,
    local_stack_services,
    local_stack_status,
    start_local_stack,
    stop_local_stack,
)
from tests.servers import free_port

pytestmark = pytest.mark.embedded


def _new_settings(home: Path) -> Settings:
    """Settings for a stack under `home` on two distinct free ports."""
    pg_port = free_port()
    redis_port = free_port()
    while redis_port == pg_port:
        redis_port = free_port()
    return Settings(home=home, local_postgres_port=pg_port, local_redis_port=redis_port)


def _daemons_of(home: Path) -> list[int]:
    """Pids of postgres / redis-server processes working in `home` (their cwd is PGDATA or the Redis dir)."""
    found = []
    for process in psutil.process_iter(["name", "cwd"]):
        cwd = process.info["cwd"]
        if (
            process.info["name"] in {"postgres", "redis-server"}
            and cwd
            and cwd.startswith(str(home.resolve()))
        ):
            found.append(int(process.pid))
    return found


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    probe = subprocess.Popen(["true"])
    probe.wait()
    return probe.pid


@pytest.fixture(scope="module")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for one local stack shared by this module; the stack is always stopped afterwards."""
    settings = _new_settings(tmp_path_factory.mktemp("local-stack"))
    try:
        yield settings
    finally:
        stop_local_stack(settings)


@pytest.fixture(scope="module")
def stack(stack_settings: Settings) -> LocalStack:
    """The module's stack, started."""
    return start_local_stack(stack_settings)


def _select(stack: LocalStack, query: str) -> object:
    with psycopg.connect(stack.postgres.url(), connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_start_answers_on_tcp_and_second_start_reuses(stack: LocalStack, stack_settings: Settings) -> None:
    """start -> PostgreSQL answers `select 1` over TCP in database `tandem`, Redis answers PING, and the model
    signing key exists (mode 0600); start again reuses the same processes and key; status reports the same
    stack; `tandem env` lines point at the key file."""
    assert stack.postgres.host == "127.0.0.1"
    assert stack.postgres.port == stack_settings.local_postgres_port
    assert _select(stack, "select 1") == 1
    assert _select(stack, "select current_database()") == "tandem"
    client = redis.Redis.from_url(stack.redis.url())
    try:
        assert client.ping()
    finally:
        client.close()
    key = stack_settings.local_signing_key_path.read_text()
    again = start_local_stack(stack_settings)
    assert (again.postgres_pid, again.redis_pid) == (stack.postgres_pid, stack.redis_pid)
    assert local_stack_status(stack_settings) == again
    assert all(state.running for state in local_stack_services(stack_settings))
    assert stack.signing_key == again.signing_key == stack_settings.local_signing_key_path
    assert stack_settings.local_signing_key_path.read_text() == key  # generated once, kept
    assert stat.S_IMODE(stack_settings.local_signing_key_path.stat().st_mode) == 0o600
    assert f"export TANDEM_MODEL_SIGNING_KEY_FILE={stack.signing_key}" in env_lines(stack, {})


def test_env_lines_put_psql_and_redis_cli_on_path(stack: LocalStack) -> None:
    """Evaluating env_lines in a shell gives working `psql` and `redis-cli` aimed at the stack, plus extras."""
    lines = env_lines(stack, {"TANDEM_EXTRA": "a b'c"}, base_path="/usr/bin:/bin")
    script = "\n".join(
        [*lines, 'psql -tAc "select current_database()"', "redis-cli ping", 'echo "$TANDEM_EXTRA"']
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split("\n")[:3] == ["tandem", "PONG", "a b'c"]
    assert f"export TANDEM_POSTGRES_URL={stack.postgres.url()}" in lines


def test_data_survives_stop_and_start(stack: LocalStack, stack_settings: Settings) -> None:
    """A table row and a Redis key written before `down` are still there after `up`."""
    with psycopg.connect(stack.postgres.url()) as conn:
        conn.execute("create table if not exists survivor (v text)")
        conn.execute("insert into survivor values ('kept')")
    client = redis.Redis.from_url(stack.redis.url())
    try:
        client.set("survivor", "kept")
    finally:
        client.close()

    stopped = stop_local_stack(stack_settings)
    assert len(stopped) == 2
    assert local_stack_status(stack_settings) is None
    restarted = start_local_stack(stack_settings)

    assert restarted.postgres_pid != stack.postgres_pid
    assert _select(restarted, "select v from survivor") == "kept"
    client = redis.Redis.from_url(restarted.redis.url())
    try:
        assert client.get("survivor") == b"kept"
    finally:
        client.close()


def test_stale_pid_files_do_not_block_start(stack_settings: Settings) -> None:
    """After a crash (pid files naming dead processes) start cleans up and runs fresh servers."""
    stop_local_stack(stack_settings)
    home = stack_settings.home
    dead = _dead_pid()
    (home / "postgres" / "postmaster.pid").write_text(f"{dead}\n{home / 'postgres'}\n", encoding="utf-8")
    (home / "redis" / "redis.pid").write_text(f"{dead}\n", encoding="utf-8")
    assert local_stack_status(stack_settings) is None
    assert stop_local_stack(stack_settings) == []

    started = start_local_stack(stack_settings)
    assert dead not in {started.postgres_pid, started.redis_pid}
    assert _select(started, "select 1") == 1


def test_daemons_outlive_the_starting_process(stack_settings: Settings) -> None:
    """A stack started by a process that then exits (like `tandem up`) keeps running."""
    stop_local_stack(stack_settings)
    env = {
        **os.environ,
        "TANDEM_HOME": str(stack_settings.home),
        "TANDEM_LOCAL_POSTGRES_PORT": str(stack_settings.local_postgres_port),
        "TANDEM_LOCAL_REDIS_PORT": str(stack_settings.local_redis_port),
    }
    code = "from core.settings import Settings; from core.stack.local import start_local_stack as s; s(Settings())"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True, timeout=120)
    stack = local_stack_status(stack_settings)
    assert stack is not None
    assert _select(stack, "select 1") == 1


@pytest.mark.parametrize("taken", ["postgres", "redis"])
def test_port_in_use_by_another_program_starts_nothing(
    tmp_path_factory: pytest.TempPathFactory, taken: str
) -> None:
    """A port held by another program -> StackError naming the port and variable; no daemon left running."""
    settings = _new_settings(tmp_path_factory.mktemp(f"taken-{taken}"))
    port = settings.local_postgres_port if taken == "postgres" else settings.local_redis_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        try:
            with pytest.raises(StackError, match=rf"port {port} on 127\.0\.0\.1 is already in use") as error:
                start_local_stack(settings)
        finally:
            stop_local_stack(settings)
    assert f"TANDEM_LOCAL_{taken.upper()}_PORT" in str(error.value)
    assert local_stack_status(settings) is None
    assert _daemons_of(settings.home) == []


def test_redis_failure_stops_the_postgres_it_started(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Redis fails after this call started PostgreSQL, PostgreSQL is stopped again: no half stack."""
    settings = _new_settings(tmp_path_factory.mktemp("half"))

    def failing_redis(home: Path, port: int, *, timeout: float) -> object:
        raise StackError(f"Redis did not start on 127.0.0.1:{port}: simulated")

    monkeypatch.setattr("core.stack.local.start_redis", failing_redis)
    try:
        with pytest.raises(StackError, match="simulated"):
            start_local_stack(settings)
        assert not any(state.running for state in local_stack_services(settings))
        assert _daemons_of(settings.home) == []
    finally:
        stop_local_stack(settings)


def test_stop_when_nothing_runs(tmp_path: Path) -> None:
    """stop on a home where nothing runs (missing, or empty) returns no lines and raises nothing."""
    missing = Settings(home=tmp_path / "never-created")
    assert stop_local_stack(missing) == []
    assert not missing.home.exists()
    empty = Settings(home=tmp_path)
    assert stop_local_stack(empty) == []
    assert local_stack_status(empty) is None
