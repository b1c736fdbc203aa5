"""Pure generation of the card-fraud demo data: the hidden risk function and one chunk of customers.

No I/O here: `generate_chunk` returns numpy columns that `tandem.demo.data` serialises and loads. A chunk always
draws `CHUNK_CUSTOMERS` customers from `default_rng([seed, chunk_index])` and keeps the first ones it needs,
so a customer's rows depend only on (seed, customer id, days, end), never on the total number of customers.

Timestamps are int64 microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHUNK_CUSTOMERS",
    "GAP_RATE",
    "HISTORY_DAYS",
    "INTEGER_FEATURES",
    "PROFILE_FEATURES",
    "TXN_FEATURES",
    "DemoChunk",
    "epoch_us",
    "generate_chunk",
    "hidden_risk_logit",
]

CHUNK_CUSTOMERS = 10_000
"""Customers generated per chunk (and per random stream)."""
HISTORY_DAYS = 29
"""Days of transactions simulated before the first snapshot so the 7d and 30d windows are always full."""
GAP_RATE = 0.03
"""Probability that a (customer, day) transaction-stats snapshot is missing (never on the label day)."""
RISK_NOISE_SD = 0.5
"""Standard deviation of the normal noise added to the hidden risk logit before drawing the label."""

PROFILE_FEATURES: tuple[str, ...] = (
    "account_age_days",
    "credit_limit",
    "credit_utilization",
    "num_cards",
    "has_2fa",
    "country_risk",
)
TXN_FEATURES: tuple[str, ...] = (
    "txn_count_24h",
    "txn_amount_24h",
    "max_amount_24h",
    "txn_count_7d",
    "avg_amount_30d",
    "foreign_txn_ratio_7d",
    "distinct_merchants_7d",
)
INTEGER_FEATURES: frozenset[str] = frozenset(
    {"account_age_days", "num_cards", "has_2fa", "txn_count_24h", "txn_count_7d", "distinct_merchants_7d"}
)
"""Features stored as int64 / BIGINT; every other feature is float64 / DOUBLE PRECISION."""

_DAY_US = 86_400_000_000
_MINUTE_US = 60_000_000
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Column = IntArray | FloatArray


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact integer arithmetic)."""
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def hidden_risk_logit(
    *,
    account_age_days: npt.ArrayLike,
    credit_utilization: npt.ArrayLike,
    has_2fa: npt.ArrayLike,
    country_risk: npt.ArrayLike,
    credit_limit: npt.ArrayLike,
    max_amount_24h: npt.ArrayLike,
    txn_count_24h: npt.ArrayLike,
    txn_count_7d: npt.ArrayLike,
    foreign_txn_ratio_7d: npt.ArrayLike,
) -> FloatArray:
    """The fraud log-odds the labels are drawn from (before noise), elementwise.

    logit = -4.9
          + 3.5 * foreign_txn_ratio_7d
          + 0.8 * log1p(100 * max_amount_24h / credit_limit)      (spend against the limit)
          + 6.0 * country_risk
          - 1.0 * has_2fa
          + 1.0 * (log1p(txn_count_24h) - log1p(txn_count_7d / 7))   (velocity spike vs the week)
          + 1.5 * exp(-account_age_days / 120)                     (young accounts)
          + 1.0 * credit_utilization

    Increasing in foreign ratio, max amount, country risk, utilization and today's count; decreasing in
    2FA, account age, credit limit and the 7-day count. The intercept gives a fraud rate of about 5%.
    """
    f = np.float64
    age = np.asarray(account_age_days, dtype=f)
    limit = np.maximum(np.asarray(credit_limit, dtype=f), 1.0)
    spike = np.log1p(np.asarray(txn_count_24h, dtype=f)) - np.log1p(np.asarray(txn_count_7d, dtype=f) / 7.0)
    logit = (
        -4.9
        + 3.5 * np.asarray(foreign_txn_ratio_7d, dtype=f)
        + 0.8 * np.log1p(100.0 * np.asarray(max_amount_24h, dtype=f) / limit)
        + 6.0 * np.asarray(country_risk, dtype=f)
        - 1.0 * np.asarray(has_2fa, dtype=f)
        + 1.0 * spike
        + 1.5 * np.exp(-age / 120.0)
        + 1.0 * np.asarray(credit_utilization, dtype=f)
    )
    return np.asarray(logit, dtype=f)


@dataclass(frozen=True, slots=True)
class DemoChunk:
    """One chunk of customers: 2-D arrays are (customer, day), customer-major; times in Unix microseconds."""

    customer_ids: IntArray
    profile_event_us: IntArray
    profile_created_us: IntArray
    profile: dict[str, Column]
    txn_event_us: IntArray
    txn_created_us: IntArray
    txn: dict[str, Column]
    txn_present: BoolArray
    label_day: IntArray
    label_event_us: IntArray
    label: IntArray


