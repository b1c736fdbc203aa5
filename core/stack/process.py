"""Process plumbing shared by the embedded PostgreSQL and Redis: run a fixed binary, find and stop a daemon.

Daemons are identified by a pid file plus the process name, so a stale pid file (process dead, or the pid
reused by an unrelated program) is never mistaken for our server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "RunAs",
    "chown_to",
    "file_size",
    "last_log_lines",
    "live_process",
    "port_is_free",
    "read_pid",
    "run_fixed",
    "stop_process",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunAs:
    """The system account a daemon runs as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


def run_fixed(args: Sequence[str | Path], *, timeout: float, run_as: RunAs | None = None) -> tuple[int, str]:
    """Run one of the shipped binaries, without a shell, in its own session; return (exit code, output).

    Output goes through a temporary file rather than a pipe: a daemon that inherits a pipe would keep the
    call waiting until it exits.
    """
    command = [str(arg) for arg in args]
    logger.debug("running %s", command)
    with tempfile.TemporaryFile("w+") as output:
        try:
            completed = subprocess.run(  # noqa: S603 - fixed binary, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                cwd="/",
                start_new_session=True,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
            code = completed.returncode
        except subprocess.TimeoutExpired:
            code = -1
        output.seek(0)
        text = output.read().strip()
    return code, text


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file, or None when the file is missing or unreadable."""
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def live_process(pid: int | None, name: str, *, cwd: Path | None = None) -> psutil.Process | None:
    """The running (not zombie) process `pid` if its name is `name` (and, when readable, its working
    directory is `cwd`: both daemons chdir to their data directory); None for a stale or reused pid."""
    if pid is None or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() != name:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if cwd is not None:
        try:
            if Path(process.cwd()).resolve() != cwd.resolve():
                return None
        except psutil.AccessDenied:
            pass  # not ours to inspect (not root): the name check has to do
        except psutil.NoSuchProcess:
            return None
    return process


def _wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Wait until the process exits (or is a zombie nobody reaps); True when it is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def stop_process(process: psutil.Process, *, sig: signal.Signals, timeout: float) -> None:
    """Send `sig`, wait up to `timeout` seconds, then kill the process if it is still there."""
    try:
        process.send_signal(sig)
    except psutil.NoSuchProcess:
        return
    if _wait_gone(process, timeout):
        return
    logger.warning(
        "process %s did not stop within %.0fs after %s; killing it", process.pid, timeout, sig.name
    )
    try:
        process.kill()
    except psutil.NoSuchProcess:
        return
    _wait_gone(process, 5.0)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (a test bind, as the server would do it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def last_log_lines(path: Path, count: int = 3, *, since: int = 0) -> str:
    """The last `count` non-empty lines of a log (from byte offset `since`), joined on one line."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            data = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def file_size(path: Path) -> int:
    """Size of a file in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def chown_to(path: Path, run_as: RunAs | None) -> None:
    """Give `path` to the daemon's account (no-op when we are not root)."""
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
