"""The one hand-off between APScheduler's persisted jobs and the scheduler run of this process.

APScheduler 3's SQLAlchemyJobStore pickles each job as a textual reference to a module-level function
("module:function") plus its arguments, and resolves that reference when the job fires (possibly in a
later leader, after a failover). A bound method of a `JobRunner` has no such reference. So every
persisted job is the same function, `scheduler.entry:run_job`, with the job's name as its one argument
(`args=[name]`: a string pickles anywhere), and `run_job` hands the name to this process's runner.

`serving(runner)` sets that runner while the scheduler runs and clears it when it stops: it is the only
module-level state of the scheduler, set in one place (scheduler.runner). A job firing outside it raises
RuntimeError. Everything else (the jobs, the stop event, the locks) belongs to the runner itself, so a
test builds a runner with its own registry rather than patching globals. The requests poll lives in a
memory store and calls its runner directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from scheduler.job_runner import JobRunner

__all__ = ["current_runner", "run_job", "serving"]

_lock = threading.Lock()
_current: JobRunner | None = None


@contextmanager
def serving(runner: JobRunner) -> Iterator[JobRunner]:
    """Make `runner` the one persisted jobs run on, until the block ends (one at a time per process)."""
    global _current  # the documented hand-off point (module docstring)
    with _lock:
        if _current is not None:
            raise RuntimeError("another scheduler run already serves this process's jobs")
        _current = runner
    try:
        yield runner
    finally:
        with _lock:
            _current = None


def current_runner() -> JobRunner:
    """The runner set by `serving`; RuntimeError outside it."""
    runner = _current
    if runner is None:
        raise RuntimeError("no scheduler run serves this process: a job fired outside `serving(runner)`")
    return runner


def run_job(name: str) -> int | None:
    """Persisted job entry point: a scheduled tick of job `name` on the current runner."""
    return current_runner().run_scheduled(name)
