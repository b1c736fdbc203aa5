"""Distribution skew per feature (PSI, Jensen-Shannon distance), chart histograms, and statuses by thresholds.

Pure: no I/O. Both distances compare the offline (expected) sample with the online (served) sample of one
feature over the same bins:

- numeric features (float64, float32, int64, int32; float32 values rounded to float32 on both sides, as
  the classifier compares them): interior edges at the offline sample's deciles (duplicates dropped,
  so a feature with few distinct values gets one bin per value); a value equal to an edge falls in the bin
  to its right; values beyond the outer edges fall in the outer bins. Without offline values the online
  sample's deciles are used;
- categorical features (string, bool): one bin per value seen in either sample;
- nulls: one more bin, so a feature that goes missing online moves the distributions too.

PSI is `sum((q - p) * ln(q / p))` with p offline and q online proportions, each floored at `EPSILON` so an
empty bin on one side stays finite. The Jensen-Shannon distance is the square root of the JS divergence in
base 2 (0 = same distribution, 1 = disjoint), computed without flooring. Both are None when either sample
is empty.

Statuses: a measure at or above its breach threshold is `breach`, at or above its warn threshold `warn`,
else `ok`; zero is always `ok`. A feature's status is the worst of its mismatch rate, PSI and JS distance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from consistency.classify import ValueColumn, comparable_values
from core.settings import Settings

__all__ = [
    "EPSILON",
    "STATUSES",
    "Distances",
    "Histogram",
    "Status",
    "Thresholds",
    "chart_histogram",
    "distribution_distances",
    "feature_status",
    "js_distance",
    "level",
    "population_stability_index",
    "worst",
]

Status = Literal["ok", "warn", "breach"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "breach")
EPSILON = 1e-4
_DECILES = np.linspace(0.1, 0.9, 9)
_CHART_BINS = 20
_CATEGORIES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Warn and breach levels of the three measures (from settings)."""

    mismatch_rate_warn: float
    mismatch_rate_breach: float
    psi_warn: float
    psi_breach: float
    js_warn: float
    js_breach: float

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        """The thresholds in settings."""
        return cls(
            mismatch_rate_warn=settings.mismatch_rate_warn,
            mismatch_rate_breach=settings.mismatch_rate_breach,
            psi_warn=settings.psi_warn,
            psi_breach=settings.psi_breach,
            js_warn=settings.js_warn,
            js_breach=settings.js_breach,
        )


@dataclass(frozen=True, slots=True)
class Histogram:
    """Offline vs online counts over the same bins, for a chart; nulls counted apart."""

    kind: Literal["numeric", "categorical"]
    labels: tuple[str, ...]
    offline: tuple[int, ...]
    online: tuple[int, ...]
    offline_null: int = 0
    online_null: int = 0
    edges: tuple[float, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in `skew_findings.histogram`)."""
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "edges": list(self.edges),
            "offline": list(self.offline),
            "online": list(self.online),
            "offline_null": self.offline_null,
            "online_null": self.online_null,
        }


@dataclass(frozen=True, slots=True)
class Distances:
    """Distribution distances of one feature; None when a sample is empty."""

    psi: float | None
    js_distance: float | None


def population_stability_index(
    offline: npt.NDArray[np.float64], online: npt.NDArray[np.float64], *, epsilon: float = EPSILON
) -> float:
    """PSI between two count (or proportion) vectors over the same bins."""
    p = _proportions(offline)
    q = _proportions(online)
    p, q = np.maximum(p, epsilon), np.maximum(q, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(offline: npt.NDArray[np.float64], online: npt.NDArray[np.float64]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors over the same bins."""
    p = _proportions(offline)
    q = _proportions(online)
    m = (p + q) / 2

    def kl(a: npt.NDArray[np.float64]) -> float:
        present = a > 0
        return float(np.sum(a[present] * np.log2(a[present] / m[present])))

    divergence = max(0.0, (kl(p) + kl(q)) / 2)
    return float(min(1.0, np.sqrt(divergence)))


