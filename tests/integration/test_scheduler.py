"""The scheduler on real stores: one leader among two processes, failover on SIGKILL, clean SIGTERM; the
job store kept across leaders; a runner's retries, timeouts, lease guard, follow-ups, self-exclusion and
requested runs; `tandem materialize` and `tandem runs` record and show job runs. (The lease itself and a
SIGSTOPped leader: test_leader_lease.py, test_leader_sigstop.py.)"""

from __future__ import annotations

import io
import itertools
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
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
from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.triggers.interval import IntervalTrigger
from click.testing import CliRunner
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session

from core.batch.predict import run_batch_predict
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.metrics import BATCH_DEADLINE_SLACK
from core.model.lifecycle import train_and_promote
from core.records.job_runs import request_job_run
from core.records.prediction_runs import latest_published_run
from core.records.tables import JobRun, PredictionRun
from core.records.tracked_run import RunHandle
from core.settings import PROJECT_ROOT, Settings
from core.stores.resolve import Stores
from scheduler.app import create_scheduler
from scheduler.entry import run_job, serving
from scheduler.errors import JobTimeoutError, LeadershipLostError
from scheduler.job_runner import JobRunner
from scheduler.jobs import default_jobs
from scheduler.leader import LeaderLease
from scheduler.registry import Body, Job, JobContext, JobRegistry, RetryPolicy
from tandem.commands.data import materialize_cmd
from tandem.commands.scheduler import runs_cmd
from tandem.context import CliContext
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_MODEL
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
        "TANDEM_LEADER_LEASE_S": "2",
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
    """Two schedulers: only one runs jobs, never two at once; SIGKILL it and the other runs jobs in < 10 s
    (a 2 s lease); SIGTERM stops the new leader with exit 0 and releases the lease; nothing is left
    `running`."""
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
    with LeaderLease(stores.postgres, lease_s=2.0, poll_s=0.5) as lease:
        assert lease.try_acquire(), "the stopped leader released the lease"

    history = _materialize_runs(engine, pids)
    assert all(run.status in {"succeeded", "failed"} for run in history), [run.status for run in history]
    for earlier, later in itertools.pairwise(history):
        assert earlier.finished_at is not None
        assert later.started_at is not None
        assert later.started_at >= earlier.finished_at, f"runs {earlier.id} and {later.id} overlap"
    timings = f"3 runs {three_runs_s:.1f} s after launch; standby's first run {takeover_s:.2f}-{done_s:.2f} s"
    print(f"\n{timings} after SIGKILL; {len(history)} runs")  # noqa: T201 - timings, shown with -s


