"""Classify each (entity, feature) of a skew check: does the online store serve what the offline store implies?

Pure: no I/O. The inputs of one cell are the *expected* row (Feast's point-in-time row of the feature's
view as of the view's materialization watermark `W`, TTL included: event time `E` or none, and the
feature's value) and the *online* row (the `_ts:<view>` event time `O` or none, and the stored value, as
Redis holds it: no TTL applied). Rules, first match wins:

1. no online row (`O` none):
   - no expected row either -> `match` (both stores agree there is nothing);
   - else -> `missing_online`.
2. `O > W`: written online after the watermark (a push); materialization cannot have known it:
   - the offline store has no row of the entity in the view at or after `O` (its newest event time `L`,
     unbounded, is older or there is none) and the row is older than the grace period (`now - O > grace`)
     -> `online_only_fresh`: a push whose offline append was lost (pushes append offline first, so only a
     write that bypassed or lost the offline append leaves this). Checked only when the caller gives `now`
     and `L` (the checker does, with `TANDEM_SKEW_FRESHER_GRACE_S`);
   - else -> `fresher_online`: expected, never skew.
3. no expected row, the view has a TTL and `O < W - ttl` -> `expired_online`: the row is past the view's
   TTL as of the watermark, offline retrieval returns nulls, yet online still serves it (Feast #6821).
   (`O == W - ttl` is still inside the TTL, as offline retrieval's `event_timestamp >= as_of - ttl` says.)
4. `E` known and `O < E` -> `stale_online`: the online row is older than the row materialization should have
   written (a missed or failed materialization). Timestamp-level: every feature of the view gets it, even
   one whose value happens to be equal.
5. otherwise (`E <= O <= W`, or no expected row while `O` is inside the TTL window) the values are compared;
   with no expected row the expected value is null. Equal -> `match`, else `value_mismatch`. `O > E` here
   means online holds a row the offline store lacks as of the watermark (an online-only write); its values
   are what counts.

Values are equal when both are null, or both non-null and:
- float64: `|a - b| <= tolerance * max(1, |a|, |b|)` (absolute near zero, relative for large magnitudes;
  equal infinities are equal, an infinity equals nothing else; NaN is null);
- float32: the same, on both values rounded to float32 first: Feast stores a Float32 feature online as a
  float32, so an offline double equals its float32 rounding (`comparable_values`);
- int64, int32, bool, string: exactly equal.

`value_mismatch`, `missing_online`, `stale_online`, `expired_online` and `online_only_fresh` are skew
(`SKEW_CLASSES`) and count toward a feature's mismatch rate; `match` and `fresher_online` do not. The first
four mean the online value is wrong (`ONLINE_WRONG_CLASSES`: what steers serving to stored scores);
`online_only_fresh` means the offline store lacks the newest value.

Times are int64 microseconds since the Unix epoch with `NO_TIME` for none (vectorised form), or aware
datetimes / None (the scalar form, `classify_cell`); both forms give the same class for the same input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.specs import Kind
from core.records.skew_models import CLASSES, ONLINE_WRONG_CLASSES, SKEW_CLASSES, SkewClass

__all__ = [
    "CLASSES",
    "NO_TIME",
    "ONLINE_WRONG_CLASSES",
    "SKEW_CLASSES",
    "SkewClass",
    "ValueColumn",
    "class_counts",
    "classify_cell",
    "classify_column",
    "comparable_values",
    "values_equal",
    "values_equal_column",
]

NO_TIME = np.iinfo(np.int64).min
"""The 'no row' event time of the vectorised form."""

Scalar = float | int | str | bool | None
_FLOAT_KINDS = ("float64", "float32")
_CODE = {name: np.int8(index) for index, name in enumerate(CLASSES)}


@dataclass(frozen=True, slots=True)
class ValueColumn:
    """One feature's values for n entities: float64 (kinds float64, float32), int64 (int64, int32, bool) or
    object (string) values, and a null mask (True: null; the value underneath is meaningless)."""

    kind: Kind
    values: npt.NDArray[Any]
    null: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.null.shape[0])

    @classmethod
    def of(cls, kind: Kind, items: Sequence[Scalar]) -> ValueColumn:
        """A column from Python scalars (None, and NaN for floats, are null)."""
        null = np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in items),
            dtype=np.bool_,
            count=len(items),
        )
        present = [None if n else v for v, n in zip(items, null.tolist(), strict=True)]
        values: npt.NDArray[Any]
        if kind in _FLOAT_KINDS:
            values = np.array([np.nan if v is None else float(v) for v in present], dtype=np.float64)
        elif kind == "string":
            values = np.array([None if v is None else str(v) for v in present], dtype=object)
        else:
            values = np.array([0 if v is None else int(v) for v in present], dtype=np.int64)
        return cls(kind=kind, values=values, null=null)

    def scalar(self, index: int) -> Scalar:
        """The value at `index` as a Python scalar (None when null)."""
        if self.null[index]:
            return None
        value = self.values[index]
        if self.kind in _FLOAT_KINDS:
            return float(value)
        if self.kind == "bool":
            return bool(value)
        if self.kind == "string":
            return str(value)
        return int(value)


def _is_null(value: Scalar) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _float32(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range: infinity, as Feast stores
        return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def comparable_values(column: ValueColumn) -> npt.NDArray[Any]:
    """The values as compared: float32 features rounded to float32 (then widened), other kinds as they are."""
    return _float32(column.values) if column.kind == "float32" else column.values


def values_equal(kind: Kind, expected: Scalar, online: Scalar, *, tolerance: float) -> bool:
    """Whether two values of one feature agree (see the module docstring)."""
    if expected is None or online is None or _is_null(expected) or _is_null(online):
        return _is_null(expected) and _is_null(online)
    if kind in _FLOAT_KINDS:
        a, b = float(expected), float(online)
        if kind == "float32":
            a, b = (float(x) for x in _float32(np.array([a, b])))
        if a == b:
            return True
        return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))
    if kind == "string":
        return str(expected) == str(online)
    return int(expected) == int(online)


def values_equal_column(
    expected: ValueColumn, online: ValueColumn, *, tolerance: float
) -> npt.NDArray[np.bool_]:
    """`values_equal` for every row of two columns of the same kind."""
    if expected.kind != online.kind or len(expected) != len(online):
        raise ValueError("columns must have the same kind and length")
    both_null = expected.null & online.null
    one_null = expected.null ^ online.null
    if expected.kind in _FLOAT_KINDS:
        a, b = comparable_values(expected), comparable_values(online)
        with np.errstate(invalid="ignore"):
            scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
            finite = np.isfinite(a) & np.isfinite(b)
            close = (a == b) | (finite & (np.abs(a - b) <= tolerance * scale))
    else:
        close = np.asarray(expected.values == online.values, dtype=np.bool_)
    equal: npt.NDArray[np.bool_] = both_null | (~one_null & ~expected.null & close)
    return equal


def classify_cell(
    kind: Kind,
    expected: Scalar,
    online: Scalar,
    *,
    expected_ts: datetime | None,
    online_ts: datetime | None,
    watermark: datetime,
    ttl_s: int,
    tolerance: float,
    offline_latest_ts: datetime | None = None,
    now: datetime | None = None,
    fresher_grace_s: float = 0.0,
) -> SkewClass:
    """The class of one (entity, feature); times are aware datetimes or None (see the module docstring);
    `now` None leaves `online_only_fresh` unchecked."""
    if online_ts is None:
        return "match" if expected_ts is None else "missing_online"
    if online_ts > watermark:
        unbacked = offline_latest_ts is None or offline_latest_ts < online_ts
        if now is not None and unbacked and now - online_ts > timedelta(seconds=fresher_grace_s):
            return "online_only_fresh"
        return "fresher_online"
    if expected_ts is None and ttl_s > 0 and online_ts < watermark - timedelta(seconds=ttl_s):
        return "expired_online"
    if expected_ts is not None and online_ts < expected_ts:
        return "stale_online"
    value = expected if expected_ts is not None else None
    return "match" if values_equal(kind, value, online, tolerance=tolerance) else "value_mismatch"


def classify_column(
    *,
    expected: ValueColumn,
    online: ValueColumn,
    expected_us: npt.NDArray[np.int64],
    online_us: npt.NDArray[np.int64],
    watermark_us: int,
    ttl_s: int,
    tolerance: float,
    offline_latest_us: npt.NDArray[np.int64] | None = None,
    now_us: int | None = None,
    fresher_grace_s: float = 0.0,
) -> npt.NDArray[np.int8]:
    """The class code (index into CLASSES) of every row of one feature; times in µs, NO_TIME for none;
    `now_us` None leaves `online_only_fresh` unchecked (then `offline_latest_us` is not needed)."""
    no_expected = expected_us == NO_TIME
    no_online = online_us == NO_TIME
    # With no expected row the expected value is null, whatever the column holds.
    effective = ValueColumn(expected.kind, expected.values, expected.null | no_expected)
    equal = values_equal_column(effective, online, tolerance=tolerance)
    codes = np.where(equal, _CODE["match"], _CODE["value_mismatch"]).astype(np.int8)
    codes[~no_expected & (online_us < expected_us)] = _CODE["stale_online"]
    if ttl_s > 0:
        codes[no_expected & (online_us < watermark_us - ttl_s * 1_000_000)] = _CODE["expired_online"]
    fresher = online_us > watermark_us
    codes[fresher] = _CODE["fresher_online"]
    if now_us is not None:
        latest = (
            np.full(len(online_us), NO_TIME, dtype=np.int64)
            if offline_latest_us is None
            else offline_latest_us
        )
        grace_us = timedelta(seconds=fresher_grace_s) // timedelta(microseconds=1)
        with np.errstate(over="ignore"):
            old = (now_us - online_us) > grace_us
        codes[fresher & (latest < online_us) & old] = _CODE["online_only_fresh"]
    codes[no_online] = np.where(no_expected[no_online], _CODE["match"], _CODE["missing_online"])
    return codes


def class_counts(codes: npt.NDArray[np.int8]) -> dict[SkewClass, int]:
    """How many rows fall in each class (every class present, zeros included)."""
    counts = np.bincount(codes.astype(np.intp), minlength=len(CLASSES))
    return {name: int(counts[index]) for index, name in enumerate(CLASSES)}