def _windows(daily: npt.NDArray[np.float64] | IntArray, width: int, days: int) -> FloatArray:
    """Trailing sums over `width` days for each of the last `days` columns of `daily`."""
    padded = np.zeros((daily.shape[0], daily.shape[1] + 1), dtype=np.float64)
    np.cumsum(daily, axis=1, out=padded[:, 1:])
    stop = np.arange(daily.shape[1] - days + 1, daily.shape[1] + 1)
    return np.asarray(padded[:, stop] - padded[:, stop - width], dtype=np.float64)


def _profiles(rng: np.random.Generator, n: int, days: int) -> dict[str, Column]:
    """Slowly changing per-customer profile snapshots, (n, days)."""
    step = np.arange(days, dtype=np.int64)
    new_account = rng.random(n) < 0.12
    age0 = np.where(new_account, rng.integers(0, 90, n), np.minimum(rng.lognormal(6.4, 0.7, n), 7300.0))
    limit0 = rng.lognormal(8.2, 0.6, n)
    raises = np.where(rng.random((n, days)) < 0.004, rng.uniform(1.1, 1.5, (n, days)), 1.0)
    util_base = rng.beta(1.5, 4.0, n)
    util_shock = rng.normal(0.0, 0.02, (n, days))
    util = np.empty((n, days), dtype=np.float64)
    level = util_base.copy()
    for d in range(days):  # AR(1) around the customer's usual utilization
        level = np.clip(util_base + 0.9 * (level - util_base) + util_shock[:, d], 0.0, 1.0)
        util[:, d] = level
    cards0 = 1 + rng.binomial(5, 0.22, n)
    new_cards = np.cumsum(rng.random((n, days)) < 0.002, axis=1)
    twofa0 = rng.random(n) < 0.6
    enables = np.cumsum(rng.random((n, days)) < 0.003, axis=1) > 0
    country = rng.beta(0.7, 8.0, n)
    return {
        "account_age_days": (age0.astype(np.int64)[:, None] + step[None, :]).astype(np.int64),
        "credit_limit": np.maximum(np.round(limit0[:, None] * np.cumprod(raises, axis=1), -2), 300.0),
        "credit_utilization": np.round(util, 4),
        "num_cards": np.minimum(cards0[:, None] + new_cards, 6).astype(np.int64),
        "has_2fa": (twofa0[:, None] | enables).astype(np.int64),
        "country_risk": np.repeat(np.round(country, 4)[:, None], days, axis=1),
    }


def _segment(values: npt.NDArray[np.float64], counts: IntArray, op: np.ufunc) -> FloatArray:
    """`op`-reduce consecutive segments of `values` of lengths `counts`; empty segments give 0."""
    out = np.zeros(counts.size, dtype=np.float64)
    nonempty = counts > 0
    if values.size:
        starts = (np.cumsum(counts) - counts)[nonempty]
        out[nonempty] = op.reduceat(values, starts)
    return out


def _txn_stats(rng: np.random.Generator, n: int, days: int) -> dict[str, Column]:
    """Daily transaction aggregates, (n, days), from individually simulated transactions."""
    total_days = HISTORY_DAYS + days
    rate = rng.gamma(2.0, 1.6, n)
    log_mu = rng.normal(3.4, 0.6, n)
    log_sd = rng.uniform(0.6, 1.1, n)
    foreign_p = rng.beta(0.6, 10.0, n)
    diversity = rng.beta(2.0, 2.5, n)
    burst = rng.random((n, total_days)) < 0.02
    daily_rate = rate[:, None] * rng.gamma(4.0, 0.25, (n, total_days)) * np.where(burst, 4.0, 1.0)
    counts = rng.poisson(daily_rate).astype(np.int64)
    flat = counts.ravel()
    per_customer = counts.sum(axis=1)
    z = rng.standard_normal(int(flat.sum()))
    log_amount = np.repeat(log_mu, per_customer) + np.repeat(log_sd, per_customer) * z
    amounts = np.asarray(np.maximum(np.round(np.exp(log_amount), 2), 0.5), dtype=np.float64)
    p_foreign = np.repeat(foreign_p, per_customer)
    p_foreign = np.where(np.repeat(burst.ravel(), flat), np.minimum(4.0 * p_foreign + 0.2, 1.0), p_foreign)
    foreign = (rng.random(p_foreign.size) < p_foreign).astype(np.float64)
    day_sum = _segment(amounts, flat, np.add).reshape(n, total_days)
    day_max = _segment(amounts, flat, np.maximum).reshape(n, total_days)
    day_foreign = _segment(foreign, flat, np.add).reshape(n, total_days)
    count_7d = np.rint(_windows(counts, 7, days)).astype(np.int64)
    count_30d = _windows(counts, 30, days)
    amount_30d = _windows(day_sum, 30, days)
    foreign_7d = _windows(day_foreign, 7, days)
    extra = rng.binomial(np.maximum(count_7d - 1, 0), diversity[:, None])
    return {
        "txn_count_24h": counts[:, HISTORY_DAYS:],
        "txn_amount_24h": np.round(day_sum[:, HISTORY_DAYS:], 2),
        "max_amount_24h": day_max[:, HISTORY_DAYS:],
        "txn_count_7d": count_7d,
        "avg_amount_30d": np.round(amount_30d / np.maximum(count_30d, 1.0), 2),
        "foreign_txn_ratio_7d": np.round(foreign_7d / np.maximum(count_7d, 1), 4),
        "distinct_merchants_7d": np.where(count_7d > 0, 1 + extra, 0).astype(np.int64),
    }


