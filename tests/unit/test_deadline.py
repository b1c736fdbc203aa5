"""Pure tests of the batch deadline forecast: percentile, expected finish, deadline day, slack, edge cases."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from core.errors import ConfigurationError
from core.records.deadline import (
    DeadlineForecast,
    forecast_deadline,
    next_cron_start,
    percentile_nearest_rank,
)

START = datetime(2025, 3, 10, 2, 0, tzinfo=UTC)
EIGHT = time(8, 0)


def _forecast(
    durations: list[float], *, start: datetime | None = START, at: time = EIGHT, p: float = 0.9
) -> DeadlineForecast:
    return forecast_deadline(durations, next_start=start, deadline_time=at, percentile=p)


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        ([5.0], 0.9, 5.0),
        ([5.0], 0.01, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9, 9.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.91, 10.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 1.0, 10.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.5, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.1, 1.0),
        ([10.0, 1.0, 7.0], 0.5, 7.0),
        ([3.0, 3.0, 3.0], 0.9, 3.0),
        ([0.0, 100.0], 0.5, 0.0),
        ([0.0, 100.0], 0.51, 100.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], percentile: float, expected: float) -> None:
    """The percentile is the smallest value that at least that share of values does not exceed."""
    assert percentile_nearest_rank(values, percentile) == expected


@pytest.mark.parametrize("percentile", [0.0, -0.1, 1.01, math.nan])
def test_percentile_outside_zero_one_is_refused(percentile: float) -> None:
    """A percentile must lie in (0, 1]: anything else is a ValueError, in both functions."""
    with pytest.raises(ValueError, match="percentile"):
        percentile_nearest_rank([1.0], percentile)
    with pytest.raises(ValueError, match="percentile"):
        _forecast([1.0], p=percentile)


def test_percentile_of_nothing_is_refused() -> None:
    """There is no percentile of an empty list."""
    with pytest.raises(ValueError, match="no values"):
        percentile_nearest_rank([], 0.9)


def test_on_time_forecast_has_positive_slack() -> None:
    """Ten runs of 1..10 min from 02:00: p90 is 9 min, finish 02:09, deadline 08:00 the same day, not late."""
    forecast = _forecast([60.0 * minutes for minutes in range(1, 11)])
    assert forecast.next_start == START
    assert forecast.percentile_duration_s == 540.0
    assert forecast.expected_finish == START + timedelta(minutes=9)
    assert forecast.deadline == datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    assert forecast.slack_s == (timedelta(hours=5, minutes=51)).total_seconds()
    assert forecast.late is False
    assert forecast.samples == 10
    assert forecast.percentile == 0.9
    assert forecast.available


def test_late_forecast_has_negative_slack() -> None:
    """Runs of 7 h from 02:00 end at 09:00, an hour past the 08:00 deadline: late, slack -3600 s."""
    forecast = _forecast([7 * 3600.0, 7 * 3600.0])
    assert forecast.expected_finish == datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    assert forecast.slack_s == -3600.0
    assert forecast.late is True


def test_finishing_exactly_at_the_deadline_is_not_late() -> None:
    """Zero slack is on time."""
    forecast = _forecast([6 * 3600.0])
    assert forecast.slack_s == 0.0
    assert forecast.late is False


def test_one_slow_outlier_among_many_does_not_decide_p90() -> None:
    """Nine quick runs and one 10-hour run: p90 is a quick run's duration (the outlier is the top 10 %)."""
    forecast = _forecast([600.0] * 9 + [36_000.0])
    assert forecast.percentile_duration_s == 600.0
    assert forecast.late is False


def test_p100_takes_the_slowest_run() -> None:
    """With percentile 1.0 the slowest past run decides, and it is late."""
    forecast = _forecast([600.0] * 9 + [36_000.0], p=1.0)
    assert forecast.percentile_duration_s == 36_000.0
    assert forecast.late is True


