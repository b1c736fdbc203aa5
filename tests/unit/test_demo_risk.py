"""Pure tests of the demo data generator: the hidden risk function and one chunk of customers (no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from tandem.demo.risk import (
    CHUNK_CUSTOMERS,
    PROFILE_FEATURES,
    TXN_FEATURES,
    DemoChunk,
    epoch_us,
    generate_chunk,
    hidden_risk_logit,
)

END = datetime(2025, 6, 1, 12, 34, 56, tzinfo=UTC)
DAYS = 30
BASE: dict[str, float] = {
    "account_age_days": 400.0,
    "credit_utilization": 0.3,
    "has_2fa": 1.0,
    "country_risk": 0.05,
    "credit_limit": 4000.0,
    "max_amount_24h": 80.0,
    "txn_count_24h": 3.0,
    "txn_count_7d": 21.0,
    "foreign_txn_ratio_7d": 0.05,
}


def _logit(**changes: float) -> float:
    return float(hidden_risk_logit(**{**BASE, **changes}))


@pytest.fixture(scope="module")
def chunk() -> DemoChunk:
    """A full chunk of 30 days, generated once for the module."""
    return generate_chunk(seed=11, chunk_index=0, customers=CHUNK_CUSTOMERS, days=DAYS, end=END)


def test_hidden_risk_has_the_documented_value() -> None:
    """With every feature at zero (limit 1000) only the intercept and the young-account term remain."""
    value = hidden_risk_logit(
        account_age_days=0,
        credit_utilization=0,
        has_2fa=0,
        country_risk=0,
        credit_limit=1000,
        max_amount_24h=0,
        txn_count_24h=0,
        txn_count_7d=0,
        foreign_txn_ratio_7d=0,
    )
    assert value.dtype == np.float64
    assert float(value) == pytest.approx(-4.9 + 1.5)


@pytest.mark.parametrize(
    ("feature", "low", "high"),
    [
        ("foreign_txn_ratio_7d", 0.0, 0.6),
        ("max_amount_24h", 20.0, 2000.0),
        ("country_risk", 0.01, 0.7),
        ("credit_utilization", 0.1, 0.95),
        ("txn_count_24h", 1.0, 25.0),
    ],
)
def test_hidden_risk_increases_in_risky_directions(feature: str, low: float, high: float) -> None:
    """More foreign spend, bigger amounts, riskier countries, higher utilization or a burst raise the risk."""
    assert _logit(**{feature: high}) > _logit(**{feature: low})


@pytest.mark.parametrize(
    ("feature", "low", "high"),
    [
        ("has_2fa", 0.0, 1.0),
        ("account_age_days", 5.0, 2000.0),
        ("credit_limit", 1000.0, 20000.0),
        ("txn_count_7d", 7.0, 70.0),
    ],
)
def test_hidden_risk_decreases_in_protective_directions(feature: str, low: float, high: float) -> None:
    """2FA, older accounts, larger limits and a busier usual week lower the risk."""
    assert _logit(**{feature: high}) < _logit(**{feature: low})


def test_hidden_risk_is_elementwise() -> None:
    """Arrays in give one logit per element, each equal to the scalar result."""
    ratios = np.array([0.0, 0.2, 0.9])
    inputs: dict[str, npt.ArrayLike] = {**BASE, "foreign_txn_ratio_7d": ratios}
    values = hidden_risk_logit(**inputs)
    assert values.shape == (3,)
    assert values.tolist() == pytest.approx([_logit(foreign_txn_ratio_7d=float(r)) for r in ratios])


def _assert_same(a: DemoChunk, b: DemoChunk) -> None:
    for field in ("customer_ids", "profile_event_us", "profile_created_us", "txn_event_us", "txn_created_us"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    for field in ("txn_present", "label_day", "label_event_us", "label"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    for name in PROFILE_FEATURES:
        np.testing.assert_array_equal(a.profile[name], b.profile[name])
    for name in TXN_FEATURES:
        np.testing.assert_array_equal(a.txn[name], b.txn[name])


def test_chunk_is_deterministic_for_a_seed() -> None:
    """The same (seed, chunk, days, end) gives bit-identical arrays; another seed or chunk gives others."""

    def make(seed: int, chunk_index: int = 2) -> DemoChunk:
        return generate_chunk(seed=seed, chunk_index=chunk_index, customers=500, days=7, end=END)

    first = make(5)
    _assert_same(first, make(5))
    assert not np.array_equal(first.profile["credit_limit"], make(6).profile["credit_limit"])
    other_chunk = make(5, chunk_index=3)
    assert not np.array_equal(first.txn["txn_amount_24h"], other_chunk.txn["txn_amount_24h"])
    np.testing.assert_array_equal(first.customer_ids, np.arange(1, 501) + 2 * CHUNK_CUSTOMERS)


def test_customers_do_not_depend_on_the_chunk_size_kept(chunk: DemoChunk) -> None:
    """A partial chunk is the prefix of the full one: a customer's rows never depend on the total."""
    small = generate_chunk(seed=11, chunk_index=0, customers=300, days=DAYS, end=END)
    assert small.label.tolist() == chunk.label[:300].tolist()
    np.testing.assert_array_equal(small.txn["max_amount_24h"], chunk.txn["max_amount_24h"][:300])


