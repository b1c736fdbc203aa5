"""The scheduler on real stores: one leader among two processes, failover on SIGKILL, clean SIGTERM;
`tandem materialize` and `tandem runs` record and show job runs."""

from __future__ import annotations

import io
import itertools
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

import click
import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session

from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.metrics import BATCH_DEADLINE_SLACK
from core.model.lifecycle import train_and_promote
from core.records.tables import JobRun
from core.settings import PROJECT_ROOT, Settings
from core.stores.resolve import Stores
from scheduler import jobs
from scheduler.leader import LeaderLock, leader_lock_key
from tandem.commands.data import materialize_cmd
from tandem.commands.scheduler import runs_cmd
from tandem.context import CliContext
from tandem.demo.data import seed_demo_data
from tests.servers import store_env

T = TypeVar("T")
STANDBY = "standby: another scheduler leads; waiting"


@pytest.fixture(scope="module")
def feature_data(settings: Settings, stores: Stores, engine: Engine) -> None:
    """Feature repo applied and 200 customers x 3 days seeded (other modules may reseed: only "some data")."""
    apply_feature_repo(settings, stores)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=200, days=3, seed=5, end=end)


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **store_env(settings),
        "TANDEM_MATERIALIZE_INTERVAL_S": "1",
        "TANDEM_LEADER_POLL_S": "0.5",
        "TANDEM_JOB_MAX_ATTEMPTS": "2",
        "TANDEM_JOB_RETRY_BACKOFF_S": "0.2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def start_scheduler(settings: Settings, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start `python -m scheduler --jobs materialize` processes; every one still alive is killed afterwards."""
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--jobs", "materialize"],
            cwd=PROJECT_ROOT,
            env=_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _materialize_runs(
    engine: Engine, pids: set[int], *, succeeded_since: datetime | None = None
) -> list[JobRun]:
    query = select(JobRun).where(JobRun.job == "materialize", JobRun.pid.in_(pids))
    if succeeded_since is not None:
        query = query.where(JobRun.status == "succeeded", JobRun.started_at >= succeeded_since)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query.order_by(JobRun.started_at, JobRun.id)))


def _wait_for(found: Callable[[], list[T]], *, count: int = 1, timeout_s: float, what: str) -> list[T]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(values := found()) >= count:
            return values
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_one_leader_runs_jobs_and_the_standby_takes_over(
    feature_data: None,
    engine: Engine,
    stores: Stores,
    tmp_path: Path,
    start_scheduler: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    """Two schedulers: only one runs jobs, never two at once; SIGKILL it and the other runs jobs in < 10 s;
    SIGTERM stops the new leader with exit 0 and releases the lock; nothing is left `running`."""
    first, second = start_scheduler("first"), start_scheduler("second")
    pids = {first.pid, second.pid}
    launched, launched_at = time.monotonic(), datetime.now(UTC)
    launched_runs = partial(_materialize_runs, engine, pids, succeeded_since=launched_at)
    runs = _wait_for(launched_runs, count=3, timeout_s=40, what="3 runs")
    three_runs_s = time.monotonic() - launched
    leader = first if runs[0].pid == first.pid else second
    standby = second if leader is first else first
    time.sleep(1.5)
    assert leader.poll() is None, "the leader died"
    assert standby.poll() is None, "the standby died"
    before_kill = _materialize_runs(engine, pids)
    assert {run.pid for run in before_kill} == {leader.pid}, "only the leader runs jobs while both live"
    standby_log = tmp_path / ("first.log" if standby is first else "second.log")
    assert STANDBY in standby_log.read_text()

    killed_at = datetime.now(UTC)
    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    standby_runs = partial(_materialize_runs, engine, {standby.pid}, succeeded_since=killed_at)
    taken_over = _wait_for(standby_runs, timeout_s=15, what="the standby's first run")[0]
    started_at, finished_at = taken_over.started_at, taken_over.finished_at
    assert started_at is not None
    assert finished_at is not None
    takeover_s, done_s = (started_at - killed_at).total_seconds(), (finished_at - killed_at).total_seconds()
    assert done_s < 10, f"the standby's first run finished {done_s:.1f} s after the kill"
    _wait_for(standby_runs, count=2, timeout_s=10, what="a second run")

    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=20) == 0
    lock = LeaderLock(stores.postgres)
    assert lock.try_acquire(), "the stopped leader released the lock"
    lock.release()

    history = _materialize_runs(engine, pids)
    assert all(run.status in {"succeeded", "failed"} for run in history), [run.status for run in history]
    for earlier, later in itertools.pairwise(history):
        assert earlier.finished_at is not None
        assert later.started_at is not None
        assert later.started_at >= earlier.finished_at, f"runs {earlier.id} and {later.id} overlap"
    timings = f"3 runs {three_runs_s:.1f} s after launch; standby's first run {takeover_s:.2f}-{done_s:.2f} s"
    print(f"\n{timings} after SIGKILL; {len(history)} runs")  # noqa: T201 - timings, shown with -s


