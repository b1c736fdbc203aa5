"""The scheduler's jobs: thin functions that run a core function as a tracked job run, with retries.

APScheduler's SQLAlchemyJobStore keeps jobs by textual reference ("scheduler.jobs:materialize") with
no arguments, so each job rebuilds Settings from the environment (once per process, see `job_context`).

Retries: up to `job_max_attempts` attempts, waiting `job_retry_backoff_s`, then twice that, and so on.
Every attempt is its own `job_runs` row with its attempt number (the history shows each failure, and
durations stay those of single attempts). A requested run (API) uses the request's row for attempt 1.

A job never overlaps itself in this process: a scheduled tick that finds the job running (a requested
run, say) is skipped, and requests wait for the next poll. Across processes, only the leader schedules.

To add a job (check_skew, a later issue): write a body `(JobContext, RunHandle) -> None` below, add it
to `BODIES`, give it a module-level entry point like `materialize` in `ENTRY_POINTS`, and a `JobSpec` in
scheduler.app.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.batch.materialize import run_materialize
from core.metrics import BATCH_DEADLINE_SLACK
from core.records.deadline import DeadlineForecast
from core.records.job_runs import (
    JOB_NAMES,
    JobRunInfo,
    RunHandle,
    claim_requested_run,
    forecast_batch_deadline,
    tracked_run,
)
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores

__all__ = [
    "BODIES",
    "ENTRY_POINTS",
    "STOPPING",
    "JobContext",
    "batch_predict",
    "check_skew",
    "enable_jobs",
    "job_context",
    "materialize",
    "run_requests",
    "run_with_retries",
    "update_deadline_gauge",
    "warm_up",
]

logger = logging.getLogger(__name__)

# Set when the scheduler shuts down: no new retry starts, backoff waits end early.
STOPPING = threading.Event()
_RUNNING = {name: threading.Lock() for name in JOB_NAMES}


@dataclass(frozen=True, slots=True)
class JobContext:
    """What every job needs: settings, stores and an engine for Tandem's tables."""

    settings: Settings
    stores: Stores
    engine: Engine


@functools.cache
def job_context() -> JobContext:
    """Settings from the environment and their stores, built once per process."""
    settings = Settings()
    stores = resolve_stores(settings)
    return JobContext(settings=settings, stores=stores, engine=create_db_engine(stores.postgres, pool_size=2))


def _materialize(ctx: JobContext, run: RunHandle) -> None:
    result = run_materialize(ctx.settings, ctx.stores)
    run.rows = result.rows
    run.details.update(result.details())


def _batch_predict(ctx: JobContext, run: RunHandle) -> None:
    # Imported when run: schedulers that only materialize never load the scoring stack.
    from core.batch.predict import run_batch_predict

    result = run_batch_predict(ctx.settings, ctx.stores)
    run.rows = result.rows
    run.details.update(
        run_id=str(result.run_id),
        model_version=result.model_version,
        as_of=result.as_of.isoformat(),
        stage_seconds=result.stage_seconds,
    )


def _check_skew(ctx: JobContext, run: RunHandle) -> None:
    # Imported when run: the checker pulls in Feast and the model stack.
    from consistency.checker import run_skew_check

    report = run_skew_check(ctx.settings, ctx.stores, job_run_id=run.run_id)
    run.rows = report.entities_checked
    run.details.update(report_id=report.id, status=report.status)


# Feast's modules take seconds to import: a standby imports them while it waits, so a takeover runs at once.
_WARM_MODULES = (
    "feast.feature_store",
    "feast.infra.online_stores.redis",
    "feast.infra.offline_stores.contrib.postgres_offline_store.postgres",
    "feast.infra.compute_engines.local.compute",
)


def warm_up() -> None:
    """Import what the jobs import on first use (call it in a background thread)."""
    for name in _WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the job itself will report it
            logger.warning("warm-up: cannot import %s: %s", name, exc)


Body = Callable[[JobContext, RunHandle], None]
BODIES: dict[str, Body] = {
    "materialize": _materialize,
    "batch_predict": _batch_predict,
    "check_skew": _check_skew,
}


