"""Runs a registry's jobs in this process as tracked job runs: retries, no self-overlap, requested runs.

A `JobRunner` is made per scheduler run and holds all of its run-time state: the registry, the
JobContext (settings, stores, engine), the stop event and one "already running" lock per job.

Retries follow the job's RetryPolicy: up to `max_attempts` attempts, waiting `backoff_s`, then twice that,
and so on. Every attempt is its own `job_runs` row with its attempt number (the history shows each
failure, and durations stay those of single attempts). A requested run (API) uses the request's row for
attempt 1. Once `stop()` is called no new retry starts and a backoff wait ends at once.

A job never overlaps itself in this process: a scheduled tick that finds the job running (a requested
run, say) is skipped, and requests wait for the next poll. Across processes, only the leader schedules.

Each attempt runs with a timeout (`Job.timeout_s`, else the setting `job_timeout_s`; scheduler.attempt):
past it, the attempt is recorded failed (JobTimeoutError), not retried, and the job starts no new attempt
(ticks skipped, requests left waiting) until the abandoned body ends by itself.

`leading` (the leader lease's `leading`, or always True) is asked before every attempt and after every
body: a runner whose process no longer leads starts nothing, and a body that ends after leadership was
lost is recorded failed (LeadershipLostError): another leader may have run the job meanwhile. `fence`
(the lease's) closes the last gap: a success is recorded only in a transaction that holds the lease row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from core.records.job_runs import JobRunInfo, claim_requested_run
from core.records.tracked_run import Fence, RunHandle, tracked_run
from scheduler.attempt import Attempt
from scheduler.errors import JobTimeoutError, LeadershipLostError
from scheduler.registry import JobContext, JobRegistry

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)


class JobRunner:
    """Runs the jobs of `registry` with `context`; `stop()` ends retries (one runner per scheduler run)."""

    def __init__(
        self,
        registry: JobRegistry,
        context: JobContext,
        *,
        leading: Callable[[], bool] | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.registry = registry
        self.context = context
        self.stopping = threading.Event()
        self.leading: Callable[[], bool] = leading or (lambda: True)
        self.fence = fence
        self._running = {name: threading.Lock() for name in registry}
        self._abandoned: dict[str, Attempt] = {}

    def stuck(self, name: str) -> bool:
        """True while a timed-out attempt of job `name` still runs (no new attempt starts meanwhile)."""
        attempt = self._abandoned.get(name)
        if attempt is not None and not attempt.running():
            del self._abandoned[name]
            return False
        return attempt is not None

    def _attempt(self, name: str, run: RunHandle) -> None:
        job = self.registry[name]
        attempt = Attempt(job, self.context, run)
        try:
            attempt.wait(job.timeout_s or self.context.settings.job_timeout_s)
        except JobTimeoutError:
            self._abandoned[name] = attempt
            raise
        if not self.leading():
            raise LeadershipLostError(f"{name}: this process lost the leader lease while the job ran")

    def _check_may_start(self, name: str) -> None:
        if not self.leading():
            raise LeadershipLostError(f"{name} not started: this process does not hold the leader lease")
        if self.stuck(name):
            raise JobTimeoutError(f"{name} not started: its timed-out attempt is still running")

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
                self._check_may_start(name)
                try:
                    with tracked_run(
                        self.context.engine,
                        job=name,
                        trigger=trigger,
                        attempt=attempt,
                        requested_by=requested_by,
                        run_id=claimed.id if claimed is not None and attempt == 1 else None,
                        fence=self.fence,
                        liveness_s=self.context.settings.run_liveness_s,
                    ) as run:
                        self._attempt(name, run)
                except (JobTimeoutError, LeadershipLostError) as exc:
                    logger.error("%s failed (attempt %d), not retried: %s", name, attempt, exc)
                    raise
                except Exception as exc:
                    if attempt == job.retry.max_attempts or self.stopping.is_set() or not self.leading():
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
        if self.stuck(name) or not self.leading():
            lock.release()
            logger.warning("%s: a timed-out attempt still runs, or no leader lease: skipping this tick", name)
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
                if self.stuck(name) or not self.leading():
                    continue
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
