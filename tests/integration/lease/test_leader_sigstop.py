"""A SIGSTOPped leader loses leadership within a bounded time: two real scheduler processes on the real
PostgreSQL (lease 2 s, poll 0.5 s), the leader frozen, the standby leading, the old one resumed."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psycopg
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.records.tables import JobRun
from core.settings import PROJECT_ROOT, Settings
from core.stores.resolve import Stores
from scheduler.leader import current_holder
from scheduler.runner import LEADERSHIP_LOST
from tests.servers import store_env

LEASE_S, POLL_S = 2.0, 0.5

Start = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def job_name() -> str:
    """The fake job's name, unique to this test: its rows are the test's own."""
    return f"test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start(settings: Settings, tmp_path: Path, job_name: str) -> Iterator[Start]:
    """Start `python -m tests.faults.leader_process`; every process still alive is resumed and killed
    (by its pid) afterwards."""
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
    env = {
        **os.environ,
        **store_env(settings),
        "TANDEM_LEADER_POLL_S": str(POLL_S),
        "TANDEM_LEADER_LEASE_S": str(LEASE_S),
        "PYTHONUNBUFFERED": "1",
    }

    def launch(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.leader_process", job_name],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process

    yield launch
    for process, log in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)
        log.close()


def _runs(engine: Engine, job_name: str) -> list[JobRun]:
    with Session(engine, expire_on_commit=False) as session:
        query = select(JobRun).where(JobRun.job == job_name).order_by(JobRun.started_at, JobRun.id)
        return list(session.scalars(query))


def _lease_pid(stores: Stores) -> int | None:
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        holder = current_holder(conn)
    return holder.pid if holder is not None and holder.unexpired else None


def _until(done: Callable[[], bool], *, timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not done():
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - began


def _succeeded_by(engine: Engine, job_name: str, pid: int, since: datetime) -> list[JobRun]:
    return [
        run
        for run in _runs(engine, job_name)
        if run.pid == pid and run.status == "succeeded" and run.started_at and run.started_at >= since
    ]


def test_a_sigstopped_leader_loses_the_lease_and_steps_down_when_resumed(
    engine: Engine, stores: Stores, start: Start, job_name: str, tmp_path: Path
) -> None:
    """SIGSTOP the leader: the standby holds the lease within lease + poll (< 3 leases) and runs jobs;
    SIGCONT the old leader: it exits LEADERSHIP_LOST without starting another job; no run of the old
    leader starts after the takeover and no two succeeded runs overlap; SIGTERM ends the new leader
    with 0 and nothing stays `running`."""
    first, second = start("first"), start("second")
    _until(lambda: _lease_pid(stores) in {first.pid, second.pid}, timeout_s=30, what="a leader")
    leader = first if _lease_pid(stores) == first.pid else second
    standby = second if leader is first else first
    launched = datetime.now(UTC)
    _until(
        lambda: len(_succeeded_by(engine, job_name, leader.pid, launched)) >= 2,
        timeout_s=20,
        what="the leader's runs",
    )
    assert standby.poll() is None
    assert {run.pid for run in _runs(engine, job_name)} == {leader.pid}, "only the leader runs jobs"

    stopped_at = datetime.now(UTC)
    os.kill(leader.pid, signal.SIGSTOP)
    takeover_s = _until(lambda: _lease_pid(stores) == standby.pid, timeout_s=3 * LEASE_S, what="takeover")
    assert takeover_s < LEASE_S + POLL_S + 1.0, takeover_s
    first_run_s = takeover_s + _until(
        lambda: bool(_succeeded_by(engine, job_name, standby.pid, stopped_at)),
        timeout_s=10,
        what="the new leader's first run",
    )
    time.sleep(1.0)

    os.kill(leader.pid, signal.SIGCONT)
    assert leader.wait(timeout=10) == LEADERSHIP_LOST
    old_log = (tmp_path / ("first.log" if leader is first else "second.log")).read_text()
    assert "leadership lost (lease expired or taken)" in old_log
    exited_at = datetime.now(UTC)  # runs started from now on repair what the old leader left `running`
    _until(
        lambda: len(_succeeded_by(engine, job_name, standby.pid, exited_at)) >= 1,
        timeout_s=10,
        what="the new leader to keep running jobs",
    )
    assert _lease_pid(stores) == standby.pid
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=20) == 0

    history = _runs(engine, job_name)
    taken_over = min(run.started_at for run in history if run.pid == standby.pid and run.started_at)
    old = [run for run in history if run.pid == leader.pid]
    assert all(run.started_at is not None and run.started_at < taken_over for run in old)
    unfinished = [
        (r.id, r.pid, r.status, r.started_at) for r in history if r.status not in {"succeeded", "failed"}
    ]
    assert not unfinished, (unfinished, leader.pid, standby.pid, exited_at)
    succeeded = [run for run in history if run.status == "succeeded"]
    for earlier, later in itertools.pairwise(succeeded):
        assert earlier.finished_at is not None
        assert later.started_at is not None
        assert later.started_at >= earlier.finished_at, f"runs {earlier.id} and {later.id} overlap"
    print(  # noqa: T201 - timings, shown with -s
        f"\nlease {LEASE_S} s, poll {POLL_S} s: standby held the lease {takeover_s:.2f} s after SIGSTOP, "
        f"its first run done {first_run_s:.2f} s after; {len(history)} runs, {len(old)} by the old leader"
    )