def update_deadline_gauge(engine: Engine, settings: Settings) -> DeadlineForecast:
    """Forecast the next batch run against its deadline, set the slack gauge, warn when it will be late."""
    with Session(engine) as session:
        forecast = forecast_batch_deadline(session, settings=settings)
    BATCH_DEADLINE_SLACK.set(math.nan if forecast.slack_s is None else forecast.slack_s)
    if forecast.late:
        logger.warning("%s", forecast.describe())
    else:
        logger.info("%s", forecast.describe())
    return forecast


def _after(name: str, ctx: JobContext) -> None:
    if name != "batch_predict":
        return
    try:
        update_deadline_gauge(ctx.engine, ctx.settings)
    except Exception:  # a forecast failure must not fail the job that just ran
        logger.exception("batch deadline forecast failed")


def run_with_retries(name: str, *, trigger: str, claimed: JobRunInfo | None = None) -> int | None:
    """Run job `name` with retries (see the module docstring); returns its rows; raises the last error."""
    ctx, body = job_context(), BODIES[name]
    attempts, delay = ctx.settings.job_max_attempts, ctx.settings.job_retry_backoff_s
    requested_by = claimed.requested_by if claimed else None
    try:
        for attempt in range(1, attempts + 1):
            try:
                with tracked_run(
                    ctx.engine,
                    job=name,
                    trigger=trigger,
                    attempt=attempt,
                    requested_by=requested_by,
                    run_id=claimed.id if claimed is not None and attempt == 1 else None,
                ) as run:
                    body(ctx, run)
            except Exception as exc:
                if attempt == attempts or STOPPING.is_set():
                    logger.error("%s failed after %d attempt(s): %s", name, attempt, exc)
                    raise
                wait = delay * 2 ** (attempt - 1)
                logger.warning(
                    "%s attempt %d/%d failed: %s; retry in %.1f s", name, attempt, attempts, exc, wait
                )
                if STOPPING.wait(wait):
                    raise
            else:
                logger.info("%s succeeded (attempt %d, %s rows)", name, attempt, run.rows)
                return run.rows
        return None  # pragma: no cover - the loop returns or raises
    finally:
        _after(name, ctx)


def _scheduled(name: str) -> int | None:
    lock = _RUNNING[name]
    if not lock.acquire(blocking=False):
        logger.info("%s is already running in this process: skipping this tick", name)
        return None
    try:
        return run_with_retries(name, trigger="schedule")
    finally:
        lock.release()


def materialize() -> int | None:
    """Scheduled job: incremental materialization of the feature service's views, then a skew check."""
    rows = _scheduled("materialize")
    if rows is not None and "check_skew" in _ENABLED:
        _scheduled("check_skew")  # the check compares what was just materialized
    return rows


def check_skew() -> int | None:
    """Scheduled job: the consistency check (consistency.checker) on a sample of entities."""
    return _scheduled("check_skew")


def batch_predict() -> int | None:
    """Scheduled job: score every entity and publish the scores (core.batch.predict)."""
    return _scheduled("batch_predict")


# The scheduled entry points, by job name (scheduler.app.JOB_SPECS gives each its trigger).
ENTRY_POINTS: dict[str, Callable[[], int | None]] = {
    "materialize": materialize,
    "batch_predict": batch_predict,
    "check_skew": check_skew,
}

# Jobs this process schedules (set by scheduler.app.create_scheduler); a skew check follows materialization
# only when check_skew is one of them.
_ENABLED: set[str] = set()


def enable_jobs(names: Sequence[str]) -> None:
    """Record which jobs this process runs."""
    _ENABLED.clear()
    _ENABLED.update(names)


def run_requests(jobs: Sequence[str]) -> int:
    """Poll job: run the oldest requested run of each idle job in `jobs`; returns how many ran."""
    ctx, done = job_context(), 0
    for name in jobs:
        lock = _RUNNING.get(name)
        if name not in BODIES or lock is None or not lock.acquire(blocking=False):
            continue
        try:
            with Session(ctx.engine) as session, session.begin():
                claimed = claim_requested_run(session, jobs=[name])
            if claimed is None:
                continue
            logger.info("running requested %s (run %d, by %s)", name, claimed.id, claimed.requested_by)
            done += 1
            try:
                run_with_retries(name, trigger="api", claimed=claimed)
            except Exception:  # recorded in job_runs and logged; the other requests still run
                logger.debug("requested %s failed", name, exc_info=True)
        finally:
            lock.release()
    return done
