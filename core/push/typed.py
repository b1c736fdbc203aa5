"""The fast path of push validation: a group's rows decoded from their JSON in one call into a typed struct.

Per view, a msgspec Struct stands for a valid row: the join keys (ints in their kind's range, strings), the
event time (a string), the created time (optional, may be null) and every feature (null, or a value of its
kind: no bool for a number, ints in range, floats finite and in range), no other column. `typed_rows`
decodes the JSON objects of many rows at once, then applies the checks a type cannot say (NUL in strings,
the timestamps and the event-time window) with the very functions `validate_rows` uses, and returns the
same `ValidRows` it would, with each row's JSON in sorted-key order (what an event key digests).

It never says why a row is bad: None means "not sure", and the caller then runs `validate_rows` on the
decoded rows, whose verdict and messages stand. So the fast path only has to accept no more than the
slow one, with the same values, which tests/unit/test_push_typed.py checks over many generated rows.
Pure: no I/O.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

import msgspec

from core.features.specs import ViewSpec
from core.push.rows import FLOAT32_MAX, PushError, ValidRows, event_window, parse_timestamp

__all__ = ["typed_rows"]

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_INT32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_DOUBLE = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
_FLOAT = Annotated[float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
_FEATURE_TYPES: dict[str, Any] = {
    "int64": _INT64 | None,
    "int32": _INT32 | None,
    # An int is a number too (kept an int here, as the row was sent; its value is float(int)). Ints past
    # int64 are left to the slow path, which knows when float() overflows.
    "float64": _INT64 | _DOUBLE | None,
    "float32": _INT64 | _FLOAT | None,
    "bool": bool | None,
    "string": str | None,
}
_KEY_TYPES: dict[str, Any] = {"int64": _INT64, "int32": _INT32, "string": str}
_sorted = msgspec.json.Encoder(order="sorted").encode


class _Shape:
    """The decoder of one view's rows and how to read their columns back."""

    def __init__(self, view: ViewSpec) -> None:
        key = view.key
        columns: list[tuple[str, Any, Any]] = [
            *(
                (name, _KEY_TYPES[kind], msgspec.NODEFAULT)
                for name, kind in zip(key.join_keys, key.kinds, strict=True)
            ),
            (view.timestamp_field, str, msgspec.NODEFAULT),
            *((f.name, _FEATURE_TYPES[f.kind], msgspec.NODEFAULT) for f in view.features),
        ]
        if view.created_field:
            columns.append((view.created_field, str | None | msgspec.UnsetType, msgspec.UNSET))
        names = [name for name, _, _ in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"view {view.name!r} names a column twice")
        # Attributes f0, f1, ... renamed to the columns: any column name works, even one Python refuses.
        attrs = [f"f{i}" for i in range(len(columns))]
        row = msgspec.defstruct(
            "Row",
            [(a, kind, default) for a, (_, kind, default) in zip(attrs, columns, strict=True)],
            rename=dict(zip(attrs, names, strict=True)),
            forbid_unknown_fields=True,
            kw_only=True,
        )
        self.decode: Callable[[bytes], list[Any]] = msgspec.json.Decoder(list[row]).decode  # type: ignore[valid-type]
        self.columns: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*attrs)
        self.keys = len(key.join_keys)


@lru_cache(maxsize=256)
def _shape(view: ViewSpec) -> _Shape | None:
    try:
        return _Shape(view)
    except (ValueError, TypeError):  # a view this path cannot express: always the slow path
        return None


def _floats(values: tuple[Any, ...]) -> list[Any]:
    try:
        return list(map(float, values))
    except TypeError:  # nulls among them
        return [None if v is None else float(v) for v in values]


def _no_nul(values: Sequence[Any], *, encodable: bool = False) -> bool:
    """No NUL in any string (and, with `encodable`, no lone surrogate: a key's text must be UTF-8)."""
    text = "".join(v for v in values if v)
    if encodable:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return "\x00" not in text


def typed_rows(
    view: ViewSpec,
    row_jsons: Sequence[bytes],
    *,
    now: datetime,
    max_age_s: float,
    clock_skew_s: float,
) -> tuple[ValidRows, list[bytes]] | None:
    """The rows (each a JSON object's text) as `validate_rows` would give them, and each row's sorted-key
    JSON; None when any row may be faulty (then `validate_rows` on the decoded rows has the say)."""
    shape = _shape(view)
    if shape is None or not row_jsons:
        return None
    try:
        rows = shape.decode(b"[" + b",".join(row_jsons) + b"]")
    except msgspec.DecodeError:  # a type, range, column or JSON fault (ValidationError is one too)
        return None
    if len(rows) != len(row_jsons):
        return None
    columns = list(zip(*map(shape.columns, rows), strict=True))
    key = view.key
    keys, (stamps, *rest) = columns[: shape.keys], columns[shape.keys :]
    for kind, key_values in zip(key.kinds, keys, strict=True):
        if kind == "string" and not _no_nul(key_values, encodable=True):
            return None
    ids = list(keys[0]) if not key.composite else [key.compose(parts) for parts in zip(*keys, strict=True)]
    earliest, latest = event_window(view, now=now, max_age_s=max_age_s, clock_skew_s=clock_skew_s)
    try:
        event_ts = [parse_timestamp(stamp, "") for stamp in stamps]
        if not (earliest <= min(event_ts) and max(event_ts) <= latest):
            return None
        if view.created_field:
            made = rest.pop()
            created = [now if m is None or m is msgspec.UNSET else parse_timestamp(m, "") for m in made]
        else:
            created = [now] * len(rows)
    except PushError:
        return None
    values: dict[str, list[Any]] = {}
    for feature, column in zip(view.features, rest, strict=True):
        if feature.kind in ("float64", "float32"):
            values[feature.name] = _floats(column)
        elif feature.kind == "string" and not _no_nul(column):
            return None
        else:
            values[feature.name] = list(column)
    valid = ValidRows(view=view, entity_ids=ids, event_ts=event_ts, created=created, values=values)
    return valid, list(map(_sorted, rows))
