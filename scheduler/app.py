"""The APScheduler instance: a runner's jobs, their triggers and their persistent store in PostgreSQL.

Jobs live in `tandem_scheduler.apscheduler_jobs` (SQLAlchemyJobStore), outside schema `tandem` whose
content Alembic compares against Tandem's models. Each stored job is `scheduler.entry:run_job` with the
job's name as argument (see scheduler.entry for why). Only the leader runs a scheduler on that store
(APScheduler 3 must never share a job store between two running schedulers), so at start the store is
the leader's to rewrite: it re-adds the registry's jobs (`replace_existing=True`), keeping a stored next
run time that is earlier than the trigger's next one (a run missed during failover still runs when its
misfire grace allows), and removes jobs not in the registry. The requests poll, which has no schedule
worth keeping, sits in a memory store and calls the runner directly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select, text

from scheduler.entry import run_job
from scheduler.job_runner import JobRunner

__all__ = ["JOB_STORE_SCHEMA", "JOB_STORE_TABLE", "REQUESTS_POLL_S", "create_scheduler"]

JOB_STORE_SCHEMA = "tandem_scheduler"
JOB_STORE_TABLE = "apscheduler_jobs"
REQUESTS_POLL_S = 2.0


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


def create_scheduler(runner: JobRunner) -> BlockingScheduler:
    """A UTC BlockingScheduler with the jobs of `runner.registry` and the requests poll.

    Its job store uses `runner.context.engine`. Start it only while holding the leader lease, inside
    `scheduler.entry.serving(runner)`.
    """
    engine = runner.context.engine
    store = _job_store(engine)
    stored = _stored_next_runs(engine, store, list(runner.registry))
    scheduler = BlockingScheduler(
        jobstores={"default": store, "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    now = datetime.now(UTC)
    for name, job in runner.registry.items():
        next_run = job.trigger.get_next_fire_time(None, now)
        if name in stored and (next_run is None or stored[name] < next_run):
            next_run = stored[name]
        scheduler.add_job(
            run_job,
            job.trigger,
            args=[name],
            id=name,
            name=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=job.misfire_grace_s,
            next_run_time=next_run,
        )
    scheduler.add_job(
        runner.run_requests,
        IntervalTrigger(seconds=REQUESTS_POLL_S, timezone=UTC),
        id="requests",
        name="requests",
        jobstore="memory",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=int(REQUESTS_POLL_S),
    )
    return scheduler
