"""Run the scheduler: wait for leadership, schedule while leading, stop cleanly.

`run_scheduler` blocks: as a standby it tries to take the leader lease (scheduler.leader) every
`leader_poll_s`; as the leader it renews the lease every `leader_poll_s` in a thread of its own, repairs
the rows of dead processes (job runs, and the prediction runs they left unfinished), sets the batch
deadline gauge, makes a JobRunner for the registry it was given (asking the lease before every attempt),
starts the APScheduler (inside `scheduler.entry.serving(runner)`) and watches the lease every
`leader_poll_s`. `stop` (set by SIGTERM/SIGINT in the entry points) shuts the scheduler down, waits for
running jobs and lets the lease go: exit code 0. A lost lease (expired: the process was stopped or cut
off; or taken) returns LEADERSHIP_LOST at once: the entry points then end the process without waiting
for running jobs (`os._exit`), since another process may already lead. `python -m scheduler [--jobs a,b]`
is the plain entry point.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from types import FrameType

from apscheduler.events import EVENT_SCHEDULER_STARTED
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.job_runs import fail_dead_runs
from core.records.prediction_runs import fail_orphaned_runs
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from scheduler.app import create_scheduler
from scheduler.entry import serving
from scheduler.job_runner import JobRunner
from scheduler.jobs import default_jobs, update_deadline_gauge, warm_up
from scheduler.leader import LeaderLease
from scheduler.registry import JobContext, JobRegistry

__all__ = [
    "LEADERSHIP_LOST",
    "exit_now",
    "install_stop_signals",
    "main",
    "repair_dead_runs",
    "run_scheduler",
]

logger = logging.getLogger(__name__)

LEADERSHIP_LOST = 3


def repair_dead_runs(engine: Engine) -> tuple[list[int], list[uuid.UUID]]:
    """Mark failed the job runs of dead processes (any host, by liveness lock; this host, by pid), then the
    prediction runs they left. The leader runs it when it starts leading and every TANDEM_RUN_LIVENESS_S."""
    with Session(engine) as session, session.begin():
        jobs = fail_dead_runs(session)
        predictions = fail_orphaned_runs(session)
    return jobs, predictions


def _repair_quietly(engine: Engine, notify: Callable[[str], None]) -> None:
    try:
        jobs, predictions = repair_dead_runs(engine)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the next round repairs
        logger.warning("repair of dead runs failed: %s", exc)
        return
    if jobs or predictions:
        notify(f"marked failed, their processes dead: job runs {jobs}, prediction runs {predictions}")


def run_scheduler(
    settings: Settings,
    stores: Stores,
    *,
    registry: JobRegistry,
    stop: threading.Event,
    notify: Callable[[str], None] = logger.info,
) -> int:
    """Lead or wait, then schedule the jobs of `registry` until `stop`; returns 0, or LEADERSHIP_LOST."""
    lease = LeaderLease(stores.postgres, lease_s=settings.leader_lease_s, poll_s=settings.leader_poll_s)
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    with lease:
        standby = "standby: another scheduler leads; waiting"
        if not lease.wait(stop=stop, on_standby=lambda: notify(standby)):
            notify("stopped before leading")
            return 0
        notify(f"leader (pid {os.getpid()}, lease epoch {lease.epoch}): scheduling {', '.join(registry)}")
        done, lost = threading.Event(), threading.Event()
        threading.Thread(target=lease.keep, args=[done], name="leader-lease", daemon=True).start()
        engine = create_db_engine(stores.postgres, pool_size=4)
        try:
            jobs, predictions = repair_dead_runs(engine)
            if jobs or predictions:
                notify(f"marked failed, their processes dead: job runs {jobs}, prediction runs {predictions}")
            update_deadline_gauge(engine, settings)
            context = JobContext(settings=settings, stores=stores, engine=engine)
            runner = JobRunner(registry, context, leading=lease.leading, fence=lease.fence)
            scheduler = create_scheduler(runner)

            def watch() -> None:
                next_repair = time.monotonic() + settings.run_liveness_s
                while not stop.wait(settings.leader_poll_s):
                    if not lease.leading():
                        lost.set()
                        break
                    if time.monotonic() >= next_repair:  # runs of processes that died since, on any host
                        next_repair = time.monotonic() + settings.run_liveness_s
                        _repair_quietly(engine, notify)
                runner.stop()
                scheduler.shutdown(wait=not lost.is_set())

            watcher = threading.Thread(target=watch, name="leader-watch", daemon=True)
            scheduler.add_listener(lambda _event: watcher.start(), EVENT_SCHEDULER_STARTED)
            with serving(runner):
                scheduler.start()  # blocks until watch() shuts it down
                if not lost.is_set() and watcher.is_alive():
                    # The scheduler's loop can end before shutdown(wait=True) has waited for running jobs.
                    watcher.join()
        finally:
            done.set()
            engine.dispose()
    if lost.is_set():
        notify("leadership lost (lease expired or taken): stopped scheduling")
        return LEADERSHIP_LOST
    notify("scheduler stopped; leader lease released")
    return 0


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` (call from the main thread)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def exit_now(code: int) -> None:
    """End the process with `code` without waiting for job threads (after a lost leadership)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m scheduler [--jobs materialize,batch_predict]`: settings from the environment."""
    parser = argparse.ArgumentParser(prog="python -m scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=None, help="comma-separated jobs to schedule (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    settings = Settings()
    registry = default_jobs(settings).select(args.jobs)
    stop = threading.Event()
    install_stop_signals(stop)
    code = run_scheduler(settings, resolve_stores(settings), registry=registry, stop=stop)
    if code == LEADERSHIP_LOST:
        exit_now(code)
    sys.exit(code)