def test_the_job_store_lives_in_its_own_schema(feature_data: None, engine: Engine) -> None:
    """APScheduler's table is tandem_scheduler.apscheduler_jobs and holds only the selected job, stored as
    the `scheduler.entry:run_job` trampoline with the job's name as argument."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, job_state FROM tandem_scheduler.apscheduler_jobs")).all()
        misplaced = conn.execute(text("SELECT to_regclass('tandem.apscheduler_jobs')")).scalar_one()
    assert [row.id for row in rows] == ["materialize"]
    state = pickle.loads(rows[0].job_state)  # noqa: S301 - APScheduler's own row, written by this test run
    assert (state["func"], tuple(state["args"])) == ("scheduler.entry:run_job", ("materialize",))
    assert misplaced is None


@pytest.fixture
def job_name() -> str:
    """A job name no other test uses, so each test sees only its own rows."""
    return f"test_{uuid.uuid4().hex[:8]}"


def _job(
    name: str,
    body: Body,
    *,
    attempts: int = 1,
    backoff_s: float = 0.01,
    then: str | None = None,
    timeout_s: float | None = None,
) -> Job:
    return Job(
        name=name,
        body=body,
        trigger=IntervalTrigger(hours=1, timezone=UTC),
        misfire_grace_s=60,
        retry=RetryPolicy(max_attempts=attempts, backoff_s=backoff_s),
        then=then,
        timeout_s=timeout_s,
    )


def _runner(
    settings: Settings,
    stores: Stores,
    engine: Engine,
    *jobs: Job,
    leading: Callable[[], bool] | None = None,
) -> JobRunner:
    context = JobContext(settings=settings, stores=stores, engine=engine)
    return JobRunner(JobRegistry(jobs), context, leading=leading)


def _runs(engine: Engine, *names: str) -> list[JobRun]:
    with Session(engine, expire_on_commit=False) as session:
        query = select(JobRun).where(JobRun.job.in_(names)).order_by(JobRun.id)
        return list(session.scalars(query))


def _succeed(_ctx: JobContext, run: RunHandle) -> None:
    run.rows = 1


def test_a_new_leader_keeps_an_earlier_stored_run_and_drops_jobs_it_does_not_run(
    feature_data: None, settings: Settings, stores: Stores, engine: Engine
) -> None:
    """create_scheduler keeps a stored next run time earlier than the trigger's next one (a run missed
    during failover) and deletes stored jobs that are not in its registry."""
    both = _runner(settings, stores, engine, _job("materialize", _succeed), _job("retired_job", _succeed))
    first = create_scheduler(both)
    first.add_listener(lambda _event: first.shutdown(wait=False), EVENT_SCHEDULER_STARTED)
    with serving(both):
        first.start(paused=True)  # stores both jobs, then stops at once
    missed = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    stored_ids = text("SELECT id FROM tandem_scheduler.apscheduler_jobs ORDER BY id")
    with engine.begin() as conn:
        assert conn.execute(stored_ids).scalars().all() == ["materialize", "retired_job"]
        conn.execute(
            text("UPDATE tandem_scheduler.apscheduler_jobs SET next_run_time = :at WHERE id = 'materialize'"),
            {"at": missed.timestamp()},
        )
    second = create_scheduler(_runner(settings, stores, engine, _job("materialize", _succeed)))
    with engine.connect() as conn:
        assert conn.execute(stored_ids).scalars().all() == ["materialize"]
    assert second.get_job("materialize").next_run_time == missed


@pytest.fixture(scope="module")
def promoted(feature_data: None, settings: Settings, stores: Stores, engine: Engine) -> Settings:
    """Settings whose model (the repo's, which declares its predictions view) is trained on the module's data
    and promoted."""
    scoped = settings.model_copy(update={"model_name": DEMO_MODEL, "job_max_attempts": 1})
    train_and_promote(open_feature_store(scoped, stores), scoped, engine=engine)
    return scoped


def test_batch_predict_job_records_its_run_and_sets_the_deadline_gauge(
    promoted: Settings, stores: Stores, engine: Engine
) -> None:
    """The scheduled batch_predict job (fired through the persisted entry point) scores every customer,
    records rows and the prediction run id (noted as its own before the run started), then sets the
    deadline slack gauge from a forecast that now has history."""
    context = JobContext(settings=promoted, stores=stores, engine=engine)
    runner = JobRunner(default_jobs(promoted).select("batch_predict"), context)
    BATCH_DEADLINE_SLACK.set(math.nan)
    with serving(runner):
        rows = run_job("batch_predict")
    with Session(engine) as session:
        query = select(JobRun).where(JobRun.job == "batch_predict", JobRun.pid == os.getpid())
        run = session.scalars(query.order_by(JobRun.id.desc())).first()
        assert run is not None
        session.delete(run)  # keep the batch history of other tests as it was
        session.commit()
    assert (run.status, run.trigger, run.rows) == ("succeeded", "schedule", rows)
    assert run.details["models"][DEMO_MODEL]["rows"] == 200
    assert uuid.UUID(run.details["models"][DEMO_MODEL]["run_id"])
    assert run.details["prediction_runs"] == [run.details["models"][DEMO_MODEL]["run_id"]], "owner noted"
    slack = REGISTRY.get_sample_value("tandem_batch_deadline_slack_seconds")
    assert slack is not None
    assert not math.isnan(slack)


def _leader_process(settings: Settings, log: IO[bytes], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.leader_process", *args],
        cwd=PROJECT_ROOT,
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_a_leader_killed_mid_publish_leaves_a_run_the_next_leader_fails(
    promoted: Settings, stores: Stores, engine: Engine, tmp_path: Path
) -> None:
    """A leader SIGKILLed while its batch run is `publishing` (publishing stalled on purpose): the previous
    published run stays served; the next leader marks the run failed, naming the dead process, and its job
    run "process died"; the previous run is still the one served."""
    with Session(engine) as session:
        if latest_published_run(session, model_name=DEMO_MODEL) is None:
            run_batch_predict(promoted, stores, model_name=DEMO_MODEL)
        previous = latest_published_run(session, model_name=DEMO_MODEL)
    assert previous is not None
    processes: list[subprocess.Popen[bytes]] = []
    with (tmp_path / "killed.log").open("wb") as killed_log, (tmp_path / "next.log").open("wb") as next_log:
        try:
            killed = _leader_process(promoted, killed_log, "batch_predict", "--stall-publish")
            processes.append(killed)
            with Session(engine) as session, session.begin():
                request_id = request_job_run(session, job="batch_predict", requested_by="fault-test")

            def publishing() -> list[PredictionRun]:
                with Session(engine) as session:
                    job_run = session.get(JobRun, request_id)
                    owned = (job_run.details or {}).get("prediction_runs", []) if job_run else []
                    query = select(PredictionRun).where(
                        PredictionRun.run_id.in_([uuid.UUID(run_id) for run_id in owned]),
                        PredictionRun.status == "publishing",
                    )
                    return list(session.scalars(query))

            [stuck] = _wait_for(publishing, timeout_s=60, what="a run publishing")
            with Session(engine) as session:
                served = latest_published_run(session, model_name=DEMO_MODEL)
            assert served is not None
            assert served.run_id == previous.run_id, "the previous run is served while one publishes"
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=10)
            nxt = _leader_process(promoted, next_log, "batch_predict")
            processes.append(nxt)

            def failed() -> list[PredictionRun]:
                with Session(engine) as session:
                    run = session.get(PredictionRun, stuck.run_id)
                    return [run] if run is not None and run.status == "failed" else []

            [repaired] = _wait_for(failed, timeout_s=30, what="the next leader to fail the run")
            nxt.send_signal(signal.SIGTERM)
            assert nxt.wait(timeout=20) == 0
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
    assert f"pid {killed.pid}" in (repaired.error or "")
    assert "died while publishing" in (repaired.error or "")
    with Session(engine) as session:
        job_run = session.get(JobRun, request_id)
        assert job_run is not None
        assert (job_run.status, job_run.error) == ("failed", "process died")
        served = latest_published_run(session, model_name=DEMO_MODEL)
    assert served is not None
    assert served.run_id == previous.run_id


def test_retries_are_recorded_one_row_per_attempt(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """A job failing twice then succeeding leaves rows for attempts 1, 2 (failed) and 3 (succeeded)."""
    calls: list[int] = []

    def flaky(_ctx: JobContext, run: RunHandle) -> None:
        calls.append(run.attempt)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)} failed")
        run.rows = 7

    runner = _runner(settings, stores, engine, _job(job_name, flaky, attempts=3))
    assert runner.run(job_name, trigger="schedule") == 7
    assert [(r.attempt, r.status, r.error) for r in _runs(engine, job_name)] == [
        (1, "failed", "ConnectionError: try 1 failed"),
        (2, "failed", "ConnectionError: try 2 failed"),
        (3, "succeeded", None),
    ]
    assert calls == [1, 2, 3]


def test_a_job_failing_every_attempt_raises_after_the_last(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """With two attempts allowed, two failed rows are left and the last error propagates."""

    def broken(_ctx: JobContext, _run: RunHandle) -> None:
        raise ValueError("bad data")

    runner = _runner(settings, stores, engine, _job(job_name, broken, attempts=2))
    with pytest.raises(ValueError, match="bad data"):
        runner.run(job_name, trigger="schedule")
    assert [(r.attempt, r.status) for r in _runs(engine, job_name)] == [(1, "failed"), (2, "failed")]


def test_stopping_ends_a_backoff_wait_without_another_attempt(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """`stop()` during a 60 s backoff makes the run raise at once, after its one failed attempt."""
    failed = threading.Event()

    def broken(_ctx: JobContext, _run: RunHandle) -> None:
        failed.set()
        raise ConnectionError("store away")

    runner = _runner(settings, stores, engine, _job(job_name, broken, attempts=3, backoff_s=60))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(job_name, trigger="schedule")
        except ConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert failed.wait(10)
    runner.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert [(r.attempt, r.status) for r in _runs(engine, job_name)] == [(1, "failed")]


def test_an_attempt_past_its_timeout_fails_and_the_job_waits_for_it(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """A body stuck past its 0.5 s timeout: the run fails at once with JobTimeoutError and is not retried
    (3 attempts allowed); while the body still runs, ticks are skipped and `run` refuses to start; once it
    ends, the next tick runs normally."""
    release, calls = threading.Event(), []

    def stuck(_ctx: JobContext, run: RunHandle) -> None:
        calls.append(run.attempt)
        release.wait(30)
        run.rows = 9

    runner = _runner(settings, stores, engine, _job(job_name, stuck, attempts=3, timeout_s=0.5))
    began = time.monotonic()
    try:
        with pytest.raises(JobTimeoutError, match=r"ran past its timeout of 0\.5 s"):
            runner.run_scheduled(job_name)
        waited_s = time.monotonic() - began
        assert 0.5 <= waited_s < 3, waited_s
        [timed_out] = _runs(engine, job_name)
        assert (timed_out.attempt, timed_out.status, timed_out.rows) == (1, "failed", None)
        assert timed_out.error is not None
        assert timed_out.error.startswith("JobTimeoutError: ")
        assert timed_out.details["timeout_s"] == 0.5
        assert runner.stuck(job_name)
        assert runner.run_scheduled(job_name) is None
        with pytest.raises(JobTimeoutError, match="still running"):
            runner.run(job_name, trigger="schedule")
        assert len(_runs(engine, job_name)) == 1
        assert calls == [1]
    finally:
        release.set()
    _wait_for(lambda: [] if runner.stuck(job_name) else [True], timeout_s=10, what="the stuck body to end")
    assert runner.run_scheduled(job_name) == 9
    assert [(r.status, r.rows) for r in _runs(engine, job_name)] == [("failed", None), ("succeeded", 9)]
    assert calls == [1, 1]


def test_the_timeout_setting_applies_to_jobs_without_their_own(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """`job_timeout_s` bounds a job whose `timeout_s` is None; a body within it succeeds with its rows."""
    release = threading.Event()

    def slow_once(_ctx: JobContext, run: RunHandle) -> None:
        release.wait(30)
        run.rows = 2

    scoped = settings.model_copy(update={"job_timeout_s": 0.3})
    runner = _runner(scoped, stores, engine, _job(job_name, slow_once))
    try:
        with pytest.raises(JobTimeoutError, match=r"timeout of 0\.3 s"):
            runner.run(job_name, trigger="schedule")
    finally:
        release.set()
    _wait_for(lambda: [] if runner.stuck(job_name) else [True], timeout_s=10, what="the stuck body to end")
    assert runner.run(job_name, trigger="schedule") == 2


def test_a_runner_without_the_lease_starts_nothing_and_fails_what_ends_after_losing_it(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """With `leading` False no attempt starts (no row, LeadershipLostError; a tick is skipped); a body that
    ends after leadership was lost is recorded failed, not succeeded, and not retried."""
    idle = _runner(settings, stores, engine, _job(job_name, _succeed), leading=lambda: False)
    with pytest.raises(LeadershipLostError, match="does not hold the leader lease"):
        idle.run(job_name, trigger="schedule")
    assert idle.run_scheduled(job_name) is None
    assert _runs(engine, job_name) == []

    leading = threading.Event()
    leading.set()

    def loses_lease(_ctx: JobContext, run: RunHandle) -> None:
        leading.clear()
        run.rows = 4

    runner = _runner(
        settings, stores, engine, _job(job_name, loses_lease, attempts=3), leading=leading.is_set
    )
    with pytest.raises(LeadershipLostError, match="lost the leader lease while the job ran"):
        runner.run(job_name, trigger="schedule")
    assert [(r.attempt, r.status) for r in _runs(engine, job_name)] == [(1, "failed")]


def test_a_follow_up_job_runs_after_a_success_only_when_registered(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """A scheduled tick of a job with `then` runs the follow-up right after it succeeds when the registry
    holds the follow-up (as check_skew after materialize), never when it does not or when the job fails."""
    first, follow_up = f"{job_name}_first", f"{job_name}_then"
    with_follow_up = _runner(
        settings, stores, engine, _job(first, _succeed, then=follow_up), _job(follow_up, _succeed)
    )
    assert with_follow_up.run_scheduled(first) == 1
    ran = _runs(engine, first, follow_up)
    assert [run.job for run in ran] == [first, follow_up]
    assert ran[0].finished_at is not None
    assert ran[1].started_at is not None
    assert ran[1].started_at >= ran[0].finished_at

    alone = _runner(settings, stores, engine, _job(first, _succeed, then=follow_up))
    alone.run_scheduled(first)
    assert [run.job for run in _runs(engine, first, follow_up)] == [first, follow_up, first]

    def broken(_ctx: JobContext, _run: RunHandle) -> None:
        raise ValueError("no data")

    failing = _runner(
        settings, stores, engine, _job(first, broken, then=follow_up), _job(follow_up, _succeed)
    )
    with pytest.raises(ValueError, match="no data"):
        failing.run_scheduled(first)
    assert [run.job for run in _runs(engine, first, follow_up)] == [first, follow_up, first, first]


def test_a_job_never_overlaps_itself_in_a_process(
    engine: Engine, settings: Settings, stores: Stores, job_name: str
) -> None:
    """A scheduled tick that finds its job still running is skipped (None, no row); after it ends, the
    next tick runs."""
    started, release = threading.Event(), threading.Event()

    def slow(_ctx: JobContext, run: RunHandle) -> None:
        started.set()
        assert release.wait(10)
        run.rows = 5

    runner = _runner(settings, stores, engine, _job(job_name, slow))
    first = threading.Thread(target=runner.run_scheduled, args=[job_name])
    first.start()
    try:
        assert started.wait(10)
        assert runner.run_scheduled(job_name) is None
        assert [run.status for run in _runs(engine, job_name)] == ["running"]
    finally:
        release.set()
        first.join(timeout=10)
    assert runner.run_scheduled(job_name) == 5
    assert [run.status for run in _runs(engine, job_name)] == ["succeeded", "succeeded"]


def test_requested_runs_are_run_by_the_poll_job(engine: Engine, settings: Settings, stores: Stores) -> None:
    """`run_requests` claims a requested run and finishes that same row, trigger api, requester kept."""

    def skew_check(_ctx: JobContext, run: RunHandle) -> None:
        run.rows = 3

    runner = _runner(settings, stores, engine, _job("check_skew", skew_check))
    with Session(engine) as session, session.begin():
        run_id = request_job_run(session, job="check_skew", requested_by="carol")
    try:
        assert runner.run_requests() == 1
        assert runner.run_requests() == 0  # nothing left to claim
        with Session(engine) as session:
            row = session.get(JobRun, run_id)
            assert row is not None
            assert (row.status, row.trigger, row.requested_by, row.rows) == ("succeeded", "api", "carol", 3)
            assert row.started_at is not None
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(JobRun).where(JobRun.id == run_id))


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
