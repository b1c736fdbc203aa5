"""Will the next batch run finish before its deadline? A forecast from past run durations.

`forecast_deadline` is pure: it takes the durations of past successful runs, the next scheduled start,
the deadline's time of day (UTC) and a percentile, and returns a `DeadlineForecast`. The expected finish
is `next_start + percentile duration`, where the percentile is the nearest-rank one (the smallest past
duration that at least that share of runs did not exceed): pessimistic on purpose, a deadline is a
promise. The deadline is the first occurrence of its time of day at or after `next_start`.

`cron_trigger` reads a standard crontab into APScheduler's CronTrigger (the scheduler uses it too, so
both agree on weekdays) and `next_cron_start` gives the batch job's next start from it (no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from core.errors import ConfigurationError

__all__ = [
    "DeadlineForecast",
    "cron_trigger",
    "forecast_deadline",
    "next_cron_start",
    "percentile_nearest_rank",
]


@dataclass(frozen=True, slots=True)
class DeadlineForecast:
    """The next run's expected finish against its deadline; finish and slack are None without history."""

    next_start: datetime | None
    expected_finish: datetime | None
    deadline: datetime | None
    slack_s: float | None
    late: bool
    samples: int
    percentile: float
    percentile_duration_s: float | None

    @property
    def available(self) -> bool:
        """True when there was history enough to forecast a finish time."""
        return self.expected_finish is not None

    def describe(self) -> str:
        """One plain line for logs and the command line."""
        if self.next_start is None or self.deadline is None:
            return "batch deadline: no next start scheduled"
        start = f"next start {self.next_start:%Y-%m-%d %H:%M} UTC"
        deadline = f"deadline {self.deadline:%Y-%m-%d %H:%M} UTC"
        if self.expected_finish is None or self.slack_s is None or self.percentile_duration_s is None:
            return f"batch deadline: {start}, {deadline}; no successful run yet, so no forecast"
        rank = f"p{round(self.percentile * 100)}"
        return (
            f"batch deadline: {start}, expected finish {self.expected_finish:%Y-%m-%d %H:%M:%S} UTC "
            f"({rank} of {self.samples} past runs: {self.percentile_duration_s:.1f} s), {deadline}, "
            f"slack {self.slack_s:+.0f} s{', LATE' if self.late else ''}"
        )


def percentile_nearest_rank(values: Sequence[float], percentile: float) -> float:
    """The smallest value such that at least `percentile` (0 < p <= 1) of the values are <= it."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile * len(ordered) - 1e-9))
    return ordered[rank - 1]


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _deadline_after(start: datetime, deadline_time: time) -> datetime:
    if deadline_time.tzinfo is not None and deadline_time.utcoffset() != timedelta(0):
        raise ValueError(f"the deadline time of day must be UTC, got {deadline_time.isoformat()}")
    wall = deadline_time.replace(tzinfo=None)
    deadline = datetime.combine(start.date(), wall, tzinfo=UTC)
    return deadline if deadline >= start else deadline + timedelta(days=1)


def forecast_deadline(
    durations_s: Sequence[float],
    *,
    next_start: datetime | None,
    deadline_time: time,
    percentile: float,
) -> DeadlineForecast:
    """Forecast the next run's finish from past durations (seconds); see the module docstring."""
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    bad = [d for d in durations_s if not math.isfinite(d) or d < 0]
    if bad:
        raise ValueError(f"durations must be finite and >= 0, got {bad[0]}")
    start = None if next_start is None else _utc(next_start, "next_start")
    deadline = None if start is None else _deadline_after(start, deadline_time)
    if start is None or deadline is None or not durations_s:
        return DeadlineForecast(
            next_start=start,
            expected_finish=None,
            deadline=deadline,
            slack_s=None,
            late=False,
            samples=len(durations_s),
            percentile=percentile,
            percentile_duration_s=None,
        )
    duration = percentile_nearest_rank(durations_s, percentile)
    finish = start + timedelta(seconds=duration)
    slack = (deadline - finish).total_seconds()
    return DeadlineForecast(
        next_start=start,
        expected_finish=finish,
        deadline=deadline,
        slack_s=slack,
        late=slack < 0,
        samples=len(durations_s),
        percentile=percentile,
        percentile_duration_s=duration,
    )


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _standard_weekdays(field: str) -> str:
    """Crontab's day-of-week field (0 and 7 are Sunday) as day names, which APScheduler 3 reads right.

    APScheduler 3 numbers weekdays from Monday = 0 (its documented historical mistake), so "1-5" would
    mean Tuesday to Saturday; names mean the same to both. Numbers and names are not mixed in one field.
    """
    if not any(char.isdigit() for char in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = int(first), int(last)
        else:
            low = int(base)
            high = 7 if step_text else low  # "a/step": from a to the end of the week
        if not (0 <= low <= high <= 7) or step < 1:
            raise ValueError(f"day of week {part!r} is outside 0-7")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


def cron_trigger(crontab: str) -> Any:
    """An APScheduler CronTrigger (UTC) for a standard 5-field crontab, weekdays numbered as in cron."""
    from apscheduler.triggers.cron import CronTrigger

    fields = crontab.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields, got {len(fields)}")
        minute, hour, day, month, weekday = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_standard_weekdays(weekday),
            timezone=UTC,
        )
    except ValueError as exc:
        raise ConfigurationError(f"{crontab!r} is not a valid crontab (5 fields, UTC): {exc}") from None


def next_cron_start(crontab: str, *, now: datetime) -> datetime | None:
    """The first fire time of a crontab (read as UTC) at or after `now`; None if it never fires again."""
    fire: datetime | None = cron_trigger(crontab).get_next_fire_time(None, _utc(now, "now"))
    return None if fire is None else fire.astimezone(UTC)
