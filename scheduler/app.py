"""The APScheduler instance: jobs, triggers and their persistent store in PostgreSQL.

Jobs live in `tandem_scheduler.apscheduler_jobs` (SQLAlchemyJobStore), outside schema `tandem` whose
content Alembic compares against Tandem's models. Only the leader runs a scheduler on that store
(APScheduler 3 must never share a job store between two running schedulers), so at start the store is
the leader's to rewrite: it re-adds the selected jobs (`replace_existing=True`), keeping a stored next
run time that is earlier than the trigger's next one (a run missed during failover still runs when its
misfire grace allows), and removes jobs it was not asked to run. The requests poll, which has no
schedule worth keeping, sits in a memory store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select, text

from core.errors import ConfigurationError
from core.records.deadline import cron_trigger
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores
from scheduler.jobs import ENTRY_POINTS, enable_jobs

__all__ = [
    "JOB_SPECS",
    "JOB_STORE_SCHEMA",
    "JOB_STORE_TABLE",
    "REQUESTS_POLL_S",
    "JobSpec",
    "create_scheduler",
    "select_jobs",
]

JOB_STORE_SCHEMA = "tandem_scheduler"
JOB_STORE_TABLE = "apscheduler_jobs"
REQUESTS_POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A scheduled job's trigger and misfire grace, from settings (its entry point: scheduler.jobs)."""

    trigger: Callable[[Settings], Any]
    misfire_grace_s: Callable[[Settings], int]


JOB_SPECS: dict[str, JobSpec] = {
    "materialize": JobSpec(
        trigger=lambda s: IntervalTrigger(seconds=s.materialize_interval_s, timezone=UTC),
        misfire_grace_s=lambda s: s.materialize_interval_s,  # later than one period: the next tick covers it
    ),
    "batch_predict": JobSpec(
        trigger=lambda s: cron_trigger(s.batch_predict_cron),
        misfire_grace_s=lambda _s: 3 * 3600,  # a nightly run missed by a failover still runs, within 3 h
    ),
    "check_skew": JobSpec(
        trigger=lambda s: IntervalTrigger(seconds=s.check_skew_interval_s, timezone=UTC),
        misfire_grace_s=lambda s: s.check_skew_interval_s,
    ),
}


def select_jobs(names: str | None) -> list[str]:
    """Parse `--jobs a,b` (None or empty: all scheduled jobs); ConfigurationError naming unknown ones."""
    if not names or not names.strip():
        return list(JOB_SPECS)
    chosen = list(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in JOB_SPECS]
    if unknown:
        raise ConfigurationError(
            f"unknown job(s) {', '.join(unknown)} (scheduled jobs: {', '.join(JOB_SPECS)})"
        )
    return chosen


def _job_store(engine: Engine) -> SQLAlchemyJobStore:
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {JOB_STORE_SCHEMA}"))
    store = SQLAlchemyJobStore(engine=engine, tablename=JOB_STORE_TABLE, tableschema=JOB_STORE_SCHEMA)
    store.jobs_t.create(engine, checkfirst=True)
    return store


def _stored_next_runs(engine: Engine, store: SQLAlchemyJobStore, keep: list[str]) -> dict[str, datetime]:
    """Next run times kept in the store for `keep`; rows of every other job are deleted."""
    table = store.jobs_t
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id.not_in(keep)))
        rows = conn.execute(select(table.c.id, table.c.next_run_time)).all()
    return {
        str(job_id): datetime.fromtimestamp(float(next_run), tz=UTC)
        for job_id, next_run in rows
        if next_run is not None
    }


def create_scheduler(
    settings: Settings,
    stores: Stores,
    *,
    jobs: Mapping[str, Callable[[], int | None]] | None = None,
    engine: Engine | None = None,
) -> BlockingScheduler:
    """A UTC BlockingScheduler with `jobs` (default: scheduler.jobs.ENTRY_POINTS) and the requests poll.

    Callables in `jobs` must be importable module-level functions: the job store keeps a textual
    reference to them. Start it only while holding the leader lock.
    """
    chosen = dict(ENTRY_POINTS if jobs is None else jobs)
    select_jobs(",".join(chosen))  # unknown names: ConfigurationError
    enable_jobs(list(chosen))
    engine = engine or create_db_engine(stores.postgres, pool_size=2)
    store = _job_store(engine)
    stored = _stored_next_runs(engine, store, list(chosen))
    scheduler = BlockingScheduler(
        jobstores={"default": store, "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    now = datetime.now(UTC)
    for name, func in chosen.items():
        spec = JOB_SPECS[name]
        trigger = spec.trigger(settings)
        next_run = trigger.get_next_fire_time(None, now)
        if name in stored and (next_run is None or stored[name] < next_run):
            next_run = stored[name]
        scheduler.add_job(
            func,
            trigger,
            id=name,
            name=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=spec.misfire_grace_s(settings),
            next_run_time=next_run,
        )
    scheduler.add_job(
        "scheduler.jobs:run_requests",
        IntervalTrigger(seconds=REQUESTS_POLL_S, timezone=UTC),
        args=[list(chosen)],
        id="requests",
        name="requests",
        jobstore="memory",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=int(REQUESTS_POLL_S),
    )
    return scheduler
