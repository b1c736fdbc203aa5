"""A scheduler process for the leader tests: `python -m tests.faults.leader_process JOB [--stall-publish]`.

It leads or waits like `python -m scheduler` (settings from the environment, the same `run_scheduler`).
JOB `batch_predict` schedules Tandem's own batch_predict job (run it by requesting it: the requests
poll claims it); any other name is one fast job of that name: a tick every 0.3 s, each run 0.1 s long,
1 row. `--stall-publish` is the fault: publishing online waits 120 s before it starts, so a test can kill
the process while its run is `publishing`. The process exits like `python -m scheduler`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from datetime import UTC
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

import core.batch.predict
from core.batch.publish import publish_rows
from core.records.tracked_run import RunHandle
from core.settings import Settings
from core.stores.resolve import resolve_stores
from scheduler.jobs import default_jobs
from scheduler.registry import Job, JobContext, JobRegistry, RetryPolicy
from scheduler.runner import LEADERSHIP_LOST, exit_now, install_stop_signals, run_scheduler

__all__ = ["main"]


def _tick(_ctx: JobContext, run: RunHandle) -> None:
    time.sleep(0.1)
    run.rows = 1


def _stall_publishing() -> None:
    def stalled(*args: Any, **kwargs: Any) -> int:
        time.sleep(120)
        return publish_rows(*args, **kwargs)

    # The fault this process exists for, set where run_batch_predict looks the function up.
    setattr(core.batch.predict, "publish_rows", stalled)  # noqa: B010 - not re-exported: mypy needs setattr


def _registry(settings: Settings, job_name: str) -> JobRegistry:
    if job_name == "batch_predict":
        return default_jobs(settings).select(job_name)
    job = Job(
        name=job_name,
        body=_tick,
        trigger=IntervalTrigger(seconds=0.3, timezone=UTC),
        misfire_grace_s=1,
        retry=RetryPolicy(max_attempts=1, backoff_s=0.1),
    )
    return JobRegistry([job])


def main() -> None:
    """Run the scheduler with the registry of the command line until stopped or no longer leading."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.leader_process")
    parser.add_argument("job")
    parser.add_argument("--stall-publish", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    if args.stall_publish:
        _stall_publishing()
    settings = Settings()
    stop = threading.Event()
    install_stop_signals(stop)
    registry = _registry(settings, args.job)
    code = run_scheduler(settings, resolve_stores(settings), registry=registry, stop=stop)
    if code == LEADERSHIP_LOST:
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