def test_no_timestamp_is_after_end(chunk: DemoChunk) -> None:
    """Event and created timestamps of every table are at or before `end`, and created >= event."""
    end_us = epoch_us(END)
    for event, created in (
        (chunk.profile_event_us, chunk.profile_created_us),
        (chunk.txn_event_us, chunk.txn_created_us),
    ):
        assert event.max() <= end_us
        assert created.max() <= end_us
        assert (created >= event).all()
    assert chunk.label_event_us.max() <= end_us


def test_timestamps_follow_the_daily_layout(chunk: DemoChunk) -> None:
    """Profiles are at the floored hour, day by day; txn stats 1-60 minutes before; labels 1 s after txn."""
    last = epoch_us(END.replace(minute=0, second=0, microsecond=0))
    day = timedelta(days=1) // timedelta(microseconds=1)
    expected = last - day * np.arange(DAYS - 1, -1, -1)
    assert (chunk.profile_event_us == expected[None, :]).all()
    lag_minutes = (chunk.profile_event_us - chunk.txn_event_us) / 60e6
    assert lag_minutes.min() >= 1
    assert lag_minutes.max() <= 60
    assert (lag_minutes == lag_minutes[:, :1]).all()  # one offset per customer
    rows = np.arange(chunk.customer_ids.size)
    assert (chunk.label_event_us == chunk.txn_event_us[rows, chunk.label_day] + 1_000_000).all()


def test_gap_rate_is_about_three_percent(chunk: DemoChunk) -> None:
    """About 3% of txn-stats snapshots are missing, never on the label day, so some customers have gaps."""
    gap_rate = 1.0 - float(chunk.txn_present.mean())
    assert 0.025 <= gap_rate <= 0.035
    rows = np.arange(chunk.customer_ids.size)
    assert chunk.txn_present[rows, chunk.label_day].all()
    with_gaps = float((~chunk.txn_present).any(axis=1).mean())
    assert 0.3 < with_gaps < 0.8


def test_labels_are_one_per_customer_on_days_after_the_first(chunk: DemoChunk) -> None:
    """Every customer has one label on a day in 1..D-1, fraud rate 3-8%."""
    assert chunk.label_day.min() >= 1
    assert chunk.label_day.max() == DAYS - 1
    assert set(np.unique(chunk.label).tolist()) == {0, 1}
    assert 0.03 <= float(chunk.label.mean()) <= 0.08


def test_profile_values_are_in_range_and_change_slowly(chunk: DemoChunk) -> None:
    """Bounded, plausible profiles: age +1 a day, utilization and country risk in [0, 1], 1-6 cards, ~60% 2FA."""
    p = chunk.profile
    assert (np.diff(p["account_age_days"], axis=1) == 1).all()
    assert p["account_age_days"].min() >= 0
    assert p["credit_limit"].min() >= 300
    assert (np.diff(p["credit_limit"], axis=1) >= 0).all()
    assert 0.0 <= p["credit_utilization"].min() <= p["credit_utilization"].max() <= 1.0
    assert 0.0 <= p["country_risk"].min() <= p["country_risk"].max() <= 1.0
    assert float(np.median(p["country_risk"])) < 0.1
    assert set(np.unique(p["num_cards"]).tolist()) <= set(range(1, 7))
    assert set(np.unique(p["has_2fa"]).tolist()) == {0, 1}
    assert 0.55 <= float(p["has_2fa"][:, 0].mean()) <= 0.65
    for name in PROFILE_FEATURES:
        assert p[name].dtype in (np.int64, np.float64)


def test_txn_values_are_consistent(chunk: DemoChunk) -> None:
    """Daily, 7-day and 30-day aggregates agree with each other and are non-negative."""
    t = chunk.txn
    assert t["txn_count_24h"].min() >= 0
    assert (t["txn_count_7d"] >= t["txn_count_24h"]).all()
    assert (t["max_amount_24h"] <= t["txn_amount_24h"] + 1e-6).all()
    assert ((t["txn_count_24h"] == 0) == (t["txn_amount_24h"] == 0)).all()
    assert 0.0 <= t["foreign_txn_ratio_7d"].min() <= t["foreign_txn_ratio_7d"].max() <= 1.0
    assert (t["distinct_merchants_7d"] <= t["txn_count_7d"]).all()
    assert ((t["distinct_merchants_7d"] > 0) == (t["txn_count_7d"] > 0)).all()
    assert t["avg_amount_30d"].min() >= 0
    window_sum = t["txn_count_24h"][:, -7:].sum(axis=1)
    assert (t["txn_count_7d"][:, -1] == window_sum).all()
    mean_daily = float(t["txn_count_24h"].mean())
    assert 1.0 < mean_daily < 10.0
    assert math.isfinite(float(t["avg_amount_30d"].mean()))


@pytest.mark.parametrize(
    ("customers", "days", "end"),
    [
        (0, 5, END),
        (CHUNK_CUSTOMERS + 1, 5, END),
        (10, 1, END),
        (10, 5, END.replace(tzinfo=None)),
    ],
    ids=["no-customers", "more-than-a-chunk", "one-day", "naive-end"],
)
def test_generate_chunk_rejects_invalid_arguments(customers: int, days: int, end: datetime) -> None:
    """Out-of-range sizes and a naive `end` raise ValueError."""
    with pytest.raises(ValueError, match=r"customers|days|end"):
        generate_chunk(seed=1, chunk_index=0, customers=customers, days=days, end=end)