def test_start_after_the_deadline_time_means_tomorrows_deadline() -> None:
    """A run starting at 09:00 is due at 08:00 the next day: the first deadline at or after the start."""
    start = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    forecast = _forecast([3600.0], start=start)
    assert forecast.deadline == datetime(2025, 3, 11, 8, 0, tzinfo=UTC)
    assert forecast.slack_s == (timedelta(hours=22)).total_seconds()


def test_start_exactly_at_the_deadline_time_is_due_at_once() -> None:
    """The deadline occurrence at the very start counts: a run starting at 08:00 is due at 08:00."""
    start = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    forecast = _forecast([1.0], start=start)
    assert forecast.deadline == start
    assert forecast.late is True
    assert forecast.slack_s == -1.0


def test_deadline_crosses_month_and_year_ends() -> None:
    """From 23:30 on New Year's Eve, an 08:00 deadline falls on 1 January."""
    start = datetime(2024, 12, 31, 23, 30, tzinfo=UTC)
    forecast = _forecast([1800.0], start=start)
    assert forecast.deadline == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert forecast.expected_finish == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)


def test_a_run_spanning_past_the_next_days_deadline_is_late() -> None:
    """A 30-hour run starting at 09:00 misses the 08:00 deadline of the next day."""
    start = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    forecast = _forecast([30 * 3600.0], start=start)
    assert forecast.deadline == datetime(2025, 3, 11, 8, 0, tzinfo=UTC)
    assert forecast.late is True
    assert forecast.slack_s == -7 * 3600.0


def test_non_utc_start_is_converted_to_utc() -> None:
    """A start given in another zone is the same instant in UTC; the deadline is still 08:00 UTC."""
    paris = timezone(timedelta(hours=1))
    forecast = _forecast([60.0], start=datetime(2025, 3, 10, 3, 0, tzinfo=paris))
    assert forecast.next_start == START
    assert forecast.next_start is not None
    assert forecast.next_start.tzinfo == UTC
    assert forecast.deadline == datetime(2025, 3, 10, 8, 0, tzinfo=UTC)


def test_deadline_time_with_utc_tzinfo_is_accepted() -> None:
    """`time(8, 0, tzinfo=UTC)` means the same as a naive 08:00 (read as UTC)."""
    assert _forecast([60.0], at=time(8, 0, tzinfo=UTC)).deadline == _forecast([60.0]).deadline


def test_deadline_time_in_another_zone_is_refused() -> None:
    """The deadline time of day is UTC by contract: another offset is a ValueError, not a silent shift."""
    with pytest.raises(ValueError, match="UTC"):
        _forecast([60.0], at=time(8, 0, tzinfo=timezone(timedelta(hours=2))))


def test_naive_start_is_refused() -> None:
    """Naive datetimes never cross this boundary."""
    with pytest.raises(ValueError, match="timezone-aware"):
        _forecast([60.0], start=datetime(2025, 3, 10, 2, 0))  # noqa: DTZ001 - the naive input under test


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_negative_or_non_finite_durations_are_refused(bad: float) -> None:
    """Durations are finite and non-negative."""
    with pytest.raises(ValueError, match="durations"):
        _forecast([60.0, bad])


def test_no_history_gives_no_forecast_but_says_when() -> None:
    """No past run: no finish, slack or percentile, not late, samples 0; start and deadline still known."""
    forecast = _forecast([])
    assert forecast.samples == 0
    assert forecast.expected_finish is None
    assert forecast.slack_s is None
    assert forecast.percentile_duration_s is None
    assert forecast.late is False
    assert not forecast.available
    assert forecast.next_start == START
    assert forecast.deadline == datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    assert "no successful run yet" in forecast.describe()


