"""The skew classes of one (entity, feature): every rule, its boundaries, and the vectorised form agreeing
with the scalar one over every combination of timestamps and values."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from consistency.classify import (
    CLASSES,
    NO_TIME,
    ONLINE_WRONG_CLASSES,
    SKEW_CLASSES,
    SkewClass,
    ValueColumn,
    class_counts,
    classify_cell,
    classify_column,
    values_equal,
)
from core.features.specs import Kind

W = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = 2 * 86_400
TOL = 1e-6
HOUR = timedelta(hours=1)


def _cell(
    expected: Any,
    online: Any,
    *,
    e: datetime | None,
    o: datetime | None,
    kind: Kind = "float64",
    ttl_s: int = TTL,
) -> SkewClass:
    return classify_cell(
        kind, expected, online, expected_ts=e, online_ts=o, watermark=W, ttl_s=ttl_s, tolerance=TOL
    )


@pytest.mark.parametrize(
    ("expected", "online", "e", "o", "want"),
    [
        # 1. no online row
        (None, None, None, None, "match"),
        (1.0, None, W - HOUR, None, "missing_online"),
        (None, None, W - HOUR, None, "missing_online"),  # a row whose value is null is still a row
        # 2. written after the watermark
        (1.0, 9.0, W - HOUR, W + timedelta(microseconds=1), "fresher_online"),
        (None, 9.0, None, W + HOUR, "fresher_online"),
        # 3. past the TTL as of the watermark, offline has nothing
        (None, 1.0, None, W - timedelta(seconds=TTL) - timedelta(microseconds=1), "expired_online"),
        (None, None, None, W - timedelta(days=9), "expired_online"),
        # ... the TTL boundary itself is inside the window: compared as a value (offline: null)
        (None, 1.0, None, W - timedelta(seconds=TTL), "value_mismatch"),
        (None, None, None, W - timedelta(seconds=TTL), "match"),
        # 4. older than the expected row (even with an equal value)
        (1.0, 7.0, W - HOUR, W - 2 * HOUR, "stale_online"),
        (1.0, 1.0, W - HOUR, W - 2 * HOUR, "stale_online"),
        (1.0, 1.0, W - HOUR, W - timedelta(days=9), "stale_online"),
        # 5. values compared
        (1.0, 1.0, W - HOUR, W - HOUR, "match"),
        (1.0, 1.0 + 1e-7, W - HOUR, W - HOUR, "match"),
        (1.0, 1.0 + 1e-5, W - HOUR, W - HOUR, "value_mismatch"),
        (1.0, None, W - HOUR, W - HOUR, "value_mismatch"),
        (None, 1.0, W - HOUR, W - HOUR, "value_mismatch"),
        (None, None, W - HOUR, W - HOUR, "match"),
        (1.0, 2.0, W, W, "value_mismatch"),
        # ... an online-only row between the expected row and the watermark: its values count
        (1.0, 1.0, W - 2 * HOUR, W - HOUR, "match"),
        (1.0, 3.0, W - 2 * HOUR, W, "value_mismatch"),
        # ... no expected row while online is inside the TTL window: offline says null
        (None, 1.0, None, W - HOUR, "value_mismatch"),
    ],
)
def test_each_rule(expected: Any, online: Any, e: datetime | None, o: datetime | None, want: str) -> None:
    """Each rule of the module docstring gives its class, boundaries included."""
    assert _cell(expected, online, e=e, o=o) == want


def test_no_ttl_never_expires() -> None:
    """A view without TTL never yields expired_online: an old online row offline lacks is a value mismatch."""
    assert _cell(None, 1.0, e=None, o=W - timedelta(days=400), ttl_s=0) == "value_mismatch"
    assert _cell(None, None, e=None, o=W - timedelta(days=400), ttl_s=0) == "match"


@pytest.mark.parametrize(
    ("kind", "a", "b", "equal"),
    [
        ("float64", 0.0, 1e-6, True),
        ("float64", 0.0, 2e-6, False),
        ("float64", 1e9, 1e9 + 500.0, True),  # relative above 1
        ("float64", 1e9, 1e9 + 2000.0, False),
        ("float64", float("inf"), float("inf"), True),
        ("float64", float("inf"), float("-inf"), False),
        ("float64", 1.0, float("inf"), False),
        ("float64", float("nan"), None, True),  # NaN is null
        ("float64", float("nan"), 0.0, False),
        ("float32", 0.1, float(np.float32(0.1)), True),  # a double equals its float32 rounding
        ("float32", 16_777_217.0, 16_777_216.0, True),  # 2**24 + 1 rounds to 2**24 in float32
        ("float32", 1e39, float("inf"), True),  # beyond float32: what Feast stores is infinity
        ("float32", 0.1, 0.1 + 1e-5, False),
        ("float32", 2.5, None, False),
        ("int32", -(2**31), -(2**31), True),
        ("int32", 7, 8, False),
        ("int64", 3, 3, True),
        ("int64", 3, 4, False),
        ("int64", 2**62 + 1, 2**62, False),  # exact, no float rounding
        ("int64", 0, None, False),
        ("bool", True, True, True),
        ("bool", True, False, False),
        ("bool", False, None, False),
        ("string", "a", "a", True),
        ("string", "a", "A", False),
        ("string", "", None, False),
        ("string", None, None, True),
    ],
)
def test_values_equal_per_kind(kind: Kind, a: Any, b: Any, equal: bool) -> None:
    """Floats within the tolerance (relative above magnitude 1) agree; ints, bools and strings must be exact;
    null equals only null."""
    assert values_equal(kind, a, b, tolerance=TOL) is equal
    assert values_equal(kind, b, a, tolerance=TOL) is equal
    column = classify_column(
        expected=ValueColumn.of(kind, [a]),
        online=ValueColumn.of(kind, [b]),
        expected_us=np.array([0], dtype=np.int64),
        online_us=np.array([0], dtype=np.int64),
        watermark_us=0,
        ttl_s=0,
        tolerance=TOL,
    )
    assert CLASSES[int(column[0])] == ("match" if equal else "value_mismatch")


def _us(moment: datetime | None) -> int:
    if moment is None:
        return int(NO_TIME)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


EXPECTED_TIMES = [None, W - timedelta(seconds=TTL), W - 2 * HOUR, W - HOUR, W]
ONLINE_TIMES = [
    None,
    W - timedelta(days=9),
    W - timedelta(seconds=TTL) - timedelta(microseconds=1),
    W - timedelta(seconds=TTL),
    W - 2 * HOUR,
    W - HOUR,
    W - timedelta(microseconds=1),
    W,
    W + timedelta(microseconds=1),
    W + HOUR,
]
VALUES: dict[Kind, list[Any]] = {
    "float64": [None, 0.0, 1e-7, 1.0, 1.0 + 1e-5, 5e9, 5e9 + 1.0, float("inf"), float("nan")],
    "float32": [None, 0.1, float(np.float32(0.1)), 1.0, 1.0 + 1e-5, 3e38, float("inf"), float("nan")],
    "int64": [None, 0, 1, -1, 2**62],
    "int32": [None, 0, -1, 2**31 - 1],
    "bool": [None, True, False],
    "string": [None, "", "a", "b"],
}


@pytest.mark.parametrize("kind", list(VALUES))
@pytest.mark.parametrize("ttl_s", [0, TTL])
def test_vectorised_equals_scalar_on_every_combination(kind: Kind, ttl_s: int) -> None:
    """Over every (expected time, online time, expected value, online value), classify_column gives exactly
    what classify_cell gives, and every class is reachable for a view with a TTL."""
    grid = list(itertools.product(EXPECTED_TIMES, ONLINE_TIMES, VALUES[kind], VALUES[kind]))
    codes = classify_column(
        expected=ValueColumn.of(kind, [g[2] for g in grid]),
        online=ValueColumn.of(kind, [g[3] for g in grid]),
        expected_us=np.array([_us(g[0]) for g in grid], dtype=np.int64),
        online_us=np.array([_us(g[1]) for g in grid], dtype=np.int64),
        watermark_us=_us(W),
        ttl_s=ttl_s,
        tolerance=TOL,
    )
    scalar = [_cell(g[2], g[3], e=g[0], o=g[1], kind=kind, ttl_s=ttl_s) for g in grid]
    assert [CLASSES[int(code)] for code in codes] == scalar
    seen = set(scalar)
    unchecked = {"online_only_fresh"}  # needs `now` (see test_online_only_fresh_on_every_combination)
    if ttl_s:
        assert seen == set(CLASSES) - unchecked
    else:
        assert seen == set(CLASSES) - {"expired_online"} - unchecked


GRACE_S = 3600.0
LATEST_TIMES = [None, W - HOUR, W, W + HOUR - timedelta(microseconds=1), W + HOUR, W + 2 * HOUR]
NOWS = [W + HOUR, W + 2 * HOUR, W + 2 * HOUR + timedelta(microseconds=1), W + 3 * HOUR, W + timedelta(days=2)]


def _online_only_fresh_oracle(
    *, o: datetime | None, latest: datetime | None, now: datetime, grace_s: float
) -> bool:
    """Written apart from the classifier: online newer than the watermark and than every offline row of the
    entity, for longer than the grace period."""
    if o is None or o <= W:
        return False
    offline_has_it = latest is not None and latest >= o
    return not offline_has_it and (now - o).total_seconds() > grace_s


@pytest.mark.parametrize("grace_s", [0.0, GRACE_S])
def test_online_only_fresh_on_every_combination(grace_s: float) -> None:
    """A row online newer than the watermark and than anything offline for the entity, for longer than the
    grace period, is online_only_fresh; with an offline row at or after it, or younger than the grace, it
    stays fresher_online; every other class is unchanged by the rule; vectorised == scalar."""
    grid = list(
        itertools.product(EXPECTED_TIMES, ONLINE_TIMES, LATEST_TIMES, NOWS, [None, 1.0], [None, 1.0, 2.0])
    )
    seen: set[str] = set()
    for now in NOWS:
        rows = [g for g in grid if g[3] == now]
        vector = classify_column(
            expected=ValueColumn.of("float64", [g[4] for g in rows]),
            online=ValueColumn.of("float64", [g[5] for g in rows]),
            expected_us=np.array([_us(g[0]) for g in rows], dtype=np.int64),
            online_us=np.array([_us(g[1]) for g in rows], dtype=np.int64),
            watermark_us=_us(W),
            ttl_s=TTL,
            tolerance=TOL,
            offline_latest_us=np.array([_us(g[2]) for g in rows], dtype=np.int64),
            now_us=_us(now),
            fresher_grace_s=grace_s,
        )
        for (e, o, latest, _, expected, online), code in zip(rows, vector.tolist(), strict=True):
            got = CLASSES[int(code)]
            scalar = classify_cell(
                "float64", expected, online, expected_ts=e, online_ts=o, watermark=W, ttl_s=TTL,
                tolerance=TOL, offline_latest_ts=latest, now=now, fresher_grace_s=grace_s,
            )  # fmt: skip
            assert got == scalar
            without = _cell(expected, online, e=e, o=o)
            if _online_only_fresh_oracle(o=o, latest=latest, now=now, grace_s=grace_s):
                assert got == "online_only_fresh", (e, o, latest, now)
            else:
                assert got == without, (e, o, latest, now)
            seen.add(got)
    assert seen == set(CLASSES)


def test_online_only_fresh_boundaries() -> None:
    """Exactly the grace period old is not yet flagged; an offline row at the online time backs it."""
    o = W + HOUR

    def cell(latest: datetime | None, now: datetime) -> SkewClass:
        return classify_cell(
            "float64", 1.0, 2.0, expected_ts=W - HOUR, online_ts=o, watermark=W, ttl_s=TTL, tolerance=TOL,
            offline_latest_ts=latest, now=now, fresher_grace_s=GRACE_S,
        )  # fmt: skip

    assert cell(None, o + timedelta(seconds=GRACE_S)) == "fresher_online"
    assert cell(None, o + timedelta(seconds=GRACE_S, microseconds=1)) == "online_only_fresh"
    assert cell(W - HOUR, o + timedelta(days=1)) == "online_only_fresh"
    assert cell(o, o + timedelta(days=1)) == "fresher_online"
    assert cell(o + HOUR, o + timedelta(days=1)) == "fresher_online"
    assert "online_only_fresh" in SKEW_CLASSES
    assert "online_only_fresh" not in ONLINE_WRONG_CLASSES


def test_counts_and_skew_classes() -> None:
    """Counts cover every class (zeros included); fresher_online and match are not skew."""
    codes = np.array([0, 0, 1, 4, 5], dtype=np.int8)
    counts = class_counts(codes)
    assert list(counts) == list(CLASSES)
    assert counts == {
        "match": 2,
        "value_mismatch": 1,
        "missing_online": 0,
        "stale_online": 0,
        "fresher_online": 1,
        "expired_online": 1,
        "online_only_fresh": 0,
    }
    assert "fresher_online" not in SKEW_CLASSES
    assert "match" not in SKEW_CLASSES
    assert len(SKEW_CLASSES) == 5
    assert SKEW_CLASSES - {"online_only_fresh"} == ONLINE_WRONG_CLASSES


def test_column_scalars_round_trip() -> None:
    """ValueColumn keeps each kind's values exactly, nulls as None."""
    for kind, items in VALUES.items():
        column = ValueColumn.of(kind, items)
        back = [column.scalar(i) for i in range(len(items))]
        for original, restored in zip(items, back, strict=True):
            if original is None or (isinstance(original, float) and np.isnan(original)):
                assert restored is None
            else:
                assert restored == original
                assert type(restored) is type(original)