def _first(values: Column, rows: int) -> Column:
    """A contiguous copy of the first `rows` rows."""
    return values[:rows].copy()


def generate_chunk(*, seed: int, chunk_index: int, customers: int, days: int, end: datetime) -> DemoChunk:
    """The first `customers` (<= CHUNK_CUSTOMERS) customers of chunk `chunk_index`, ids from chunk_index*CHUNK+1.

    Profile snapshot d is at floor_to_hour(end) - (days-1-d) days; the same day's transaction stats are a
    per-customer 0-59 minutes later minus one hour. `created` is a few seconds to minutes later, capped at
    `end`. The label day is uniform in 1..days-1; its label is drawn from `hidden_risk_logit` on the latest
    profile before it (the previous day's) and that day's transaction stats, plus normal noise.
    """
    if not 0 < customers <= CHUNK_CUSTOMERS:
        raise ValueError(f"customers must be in 1..{CHUNK_CUSTOMERS}, got {customers}")
    if days < 2:
        raise ValueError(f"days must be at least 2, got {days}")
    if end.tzinfo is None or end.utcoffset() is None:
        raise ValueError("end must be a timezone-aware datetime")
    rng = np.random.default_rng([seed, chunk_index])
    n = CHUNK_CUSTOMERS
    profile = _profiles(rng, n, days)
    txn = _txn_stats(rng, n, days)
    end_us = epoch_us(end)
    last_us = epoch_us(end.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
    day_us = last_us - _DAY_US * np.arange(days - 1, -1, -1, dtype=np.int64)
    offset_us = rng.integers(0, 60, n, dtype=np.int64) * _MINUTE_US - 60 * _MINUTE_US
    profile_event = np.broadcast_to(day_us[None, :], (n, days))
    txn_event = profile_event + offset_us[:, None]
    profile_created = np.minimum(profile_event + rng.integers(1, 300, (n, days)) * 1_000_000, end_us)
    txn_created = np.minimum(txn_event + rng.integers(1, 300, (n, days)) * 1_000_000, end_us)
    label_day = rng.integers(1, days, n, dtype=np.int64)
    present = rng.random((n, days)) >= GAP_RATE
    rows = np.arange(n)
    present[rows, label_day] = True
    before = label_day - 1
    logit = hidden_risk_logit(
        account_age_days=profile["account_age_days"][rows, before],
        credit_utilization=profile["credit_utilization"][rows, before],
        has_2fa=profile["has_2fa"][rows, before],
        country_risk=profile["country_risk"][rows, before],
        credit_limit=profile["credit_limit"][rows, before],
        max_amount_24h=txn["max_amount_24h"][rows, label_day],
        txn_count_24h=txn["txn_count_24h"][rows, label_day],
        txn_count_7d=txn["txn_count_7d"][rows, label_day],
        foreign_txn_ratio_7d=txn["foreign_txn_ratio_7d"][rows, label_day],
    ) + rng.normal(0.0, RISK_NOISE_SD, n)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    keep = slice(0, customers)
    return DemoChunk(
        customer_ids=np.arange(chunk_index * n + 1, chunk_index * n + 1 + customers, dtype=np.int64),
        profile_event_us=np.ascontiguousarray(profile_event[keep], dtype=np.int64),
        profile_created_us=profile_created[keep].astype(np.int64),
        profile={name: _first(profile[name], customers) for name in PROFILE_FEATURES},
        txn_event_us=txn_event[keep].astype(np.int64),
        txn_created_us=txn_created[keep].astype(np.int64),
        txn={name: _first(txn[name], customers) for name in TXN_FEATURES},
        txn_present=present[keep].copy(),
        label_day=label_day[keep].copy(),
        label_event_us=(txn_event[rows, label_day] + 1_000_000)[keep].astype(np.int64),
        label=label[keep].copy(),
    )
