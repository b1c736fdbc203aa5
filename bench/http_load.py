"""HTTP load plumbing for bench/serve.py: servers as context managers, wrk runs and their parsing."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import median

__all__ = [
    "WRK_LUA",
    "ColdStart",
    "Load",
    "Target",
    "free_port",
    "get_ok",
    "median_load",
    "post_ok",
    "request",
    "require_wrk",
    "server",
    "wait_ready",
    "wrk",
]


def require_wrk() -> None:
    """Exit with one line when `wrk` (the load generator of the serving benches) is not installed."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed; install it first (Debian: apt-get install -y wrk)")


WRK_LUA = r"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  lo = tonumber(args[1])
  hi = tonumber(args[2])
  kind = args[3]
  service = args[4]
  math.randomseed(os.time() + 7919 * tid)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local id = math.random(lo, hi)
  local body
  if kind == "feast" then
    body = '{"feature_service":"' .. service .. '","entities":{"customer_id":[' .. id .. ']}}'
  else
    body = '{"entities":[{"customer_id":' .. id .. '}]}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk measurement."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Target:
    """A server under load: where to POST and which ids to ask for."""

    name: str
    port: int
    path: str
    lo: int
    hi: int
    kind: str  # "tandem" (also the bare app) or "feast": the body shape


@dataclass(frozen=True)
class ColdStart:
    """One fresh `tandem serve`: seconds to ready, the first request, then steady sequential latency."""

    ready_s: float
    first_ms: float
    steady_p50_ms: float
    steady_p99_ms: float


# --------------------------------------------------------------------------------------------- world


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[int]:
    """Start a server in its own process group; on exit SIGTERM that group (ours), SIGKILL if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and tools, fixed arguments
            list(command), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, float]:
    """(status, decoded JSON body, seconds) of one request on a keep-alive connection."""
    payload = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    seconds = time.perf_counter() - started
    try:
        decoded = json.loads(data) if data else None
    except json.JSONDecodeError:
        decoded = data.decode(errors="replace")
    return response.status, decoded, seconds


def wait_ready(port: int, probe: Callable[[http.client.HTTPConnection], bool], *, timeout_s: float) -> float:
    """Seconds until `probe` answers True, polling every 20 ms on a fresh connection each time."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            if probe(conn):
                return time.perf_counter() - started
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} not ready after {timeout_s:.0f} s")


def get_ok(path: str) -> Callable[[http.client.HTTPConnection], bool]:
    return lambda conn: request(conn, "GET", path)[0] == 200


def post_ok(path: str, body: object) -> Callable[[http.client.HTTPConnection], bool]:
    return lambda conn: request(conn, "POST", path, body)[0] == 200


# ---------------------------------------------------------------------------------------------- load


def wrk(
    target: Target, *, script: Path, threads: int, connections: int, seconds: float, service: str
) -> Load:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{target.port}{target.path}",
        "--", str(target.lo), str(target.hi), target.kind, service,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    report = json.loads(line.removeprefix("WRKJSON "))
    return Load(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        requests=report["requests"],
        errors=report["errors"],
    )


def median_load(loads: Sequence[Load]) -> Load:
    return Load(
        rps=median([x.rps for x in loads]),
        p50_ms=median([x.p50_ms for x in loads]),
        p99_ms=median([x.p99_ms for x in loads]),
        requests=sum(x.requests for x in loads),
        errors=sum(x.errors for x in loads),
    )


# ----------------------------------------------------------------------------------------- measures
