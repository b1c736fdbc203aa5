"""The demo's child processes (`tandem serve`, `tandem scheduler`, `tandem stream`): started, awaited, always
stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.errors import StackError
from core.stack.process import port_is_free

__all__ = ["Children", "children", "port_is_free", "wait_logged", "wait_ready"]


class Children:
    """Processes this demo started; `stop()` ends them (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `tandem <args>` with output to <log_dir>/<name>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and command line
            [sys.executable, "-m", "tandem", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.running.append((name, process))
        return process

    def check(self) -> None:
        """StackError naming the first child that exited early, with its log's last line."""
        for name, process in self.running:
            code = process.poll()
            if code is not None:
                lines = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
                raise StackError(f"{name} exited with code {code}: {lines[-1] if lines else 'no output'}")

    def stop(self, grace_s: float = 10.0) -> None:
        """End every child, newest first."""
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, process in reversed(self.running):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                process.kill()
                process.wait()
        self.running.clear()


@contextmanager
def children(log_dir: Path, extra_env: dict[str, str]) -> Iterator[Children]:
    """Children that are stopped whatever happens (error, Ctrl-C, normal end)."""
    group = Children(log_dir, {**os.environ, **extra_env})
    try:
        yield group
    finally:
        group.stop()


def wait_ready(url: str, group: Children, *, timeout_s: float = 90.0) -> float:
    """Poll `url`/health/ready until 200; returns seconds waited. StackError if a child dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        group.check()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise StackError(f"the API at {url} was not ready after {timeout_s:.0f} s (see its log)")


def wait_logged(group: Children, name: str, text: str, *, timeout_s: float = 90.0) -> float:
    """Poll child `name`'s log until a line holds `text`; returns seconds waited. StackError if a child dies
    or time runs out."""
    started = time.monotonic()
    log = group.log_dir / f"{name}.log"
    while time.monotonic() - started < timeout_s:
        group.check()
        if log.exists() and text in log.read_text(errors="replace"):
            return time.monotonic() - started
        time.sleep(0.1)
    raise StackError(f"{name} did not log {text!r} after {timeout_s:.0f} s (see {log})")