def test_mismatched_columns_are_refused() -> None:
    """Columns of different kinds or lengths cannot be compared."""
    with pytest.raises(ValueError, match="same kind"):
        classify_column(
            expected=ValueColumn.of("int64", [1]),
            online=ValueColumn.of("float64", [1.0]),
            expected_us=np.zeros(1, dtype=np.int64),
            online_us=np.zeros(1, dtype=np.int64),
            watermark_us=0,
            ttl_s=0,
            tolerance=TOL,
        )


def test_float32_values_compare_at_float32_precision() -> None:
    """Offline doubles of a Float32 feature match what Feast stores online (their float32 rounding) cell by
    cell and column-wise; the same values as float64 would all be mismatches at tolerance 0."""
    rng = np.random.default_rng(9)
    offline = rng.normal(scale=1e3, size=500).tolist()
    online = [float(np.float32(v)) for v in offline]
    cases: list[tuple[Kind, str]] = [("float32", "match"), ("float64", "value_mismatch")]
    for kind, want in cases:
        codes = classify_column(
            expected=ValueColumn.of(kind, offline),
            online=ValueColumn.of(kind, online),
            expected_us=np.zeros(500, dtype=np.int64),
            online_us=np.zeros(500, dtype=np.int64),
            watermark_us=0,
            ttl_s=0,
            tolerance=0.0,
        )
        assert {CLASSES[int(code)] for code in codes} == {want}
    assert all(values_equal("float32", a, b, tolerance=0.0) for a, b in zip(offline, online, strict=True))