def _proportions(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    total = float(np.sum(counts))
    if total <= 0:
        raise ValueError("cannot compare an empty sample")
    return np.asarray(counts, dtype=np.float64) / total


def _numeric_counts(column: ValueColumn, edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values = comparable_values(column)[~column.null].astype(np.float64)
    bins = np.searchsorted(edges, values, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    return np.append(counts, float(np.count_nonzero(column.null)))


def _categorical_counts(
    offline: ValueColumn, online: ValueColumn
) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One bin per value seen in either sample, plus the null bin; labels (as text) without the null bin."""
    off = offline.values[~offline.null]
    on = online.values[~online.null]
    both = np.concatenate([off, on]).astype(str if offline.kind == "string" else np.int64)
    distinct, inverse = np.unique(both, return_inverse=True)
    inverse = inverse.reshape(-1)
    p = np.bincount(inverse[: len(off)], minlength=len(distinct)).astype(np.float64)
    q = np.bincount(inverse[len(off) :], minlength=len(distinct)).astype(np.float64)
    p = np.append(p, float(np.count_nonzero(offline.null)))
    q = np.append(q, float(np.count_nonzero(online.null)))
    if offline.kind == "bool":
        labels = ["true" if value else "false" for value in distinct.tolist()]
    else:
        labels = [str(value) for value in distinct.tolist()]
    return labels, p, q


def _decile_edges(offline: ValueColumn, online: ValueColumn) -> npt.NDArray[np.float64]:
    source = offline if np.count_nonzero(~offline.null) else online
    values = comparable_values(source)[~source.null].astype(np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.empty(0)
    return np.unique(np.quantile(values, _DECILES))


def distribution_distances(offline: ValueColumn, online: ValueColumn) -> Distances:
    """PSI and JS distance of one feature's offline vs online samples (see the module docstring)."""
    if len(offline) == 0 or len(online) == 0:
        return Distances(psi=None, js_distance=None)
    if offline.kind in ("string", "bool"):
        _, p, q = _categorical_counts(offline, online)
    else:
        edges = _decile_edges(offline, online)
        p, q = _numeric_counts(offline, edges), _numeric_counts(online, edges)
    return Distances(psi=population_stability_index(p, q), js_distance=js_distance(p, q))


def _label(value: float) -> str:
    return f"{value:.4g}"


def chart_histogram(offline: ValueColumn, online: ValueColumn) -> Histogram:
    """Counts for an overlaid chart: up to 20 equal-width bins between the offline sample's 0.5th and 99.5th
    percentiles (outliers in the end bins), one bin per value when there are at most 20 distinct values,
    or (strings, bools) the 20 most frequent values with the rest under "other"."""
    offline_null, online_null = int(np.count_nonzero(offline.null)), int(np.count_nonzero(online.null))
    if offline.kind in ("string", "bool"):
        labels, p, q = _categorical_counts(offline, online)
        order = np.argsort(-(p[:-1] + q[:-1]), kind="stable")
        shown, rest = order[:_CATEGORIES_SHOWN], order[_CATEGORIES_SHOWN:]
        names = [labels[i] for i in shown]
        off, on = [int(p[i]) for i in shown], [int(q[i]) for i in shown]
        if len(rest):
            names.append("other")
            off.append(int(p[rest].sum()))
            on.append(int(q[rest].sum()))
        return Histogram("categorical", tuple(names), tuple(off), tuple(on), offline_null, online_null)
    off_values = comparable_values(offline)[~offline.null].astype(np.float64)
    on_values = comparable_values(online)[~online.null].astype(np.float64)
    both = np.concatenate([off_values, on_values])
    both = both[np.isfinite(both)]
    if len(both) == 0:
        return Histogram("numeric", (), (), (), offline_null, online_null)
    distinct = np.unique(both)
    if len(distinct) <= _CHART_BINS:
        off_counts = np.searchsorted(distinct, off_values[np.isfinite(off_values)])
        on_counts = np.searchsorted(distinct, on_values[np.isfinite(on_values)])
        return Histogram(
            "numeric",
            tuple(_label(v) for v in distinct.tolist()),
            tuple(np.bincount(off_counts, minlength=len(distinct)).tolist()),
            tuple(np.bincount(on_counts, minlength=len(distinct)).tolist()),
            offline_null,
            online_null,
        )
    reference = off_values[np.isfinite(off_values)] if len(off_values) else both
    if len(reference) == 0:
        reference = both
    low, high = (float(v) for v in np.quantile(reference, [0.005, 0.995]))
    if high <= low:
        low, high = float(both.min()), float(both.max())
    edges = np.linspace(low, high, _CHART_BINS + 1)

    def counts(values: npt.NDArray[np.float64]) -> tuple[int, ...]:
        finite = values[np.isfinite(values)]
        bins = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, _CHART_BINS - 1)
        return tuple(np.bincount(bins, minlength=_CHART_BINS).tolist())

    bin_labels = tuple(f"{_label(a)} to {_label(b)}" for a, b in pairwise(edges.tolist()))
    return Histogram(
        "numeric",
        bin_labels,
        counts(off_values),
        counts(on_values),
        offline_null,
        online_null,
        tuple(float(e) for e in edges),
    )


def level(value: float | None, *, warn: float, breach: float) -> Status:
    """`breach` at or above `breach`, `warn` at or above `warn`, else `ok`; None and zero are `ok`."""
    if value is None or value <= 0:
        return "ok"
    if value >= breach:
        return "breach"
    return "warn" if value >= warn else "ok"


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of the statuses (`ok` for none)."""
    return max(statuses, key=STATUSES.index, default="ok")


def feature_status(
    *, mismatch_rate: float, psi: float | None, js: float | None, thresholds: Thresholds
) -> Status:
    """The worst of the feature's mismatch rate, PSI and JS distance against the thresholds."""
    return worst(
        (
            level(mismatch_rate, warn=thresholds.mismatch_rate_warn, breach=thresholds.mismatch_rate_breach),
            level(psi, warn=thresholds.psi_warn, breach=thresholds.psi_breach),
            level(js, warn=thresholds.js_warn, breach=thresholds.js_breach),
        )
    )
