"""The scheduler's jobs: thin bodies that run a core function, and `default_jobs`, their one registry.

A body `(JobContext, RunHandle) -> None` runs one attempt of a job and fills in its rows and details; the
`JobRunner` (scheduler.job_runner) records each attempt as a `job_runs` row, retries and keeps a job from
overlapping itself.

To add a job: write its body below and add one `Job` (name, body, trigger, misfire grace, retry policy)
to `default_jobs`. If the API may request it, its name also belongs in `core.records.job_runs.JOB_NAMES`
(the service cannot import the scheduler).
"""

from __future__ import annotations

import importlib
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.batch.materialize import run_materialize
from core.errors import TandemError
from core.metrics import BATCH_DEADLINE_SLACK
from core.model.promoted import promoted_models
from core.online.store import OnlineStore
from core.push.drain import drain_outbox
from core.records.deadline import DeadlineForecast, cron_trigger
from core.records.job_runs import forecast_batch_deadline, one_line
from core.records.prediction_runs import fail_orphaned_runs, record_owner
from core.records.tracked_run import RunHandle
from core.settings import Settings
from scheduler.registry import Job, JobContext, JobRegistry, RetryPolicy

__all__ = ["default_jobs", "update_deadline_gauge", "warm_up"]

logger = logging.getLogger(__name__)


def _materialize(ctx: JobContext, run: RunHandle) -> None:
    result = run_materialize(ctx.settings, ctx.stores)
    run.rows = result.rows
    run.details.update(result.details())


def _per_model(ctx: JobContext, run: RunHandle, one: Callable[[str], tuple[int, dict[str, Any]]]) -> None:
    """Run `one(model)` for every promoted model; each model's outcome goes to `details["models"]`. A
    model's failure does not stop the others; the run fails afterwards naming the models that failed."""
    with Session(ctx.engine) as session:
        names = [model.name for model in promoted_models(session)]
    outcomes: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    rows = 0
    for name in names:
        try:
            count, details = one(name)
        except Exception as exc:
            logger.exception("%s failed for model %s", run.job, name)
            outcomes[name] = {"status": "failed", "error": one_line(exc)}
            failed.append(f"{name}: {one_line(exc, limit=200)}")
        else:
            outcomes[name] = {"status": "succeeded", "rows": count, **details}
            rows += count
    run.rows = rows
    run.details["models"] = outcomes
    if failed:
        raise TandemError(f"{run.job} failed for {len(failed)} of {len(names)} model(s): {'; '.join(failed)}")


def _batch_predict(ctx: JobContext, run: RunHandle) -> None:
    # Imported when run: schedulers that only materialize never load the scoring stack.
    from core.batch.predict import run_batch_predict

    with Session(ctx.engine) as session, session.begin():
        repaired = fail_orphaned_runs(session)  # the runs of processes killed mid-run: failed, not resumed
    if repaired:
        logger.warning("marked %d prediction run(s) of dead processes failed: %s", len(repaired), repaired)

    def one(name: str) -> tuple[int, dict[str, Any]]:
        run_id = uuid.uuid4()
        with Session(ctx.engine) as session, session.begin():
            record_owner(session, job_run_id=run.run_id, run_id=run_id)
        result = run_batch_predict(ctx.settings, ctx.stores, model_name=name, run_id=run_id)
        return result.rows, {
            "run_id": str(result.run_id),
            "model_version": result.model_version,
            "as_of": result.as_of.isoformat(),
            "stage_seconds": result.stage_seconds,
        }

    _per_model(ctx, run, one)


def _check_skew(ctx: JobContext, run: RunHandle) -> None:
    # Imported when run: the checker pulls in Feast and the model stack.
    from consistency.checker import run_skew_check

    def one(name: str) -> tuple[int, dict[str, Any]]:
        report = run_skew_check(ctx.settings, ctx.stores, model_name=name, job_run_id=run.run_id)
        return report.entities_checked, {"report_id": report.id, "status": report.status}

    _per_model(ctx, run, one)


def _push_outbox(ctx: JobContext, run: RunHandle) -> None:
    """Write online the pushed rows Redis missed (core.push.drain); fails when some are still left."""
    online = OnlineStore.connect(ctx.stores.redis, project=ctx.settings.feast_project, timeout_s=5.0)
    try:
        with psycopg.connect(ctx.stores.postgres.url(), autocommit=True, connect_timeout=5) as conn:
            report = drain_outbox(conn, online, lease_s=ctx.settings.push_outbox_lease_s)
    finally:
        online.close()
    run.rows = report.written_online
    run.details.update(report.details())
    if report.error is not None:
        raise TandemError(f"push outbox: {report.left} row(s) left for the next run: {report.error}")


def _stream_rescore(ctx: JobContext, run: RunHandle) -> None:
    """Re-score the entities pushed in the last two sweep periods whose stored score they moved past
    (core.rescore.sweep): what the stream process did not re-score (HTTP pushes, dropped flushes)."""
    # Imported when run: the scoring stack.
    from core.rescore.sweep import sweep_pushed

    since = datetime.now(UTC) - timedelta(seconds=2 * ctx.settings.stream_rescore_sweep_s)
    results = sweep_pushed(ctx.settings, ctx.stores, since=since)
    run.rows = sum(result.rescored for result in results)
    models: dict[str, dict[str, Any]] = {}
    for result in results:
        outcome = models.setdefault(result.model_name, {"touched": 0, "rescored": 0, "runs": []})
        outcome["touched"] += result.touched
        outcome["rescored"] += result.rescored
        if result.run_id is not None:
            outcome["runs"].append(str(result.run_id))
    run.details.update({"since": since.isoformat(), "models": models})


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


def _after_batch_predict(ctx: JobContext) -> None:
    update_deadline_gauge(ctx.engine, ctx.settings)


def default_jobs(settings: Settings) -> JobRegistry:
    """Every job Tandem schedules, with triggers and retries from `settings`."""
    retry = RetryPolicy.from_settings(settings)
    return JobRegistry(
        [
            Job(
                name="materialize",
                body=_materialize,
                trigger=IntervalTrigger(seconds=settings.materialize_interval_s, timezone=UTC),
                misfire_grace_s=settings.materialize_interval_s,  # later than a period: the next tick covers it
                retry=retry,
                then="check_skew",
            ),
            Job(
                name="batch_predict",
                body=_batch_predict,
                trigger=cron_trigger(settings.batch_predict_cron),
                misfire_grace_s=3 * 3600,  # a nightly run missed by a failover still runs, within 3 h
                retry=retry,
                after=_after_batch_predict,
            ),
            Job(
                name="check_skew",
                body=_check_skew,
                trigger=IntervalTrigger(seconds=settings.check_skew_interval_s, timezone=UTC),
                misfire_grace_s=settings.check_skew_interval_s,
                retry=retry,
            ),
            Job(
                name="stream_rescore",
                body=_stream_rescore,
                trigger=IntervalTrigger(seconds=settings.stream_rescore_sweep_s, timezone=UTC),
                misfire_grace_s=settings.stream_rescore_sweep_s,
                retry=retry,
            ),
            Job(
                name="push_outbox",
                body=_push_outbox,
                trigger=IntervalTrigger(seconds=settings.push_outbox_interval_s, timezone=UTC),
                misfire_grace_s=settings.push_outbox_interval_s,
                retry=retry,
            ),
        ]
    )


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
