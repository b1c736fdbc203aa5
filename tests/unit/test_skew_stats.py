"""PSI, Jensen-Shannon distance, chart histograms and threshold statuses of the skew checker."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from consistency.classify import ValueColumn
from consistency.stats import (
    Thresholds,
    chart_histogram,
    distribution_distances,
    feature_status,
    js_distance,
    level,
    population_stability_index,
    worst,
)
from core.settings import Settings


def _floats(values: Sequence[float | None]) -> ValueColumn:
    return ValueColumn.of("float64", values)


def test_psi_and_js_by_hand() -> None:
    """PSI and JS distance equal their textbook formulas on a two-bin example."""
    p, q = np.array([50.0, 50.0]), np.array([90.0, 10.0])
    want_psi = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index(p, q) == pytest.approx(want_psi)
    m = [0.7, 0.3]
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = 0.9 * math.log2(0.9 / m[0]) + 0.1 * math.log2(0.1 / m[1])
    assert js_distance(p, q) == pytest.approx(math.sqrt((kl_p + kl_q) / 2))


def test_identical_disjoint_and_empty_bins() -> None:
    """Identical counts: 0 for both; disjoint supports: JS distance 1 and a finite PSI (epsilon floor)."""
    same = np.array([3.0, 0.0, 7.0])
    assert population_stability_index(same, same) == 0.0
    assert js_distance(same, same) == 0.0
    p, q = np.array([10.0, 0.0]), np.array([0.0, 10.0])
    assert js_distance(p, q) == pytest.approx(1.0)
    assert math.isfinite(population_stability_index(p, q))
    assert population_stability_index(p, q) > 10


def test_equal_samples_have_no_distance() -> None:
    """The same values offline and online (nulls included) give PSI 0 and JS 0, for every kind."""
    rng = np.random.default_rng(1)
    floats = [*rng.normal(size=500).tolist(), None, None]
    for column in (
        _floats(floats),
        ValueColumn.of("int64", [int(v) for v in rng.integers(0, 4, 300)]),
        ValueColumn.of("string", ["a", "b", "b", None, "c"]),
        ValueColumn.of("bool", [True, False, True, None]),
    ):
        distances = distribution_distances(column, column)
        assert distances.psi == pytest.approx(0.0, abs=1e-12)
        assert distances.js_distance == pytest.approx(0.0, abs=1e-7)


def test_float32_rounding_is_no_distance() -> None:
    """Offline doubles of a Float32 feature and their float32 rounding online fall in the same bins: PSI and
    JS 0, the same chart counts, no difference (as float64 values, some would straddle a decile edge)."""
    rng = np.random.default_rng(6)
    offline = rng.normal(size=2_000).tolist()
    online = [float(np.float32(v)) for v in offline]
    a, b = ValueColumn.of("float32", offline), ValueColumn.of("float32", online)
    distances = distribution_distances(a, b)
    assert distances.psi == pytest.approx(0.0, abs=1e-12)
    assert distances.js_distance == pytest.approx(0.0, abs=1e-7)
    chart = chart_histogram(a, b)
    assert chart.offline == chart.online


def test_shifted_numeric_sample_breaches() -> None:
    """A sample shifted by one standard deviation is far beyond the default PSI and JS breach levels; a
    resample of the same distribution stays below the warn levels."""
    rng = np.random.default_rng(2)
    offline = _floats(rng.normal(size=20_000).tolist())
    resample = _floats(rng.normal(size=20_000).tolist())
    shifted = _floats((rng.normal(size=20_000) + 1.0).tolist())
    settings = Settings()
    calm = distribution_distances(offline, resample)
    moved = distribution_distances(offline, shifted)
    assert calm.psi is not None
    assert calm.js_distance is not None
    assert calm.psi < settings.psi_warn
    assert calm.js_distance < settings.js_warn
    assert moved.psi is not None
    assert moved.js_distance is not None
    assert moved.psi > settings.psi_breach
    assert moved.js_distance > settings.js_breach


def test_nulls_online_move_the_distribution() -> None:
    """Values that go missing online count: half of them null online is a large PSI."""
    offline = _floats([float(v) for v in range(1000)])
    online = _floats([float(v) if v % 2 else None for v in range(1000)])
    distances = distribution_distances(offline, online)
    assert distances.psi is not None
    assert distances.psi > 1


def test_categories_and_bools() -> None:
    """Strings and bools compare by value: a category that appears only online is its own bin."""
    offline = ValueColumn.of("string", ["a"] * 50 + ["b"] * 50)
    online = ValueColumn.of("string", ["a"] * 50 + ["z"] * 50)
    assert distribution_distances(offline, online).js_distance == pytest.approx(math.sqrt(0.5))
    flags = ValueColumn.of("bool", [True] * 10 + [False] * 30)
    assert distribution_distances(flags, flags).psi == 0.0


def test_empty_samples_have_no_distance() -> None:
    """No rows at all: PSI and JS are None (not zero, not an error)."""
    empty = _floats([])
    assert distribution_distances(empty, empty).psi is None
    assert distribution_distances(empty, _floats([1.0])).js_distance is None


def test_chart_histogram_numeric_bins() -> None:
    """Many distinct values: 20 equal-width bins whose counts add up to the non-null values; outliers land
    in the end bins; nulls are counted apart."""
    offline = _floats([float(v) for v in range(1000)] + [None])
    online = _floats([float(v) for v in range(1000)] + [1e9, None, None])
    histogram = chart_histogram(offline, online)
    assert histogram.kind == "numeric"
    assert len(histogram.labels) == len(histogram.offline) == 20
    assert len(histogram.edges) == 21
    assert sum(histogram.offline) == 1000
    assert sum(histogram.online) == 1001
    assert histogram.online[-1] == histogram.offline[-1] + 1
    assert (histogram.offline_null, histogram.online_null) == (1, 2)
    data = histogram.to_json()
    assert set(data) == {"kind", "labels", "edges", "offline", "online", "offline_null", "online_null"}


def test_chart_histogram_few_values_and_categories() -> None:
    """At most 20 distinct numbers: one bin per value; more than 20 categories: the top 20 and "other"."""
    ints = ValueColumn.of("int64", [0, 1, 1, 2])
    histogram = chart_histogram(ints, ValueColumn.of("int64", [1, 1, 1, 3]))
    assert histogram.labels == ("0", "1", "2", "3")
    assert histogram.offline == (1, 2, 1, 0)
    assert histogram.online == (0, 3, 0, 1)
    names = [f"c{i:02d}" for i in range(25)]
    strings = ValueColumn.of("string", names + ["c00"] * 5)
    categorical = chart_histogram(strings, strings)
    assert categorical.kind == "categorical"
    assert len(categorical.labels) == 21
    assert categorical.labels[0] == "c00"
    assert categorical.labels[-1] == "other"
    assert sum(categorical.offline) == 30
    bools = chart_histogram(ValueColumn.of("bool", [True, False]), ValueColumn.of("bool", [True, None]))
    assert set(bools.labels) == {"true", "false"}
    assert bools.online_null == 1


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (None, "ok"),
        (0.0, "ok"),
        (0.05, "ok"),
        (0.1, "warn"),
        (0.2, "warn"),
        (0.25, "breach"),
        (3.0, "breach"),
    ],
)
def test_level_boundaries(value: float | None, want: str) -> None:
    """At or above a threshold reaches it; None and zero are ok."""
    assert level(value, warn=0.1, breach=0.25) == want


def test_zero_never_warns_even_with_zero_thresholds() -> None:
    """A perfect feature is ok even when someone sets a threshold to zero."""
    assert level(0.0, warn=0.0, breach=0.0) == "ok"
    assert level(1e-9, warn=0.0, breach=0.5) == "warn"


def test_feature_status_is_the_worst_measure() -> None:
    """A feature's status is the worst of its mismatch rate, PSI and JS distance."""
    thresholds = Thresholds.of(Settings())
    assert feature_status(mismatch_rate=0.0, psi=0.0, js=0.0, thresholds=thresholds) == "ok"
    assert feature_status(mismatch_rate=0.002, psi=0.0, js=0.0, thresholds=thresholds) == "warn"
    assert feature_status(mismatch_rate=0.002, psi=0.3, js=0.0, thresholds=thresholds) == "breach"
    assert feature_status(mismatch_rate=0.0, psi=None, js=0.07, thresholds=thresholds) == "warn"
    assert worst([]) == "ok"
    assert worst(["warn", "ok"]) == "warn"
    assert worst(["ok", "breach", "warn"]) == "breach"
