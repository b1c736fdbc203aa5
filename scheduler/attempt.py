"""One attempt of a job body, bounded by a timeout, in a thread of its own.

Python cannot kill a thread, so a body that runs past its timeout is abandoned, not stopped: the caller
stops waiting at once and records the attempt failed (JobTimeoutError), while the body's thread (a daemon:
it never keeps the process alive) carries on until it returns by itself. `Attempt.running()` tells the
runner whether that thread is still going, so it starts no other attempt of the same job meanwhile. What
the abandoned body does afterwards (rows, details, its result) is only logged. A body that can hang on
I/O should also set its own socket or statement timeouts; a process that must stop a stuck body for
good can only exit (a leader that loses its lease does).
"""

from __future__ import annotations

import logging
import threading
import time

from core.records.tracked_run import RunHandle
from scheduler.errors import JobTimeoutError
from scheduler.registry import Job, JobContext

__all__ = ["Attempt"]

logger = logging.getLogger(__name__)


class Attempt:
    """Runs `job.body` for the run `run` in a daemon thread; `wait(timeout_s)` returns, raises or times out."""

    def __init__(self, job: Job, context: JobContext, run: RunHandle) -> None:
        self.job, self.context, self.run = job, context, run
        # The body fills its own handle: after a timeout, the recorded run no longer changes under us.
        self._handle = RunHandle(run_id=run.run_id, job=run.job, attempt=run.attempt)
        self._error: BaseException | None = None
        self._abandoned = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._body, name=f"job-{job.name}-run-{run.run_id}", daemon=True
        )

    def _body(self) -> None:
        try:
            self.job.body(self.context, self._handle)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self._error = exc
        if self._abandoned.is_set():
            took = time.monotonic() - self._started
            outcome = "succeeded" if self._error is None else f"failed: {self._error!r}"
            logger.warning(
                "%s: the timed-out attempt (run %d) ended after %.1f s and %s; its result is discarded",
                self.job.name,
                self.run.run_id,
                took,
                outcome,
            )

    def running(self) -> bool:
        """True while the body's thread runs (after a timeout too)."""
        return self._thread.is_alive()

    def wait(self, timeout_s: float) -> None:
        """Start the body and wait up to `timeout_s`: copies its rows and details into the run, re-raises
        its error, or raises JobTimeoutError (the body then runs on, abandoned)."""
        self._thread.start()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abandoned.set()
            self.run.details["timeout_s"] = timeout_s
            raise JobTimeoutError(
                f"{self.job.name} ran past its timeout of {timeout_s:g} s; its attempt is abandoned "
                "(no new attempt of this job starts until it ends)"
            )
        if self._error is not None:
            raise self._error
        self.run.rows = self._handle.rows
        self.run.details.update(self._handle.details)
