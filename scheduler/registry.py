"""The scheduler's one table of jobs: each job's body, trigger, misfire grace and retry policy.

A `Job` is a frozen description of one job; a `JobRegistry` is an ordered, read-only mapping of them by
name. The scheduler builds one per run (`scheduler.jobs.default_jobs(settings)`; a test builds its own
with its own bodies) and passes it to the `JobRunner` and `create_scheduler`: nothing else lists jobs.
`select("a,b")` narrows it to the jobs of `--jobs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from core.errors import ConfigurationError
from core.records.tracked_run import RunHandle
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = ["AfterRun", "Body", "Job", "JobContext", "JobRegistry", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What every job body needs: settings, stores and an engine for Tandem's tables."""

    settings: Settings
    stores: Stores
    engine: Engine


Body = Callable[[JobContext, RunHandle], None]
"""A job's work: fills `run.rows` and `run.details`; raising fails the attempt."""
AfterRun = Callable[[JobContext], None]
"""Runs after every run of a job, succeeded or failed (its own failure is logged, never raised)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `max_attempts` attempts; the first retry waits `backoff_s`, each later one twice the last."""

    max_attempts: int
    backoff_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy of `job_max_attempts` and `job_retry_backoff_s`."""
        return cls(max_attempts=settings.job_max_attempts, backoff_s=settings.job_retry_backoff_s)

    def delay_s(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) failed."""
        return self.backoff_s * 2.0 ** (failed_attempt - 1)


@dataclass(frozen=True, slots=True)
class Job:
    """One scheduled job.

    `trigger` is an APScheduler 3 trigger (an untyped library, hence Any). `then` names a job run right
    after each successful scheduled run of this one, when the registry holds it (a skew check after
    materialization compares what was just written). `after` runs after every run (the deadline gauge).
    `timeout_s` bounds each attempt (None: the setting `job_timeout_s`; see scheduler.job_runner).
    """

    name: str
    body: Body
    trigger: Any
    misfire_grace_s: int
    retry: RetryPolicy
    then: str | None = None
    after: AfterRun | None = None
    timeout_s: float | None = None


class JobRegistry(Mapping[str, Job]):
    """Jobs by name, in the order given; ConfigurationError on a repeated name."""

    __slots__ = ("_jobs",)

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self._jobs:
                raise ConfigurationError(f"job {job.name!r} is registered twice")
            self._jobs[job.name] = job

    def __getitem__(self, name: str) -> Job:
        return self._jobs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return f"JobRegistry({', '.join(self._jobs)})"

    def select(self, names: str | None) -> JobRegistry:
        """The jobs of `--jobs a,b` (None or blank: all); ConfigurationError naming unknown ones."""
        if not names or not names.strip():
            return self
        chosen = list(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
        unknown = [name for name in chosen if name not in self._jobs]
        if unknown:
            raise ConfigurationError(
                f"unknown job(s) {', '.join(unknown)} (scheduled jobs: {', '.join(self._jobs)})"
            )
        return JobRegistry(self._jobs[name] for name in chosen)
