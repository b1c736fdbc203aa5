"""Run the scheduler: wait for leadership, schedule while leading, stop cleanly.

`run_scheduler` blocks: as a standby it polls the leader lock every `leader_poll_s`; as the leader it
repairs rows of dead runs, sets the batch deadline gauge, makes a JobRunner for the registry it was given,
starts the APScheduler (inside `scheduler.entry.serving(runner)`) and checks the lock every
`leader_poll_s`. `stop` (set by SIGTERM/SIGINT in the entry points) shuts the scheduler down,
waits for running jobs and releases the lock: exit code 0. A lost lock returns LEADERSHIP_LOST at once:
the entry points then end the process without waiting for running jobs (`os._exit`), since another
process may already lead. `python -m scheduler [--jobs a,b]` is the plain entry point.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from apscheduler.events import EVENT_SCHEDULER_STARTED
from sqlalchemy.orm import Session

from core.records.job_runs import fail_dead_runs
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from scheduler.app import create_scheduler
from scheduler.entry import serving
from scheduler.job_runner import JobRunner
from scheduler.jobs import default_jobs, update_deadline_gauge, warm_up
from scheduler.leader import LeaderLock
from scheduler.registry import JobContext, JobRegistry

__all__ = ["LEADERSHIP_LOST", "exit_now", "install_stop_signals", "main", "run_scheduler"]

logger = logging.getLogger(__name__)

LEADERSHIP_LOST = 3


def run_scheduler(
    settings: Settings,
    stores: Stores,
    *,
    registry: JobRegistry,
    stop: threading.Event,
    notify: Callable[[str], None] = logger.info,
) -> int:
    """Lead or wait, then schedule the jobs of `registry` until `stop`; returns 0, or LEADERSHIP_LOST."""
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    with LeaderLock(stores.postgres) as lock:
        standby = "standby: another scheduler leads; waiting"
        if not lock.wait(poll_s=settings.leader_poll_s, stop=stop, on_standby=lambda: notify(standby)):
            notify("stopped before leading")
            return 0
        notify(f"leader (pid {os.getpid()}): scheduling {', '.join(registry)}")
        engine = create_db_engine(stores.postgres, pool_size=4)
        lost = threading.Event()
        try:
            with Session(engine) as session, session.begin():
                repaired = fail_dead_runs(session)
            if repaired:
                notify(f"marked {len(repaired)} run(s) of dead processes failed: {repaired}")
            update_deadline_gauge(engine, settings)
            runner = JobRunner(registry, JobContext(settings=settings, stores=stores, engine=engine))
            scheduler = create_scheduler(runner)

            def watch() -> None:
                while not stop.wait(settings.leader_poll_s):
                    if not lock.still_held():
                        lost.set()
                        break
                runner.stop()
                scheduler.shutdown(wait=not lost.is_set())

            scheduler.add_listener(
                lambda _event: threading.Thread(target=watch, name="leader-watch", daemon=True).start(),
                EVENT_SCHEDULER_STARTED,
            )
            with serving(runner):
                scheduler.start()  # blocks until watch() shuts it down
        finally:
            engine.dispose()
    if lost.is_set():
        notify("leadership lost: stopped scheduling")
        return LEADERSHIP_LOST
    notify("scheduler stopped; leader lock released")
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
