"""Runs a registry's jobs in this process as tracked job runs: retries, no self-overlap, requested runs.

A `JobRunner` is made per scheduler run and holds all of its run-time state: the registry, the
JobContext (settings, stores, engine), the stop event and one "already running" lock per job.

Retries follow the job's RetryPolicy: up to `max_attempts` attempts, waiting `backoff_s`, then twice that,
and so on. Every attempt is its own `job_runs` row with its attempt number (the history shows each
failure, and durations stay those of single attempts). A requested run (API) uses the request's row for
attempt 1. Once `stop()` is called no new retry starts and a backoff wait ends at once.

A job never overlaps itself in this process: a scheduled tick that finds the job running (a requested
run, say) is skipped, and requests wait for the next poll. Across processes, only the leader schedules.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session

from core.records.job_runs import JobRunInfo, claim_requested_run, tracked_run
from scheduler.registry import JobContext, JobRegistry

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)


class JobRunner:
    """Runs the jobs of `registry` with `context`; `stop()` ends retries (one runner per scheduler run)."""

    def __init__(self, registry: JobRegistry, context: JobContext) -> None:
        self.registry = registry
        self.context = context
        self.stopping = threading.Event()
        self._running = {name: threading.Lock() for name in registry}

    def stop(self) -> None:
        """No new attempt starts from now on; backoff waits end at once."""
        self.stopping.set()

    def run(self, name: str, *, trigger: str, claimed: JobRunInfo | None = None) -> int | None:
        """Run job `name` with retries (see the module docstring); returns its rows; raises the last error.

        The caller holds the job's lock (`run_scheduled` and `run_requests` do).
        """
        job = self.registry[name]
        requested_by = claimed.requested_by if claimed is not None else None
        try:
            for attempt in range(1, job.retry.max_attempts + 1):
                try:
                    with tracked_run(
                        self.context.engine,
                        job=name,
                        trigger=trigger,
                        attempt=attempt,
                        requested_by=requested_by,
                        run_id=claimed.id if claimed is not None and attempt == 1 else None,
                    ) as run:
                        job.body(self.context, run)
                except Exception as exc:
                    if attempt == job.retry.max_attempts or self.stopping.is_set():
                        logger.error("%s failed after %d attempt(s): %s", name, attempt, exc)
                        raise
                    wait = job.retry.delay_s(attempt)
                    logger.warning(
                        "%s attempt %d/%d failed: %s; retry in %.1f s",
                        name,
                        attempt,
                        job.retry.max_attempts,
                        exc,
                        wait,
                    )
                    if self.stopping.wait(wait):
                        raise
                else:
                    logger.info("%s succeeded (attempt %d, %s rows)", name, attempt, run.rows)
                    return run.rows
            return None  # pragma: no cover - the loop returns or raises (max_attempts >= 1)
        finally:
            if job.after is not None:
                try:
                    job.after(self.context)
                except Exception:  # a follow-up failure must not fail the job that just ran
                    logger.exception("after %s: follow-up failed", name)

    def run_scheduled(self, name: str) -> int | None:
        """A scheduled tick of `name`: skipped (None) while it runs; then its `then` job, if registered."""
        job = self.registry[name]
        lock = self._running[name]
        if not lock.acquire(blocking=False):
            logger.info("%s is already running in this process: skipping this tick", name)
            return None
        try:
            rows = self.run(name, trigger="schedule")
        finally:
            lock.release()
        if job.then is not None and job.then in self.registry:
            self.run_scheduled(job.then)
        return rows

    def run_requests(self) -> int:
        """Poll job: run the oldest requested run of each idle registered job; returns how many ran."""
        done = 0
        for name, lock in self._running.items():
            if not lock.acquire(blocking=False):
                continue
            try:
                with Session(self.context.engine) as session, session.begin():
                    claimed = claim_requested_run(session, jobs=[name])
                if claimed is None:
                    continue
                logger.info("running requested %s (run %d, by %s)", name, claimed.id, claimed.requested_by)
                done += 1
                try:
                    self.run(name, trigger="api", claimed=claimed)
                except Exception:  # recorded in job_runs and logged; the other requests still run
                    logger.debug("requested %s failed", name, exc_info=True)
            finally:
                lock.release()
        return done
