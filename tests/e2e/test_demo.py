"""`tandem demo --once` on a fresh embedded stack: the journey a new user walks, end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.embedded

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """No store URLs (so the embedded stack), a private home and free ports; the stack is stopped after."""
    env = {k: v for k, v in os.environ.items() if k not in {"TANDEM_POSTGRES_URL", "TANDEM_REDIS_URL"}}
    env |= {
        "TANDEM_HOME": str(tmp_path_factory.mktemp("demo-home")),
        "TANDEM_LOCAL_POSTGRES_PORT": str(free_port()),
        "TANDEM_LOCAL_REDIS_PORT": str(free_port()),
        "TANDEM_FEAST_PROJECT": "demo_e2e",
    }
    yield env
    subprocess.run([BIN / "tandem", "down"], env=env, capture_output=True, timeout=60, check=False)


def _demo(env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "tandem", "demo", "--once", "--customers", "600", "--days", "5", "--port", str(port)],
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def demo_once(demo_env: dict[str, str]) -> tuple[int, subprocess.CompletedProcess[str]]:
    """One `tandem demo --once` run that the tests below read: (its API port, the finished process)."""
    port = free_port()
    return port, _demo(demo_env, port)


def test_demo_once_shows_batch_and_live_answers_and_checks_skew(
    demo_once: tuple[int, subprocess.CompletedProcess[str]],
) -> None:
    """The printed table holds a batch-served and a live re-scored customer, the skew check ran, URLs printed,
    and nothing the demo started is left running."""
    port, done = demo_once
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    out = done.stdout
    assert "features_newer" in out
    assert "batch_fresh" in out
    assert "skew check: report" in out
    assert f"http://127.0.0.1:{port}/skew" in out
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the demo's API is still listening"


def _cells(out: str, moment: str) -> list[str]:
    """The cells of the stream table's row for `moment` (rich draws columns with │)."""
    line = next((line for line in out.splitlines() if moment in line), None)
    assert line is not None, f"no row {moment!r} in:\n{out[-3000:]}"
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_demo_once_shows_an_answer_switching_to_the_stream_score(
    demo_once: tuple[int, subprocess.CompletedProcess[str]],
) -> None:
    """Events XADDed to the Redis stream move the followed customer from its batch score (batch_fresh, run
    kind batch) to a live re-score (features_newer) while the event is online but not yet re-scored, then to
    the stream re-score's stored score (batch_fresh, run kind stream) computed from the event's row."""
    _, done = demo_once
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    out = done.stdout
    _, _, source, reason, run_kind, before_ts = _cells(out, "before the events")
    assert (source, reason, run_kind) == ("batch", "batch_fresh", "batch")
    _, _, source, reason, run_kind, live_ts = _cells(out, "event online, not yet re-scored")
    assert (source, reason, run_kind) == ("live", "features_newer", "None")
    _, _, source, reason, run_kind, stream_ts = _cells(out, "after the stream re-score")
    assert (source, reason, run_kind) == ("batch", "batch_fresh", "stream")
    assert stream_ts != before_ts
    assert live_ts != before_ts
    assert "written and re-scored by `tandem stream`" in out


def test_second_demo_on_a_taken_port_refuses_cleanly(demo_env: dict[str, str]) -> None:
    """The API port already in use: one clear line, exit 1, nothing started."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = _demo(demo_env, port)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