def test_no_next_start_gives_no_forecast() -> None:
    """A schedule that never fires again: nothing to forecast, whatever the history."""
    forecast = _forecast([60.0, 120.0], start=None)
    assert forecast.next_start is None
    assert forecast.deadline is None
    assert forecast.expected_finish is None
    assert forecast.samples == 2
    assert forecast.late is False
    assert "no next start" in forecast.describe()


def test_describe_names_percentile_samples_slack_and_late() -> None:
    """The one-line description carries every number a person needs, and LATE when late."""
    on_time = _forecast([60.0] * 5).describe()
    assert "p90 of 5 past runs: 60.0 s" in on_time
    assert "expected finish 2025-03-10 02:01:00 UTC" in on_time
    assert "deadline 2025-03-10 08:00 UTC" in on_time
    assert "slack +21540 s" in on_time
    assert "LATE" not in on_time
    late = _forecast([7 * 3600.0], p=0.5).describe()
    assert "p50 of 1 past runs" in late
    assert late.endswith("slack -3600 s, LATE")


@pytest.mark.parametrize(
    ("crontab", "now", "expected"),
    [
        ("0 2 * * *", datetime(2025, 3, 10, 1, 0, tzinfo=UTC), datetime(2025, 3, 10, 2, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2025, 3, 10, 2, 0, tzinfo=UTC), datetime(2025, 3, 10, 2, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2025, 3, 10, 2, 0, 1, tzinfo=UTC), datetime(2025, 3, 11, 2, 0, tzinfo=UTC)),
        (
            "30 23 * * 1-5",
            datetime(2025, 3, 14, 23, 31, tzinfo=UTC),
            datetime(2025, 3, 17, 23, 30, tzinfo=UTC),
        ),
        ("*/15 * * * *", datetime(2025, 3, 10, 2, 1, tzinfo=UTC), datetime(2025, 3, 10, 2, 15, tzinfo=UTC)),
    ],
)
def test_next_cron_start_reads_the_crontab_in_utc(crontab: str, now: datetime, expected: datetime) -> None:
    """The next start is the crontab's first fire time at or after now, in UTC."""
    assert next_cron_start(crontab, now=now) == expected


@pytest.mark.parametrize(
    ("weekdays", "expected_days"),
    [
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("0,6", ["Sat", "Sun"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("0-6", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        ("*/2", ["Tue", "Thu", "Sat", "Sun"]),
        ("1/3", ["Mon", "Thu", "Sun"]),
        ("1-5/2", ["Mon", "Wed", "Fri"]),
        ("mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("sun", ["Sun"]),
        ("*", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    ],
)
def test_weekdays_are_numbered_as_in_cron(weekdays: str, expected_days: list[str]) -> None:
    """Day-of-week numbers mean what cron means (0 and 7 are Sunday), not APScheduler 3's Monday = 0."""
    now = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)  # a Monday
    fired = set()
    for _ in range(7):
        start = next_cron_start(f"0 2 * * {weekdays}", now=now)
        assert start is not None
        fired.add(start.strftime("%a"))
        now = start + timedelta(seconds=1)
    assert sorted(fired) == sorted(expected_days)


@pytest.mark.parametrize("crontab", ["0 2 * * 8", "0 2 * * 5-2", "0 2 * * mon-5", "0 2 * *", "0 25 * * *"])
def test_bad_fields_are_configuration_errors(crontab: str) -> None:
    """Out-of-range or malformed fields are refused with the crontab named."""
    with pytest.raises(ConfigurationError, match="not a valid crontab"):
        next_cron_start(crontab, now=START)


def test_next_cron_start_converts_other_zones() -> None:
    """`now` in another zone is the same instant: 02:30+01:00 is 01:30 UTC, before the 02:00 UTC run."""
    now = datetime(2025, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    assert next_cron_start("0 2 * * *", now=now) == datetime(2025, 3, 10, 2, 0, tzinfo=UTC)


def test_invalid_crontab_is_a_configuration_error() -> None:
    """A malformed crontab names itself in a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="'every night'"):
        next_cron_start("every night", now=START)