def test_a_leader_whose_session_ends_notices_and_another_can_lead(stores: Stores) -> None:
    """Only one LeaderLock holds a database's lock; when the server ends its session, `still_held()` turns
    False at the next check and a standby's next try succeeds."""
    assert leader_lock_key(stores.postgres.database) == leader_lock_key(stores.postgres.database)
    assert leader_lock_key(stores.postgres.database) != leader_lock_key("another_database")
    with LeaderLock(stores.postgres) as leader, LeaderLock(stores.postgres) as standby:
        assert leader.try_acquire()
        assert not standby.try_acquire()
        assert leader.still_held()
        with psycopg.connect(stores.postgres.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (leader.session_pid,))
        assert not leader.still_held()
        _wait_for(lambda: [standby] if standby.try_acquire() else [], timeout_s=5, what="the standby to lead")


def test_the_job_store_lives_in_its_own_schema(feature_data: None, engine: Engine) -> None:
    """APScheduler's table is tandem_scheduler.apscheduler_jobs and holds only the selected job."""
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM tandem_scheduler.apscheduler_jobs")).scalars().all()
        misplaced = conn.execute(text("SELECT to_regclass('tandem.apscheduler_jobs')")).scalar_one()
    assert ids == ["materialize"]
    assert misplaced is None


@pytest.fixture(scope="module")
def promoted(feature_data: None, settings: Settings, stores: Stores, engine: Engine) -> Settings:
    """Settings whose model (a name of this module's own) is trained on the module's data and promoted."""
    scoped = settings.model_copy(
        update={"model_name": f"scheduler_{uuid.uuid4().hex[:6]}", "job_max_attempts": 1}
    )
    train_and_promote(open_feature_store(scoped, stores), scoped, engine=engine)
    return scoped


def test_batch_predict_job_records_its_run_and_sets_the_deadline_gauge(
    promoted: Settings, stores: Stores, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduled batch_predict job scores every customer, records rows and the prediction run id, then
    sets the deadline slack gauge from a forecast that now has history."""
    monkeypatch.setattr(
        jobs, "job_context", lambda: jobs.JobContext(settings=promoted, stores=stores, engine=engine)
    )
    BATCH_DEADLINE_SLACK.set(math.nan)
    rows = jobs.batch_predict()
    with Session(engine) as session:
        query = select(JobRun).where(JobRun.job == "batch_predict", JobRun.pid == os.getpid())
        run = session.scalars(query.order_by(JobRun.id.desc())).first()
        assert run is not None
        session.delete(run)  # keep the batch history of other tests as it was
        session.commit()
    assert rows == 200
    assert (run.status, run.trigger, run.rows) == ("succeeded", "schedule", 200)
    assert uuid.UUID(run.details["run_id"])
    slack = REGISTRY.get_sample_value("tandem_batch_deadline_slack_seconds")
    assert slack is not None
    assert not math.isnan(slack)


def _invoke(command: click.Command, settings: Settings, *args: str) -> str:
    output = io.StringIO()
    context = CliContext(settings=settings, console=Console(file=output, width=220, color_system=None))
    result = CliRunner().invoke(command, list(args), obj=context, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return output.getvalue()


def test_tandem_materialize_records_a_manual_run(
    feature_data: None, settings: Settings, engine: Engine
) -> None:
    """`tandem materialize` prints each view's window and leaves a succeeded manual run with its details."""
    printed = _invoke(materialize_cmd, settings)
    assert "materialized 2 feature views" in printed
    assert "customer_profile:" in printed
    assert "customer_txn_stats:" in printed
    with Session(engine) as session:
        query = select(JobRun).where(JobRun.job == "materialize", JobRun.trigger == "manual")
        run = session.scalars(query.order_by(JobRun.id.desc())).first()
    assert run is not None
    assert run.status == "succeeded"
    assert set(run.details["views"]) == {"customer_profile", "customer_txn_stats"}
    assert "batch_predictions" not in run.details["views"]
    assert run.rows is not None


def test_tandem_runs_shows_history_and_a_late_forecast_in_red(settings: Settings, engine: Engine) -> None:
    """`tandem runs` lists runs and the forecast line; with the 30 newest batch runs at 30 h, it is LATE."""
    now = datetime.now(UTC)
    runs = [
        JobRun(
            job="batch_predict",
            trigger="schedule",
            status="succeeded",
            started_at=now - timedelta(hours=30),
            finished_at=now - timedelta(seconds=i),
            duration_s=30 * 3600.0,
            details={},
        )
        for i in range(30)
    ]
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(runs)
    try:
        printed = _invoke(runs_cmd, settings, "--job", "batch_predict", "--limit", "5")
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(JobRun).where(JobRun.id.in_([run.id for run in runs])))
    assert "batch_predict" in printed
    assert "108000.0 s" in printed
    assert "p90 of 30 past runs" in printed
    assert printed.rstrip().endswith("LATE")
