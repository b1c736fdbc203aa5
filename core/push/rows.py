"""Pushed rows: validated against the push source's view, appended offline, then written online.

Validation happens before anything is written: every row is checked against the push source's view and
turned into columns (`ValidRows`); `online_rows` keeps each entity's newest row for the online write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import NotFoundError
from core.features.keys import EntityId
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.offline.append import OfflineRows
from core.online.rows import FeatureColumn, FeatureRows
from core.push.times import utc_micros

__all__ = [
    "DEFAULT_CLOCK_SKEW_S",
    "DEFAULT_MAX_AGE_S",
    "FLOAT32_MAX",
    "NUMERIC_DTYPES",
    "PushError",
    "ValidRows",
    "event_window",
    "find_push_view",
    "newest_per_entity",
    "offline_rows",
    "online_rows",
    "parse_timestamp",
    "validate_rows",
]


class PushError(ValueError):
    """A row does not fit the push source's schema; the message names the row and field."""


@dataclass(frozen=True, slots=True)
class ValidRows:
    """Rows in column form, ready for the offline insert and the online write."""

    view: ViewSpec
    entity_ids: list[EntityId]
    event_ts: list[datetime]
    created: list[datetime]
    values: dict[str, list[Any]]  # feature name -> one value per row


def find_push_view(service: ServiceSpec, push_source: str) -> ViewSpec:
    """The view fed by `push_source`, or NotFoundError naming the ones that exist."""
    for view in service.views:
        if view.push_source == push_source:
            return view
    known = sorted(v.push_source for v in service.views if v.push_source)
    raise NotFoundError(f"push source {push_source!r} does not exist (known: {', '.join(known) or 'none'})")


def parse_timestamp(value: object, where: str) -> datetime:
    """An ISO 8601 timestamp string with a timezone, in UTC; else PushError naming `where`."""
    if not isinstance(value, str):
        raise PushError(f"{where}: expected an ISO 8601 timestamp string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PushError(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise PushError(f"{where}: timestamp {value!r} has no timezone (add Z or +00:00)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise PushError(f"{where}: timestamp {value!r} is out of range") from None


_INT_RANGES = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _value(feature: FeatureSpec, value: object, where: str) -> object:
    if value is None:
        return None
    kind = feature.kind
    if kind in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PushError(f"{where}: expected an integer")
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise PushError(f"{where}: integer out of {kind} range [{low}, {high}]")
        return value
    if kind in ("float64", "float32"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PushError(f"{where}: expected a number")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any double
            raise PushError(f"{where}: number out of {kind} range") from None
        if not math.isfinite(number):
            raise PushError(f"{where}: NaN and infinity are not accepted")
        if kind == "float32" and abs(number) > FLOAT32_MAX:
            raise PushError(f"{where}: number out of float32 range (|x| <= {FLOAT32_MAX:.7g})")
        return number
    if kind == "bool":
        if not isinstance(value, bool):
            raise PushError(f"{where}: expected true or false")
        return value
    if not isinstance(value, str):
        raise PushError(f"{where}: expected a string")
    if "\x00" in value:
        raise PushError(f"{where}: NUL characters are not accepted")
    return value


DEFAULT_MAX_AGE_S = 30 * 86_400
DEFAULT_CLOCK_SKEW_S = 300.0


def _in_window(moment: datetime, where: str, *, earliest: datetime, latest: datetime) -> datetime:
    """The event time when it lies in [earliest, latest]; else PushError naming the row and the window."""
    if not earliest <= moment <= latest:
        raise PushError(
            f"{where}: event time {moment.isoformat()} is outside the accepted window "
            f"[{earliest.isoformat()}, {latest.isoformat()}] (the view's TTL back, the clock-skew allowance ahead)"
        )
    return moment


def event_window(
    view: ViewSpec, *, now: datetime, max_age_s: float, clock_skew_s: float
) -> tuple[datetime, datetime]:
    """The accepted event times [earliest, latest]: the view's TTL (`max_age_s` when none) back from `now`,
    `clock_skew_s` ahead."""
    try:
        earliest = now - timedelta(seconds=view.ttl_s or max_age_s)
    except OverflowError:  # a TTL of millennia: no lower bound
        earliest = datetime.min.replace(tzinfo=UTC)
    return earliest, now + timedelta(seconds=clock_skew_s)


def validate_rows(
    view: ViewSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
) -> ValidRows:
    """Check every row against the view's schema; raise PushError naming the first fault.

    Event times must lie in [now - the view's TTL (`max_age_s` when the view has none), now +
    `clock_skew_s`]: a row from the future would block the entity's later pushes online.
    """
    earliest, latest = event_window(view, now=now, max_age_s=max_age_s, clock_skew_s=clock_skew_s)
    key = view.key
    required = {*key.join_keys, view.timestamp_field, *(f.name for f in view.features)}
    allowed = required | ({view.created_field} if view.created_field else set())
    ids, stamps, created = [], [], []
    values: dict[str, list[Any]] = {f.name: [] for f in view.features}
    for index, row in enumerate(rows):
        where = f"rows[{index}]"
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise PushError(f"{where}: unknown column(s) {', '.join(unknown)}")
        absent = sorted(required - set(row))
        if absent:
            raise PushError(f"{where}: missing column(s) {', '.join(absent)}")
        try:
            ids.append(key.id_in(row, where))
        except ValueError as exc:
            raise PushError(str(exc)) from None
        stamp_at = f"{where}.{view.timestamp_field}"
        stamps.append(
            _in_window(
                parse_timestamp(row[view.timestamp_field], stamp_at),
                stamp_at,
                earliest=earliest,
                latest=latest,
            )
        )
        made = row.get(view.created_field) if view.created_field else None
        created.append(parse_timestamp(made, f"{where}.{view.created_field}") if made is not None else now)
        for feature in view.features:
            values[feature.name].append(_value(feature, row[feature.name], f"{where}.{feature.name}"))
    return ValidRows(view=view, entity_ids=ids, event_ts=stamps, created=created, values=values)


def newest_per_entity(rows: ValidRows) -> list[int]:
    """Indexes of the rows to write online: the newest event per entity (ties: the later row)."""
    best: dict[EntityId, int] = {}
    for i, entity in enumerate(rows.entity_ids):
        j = best.get(entity)
        if j is None or rows.event_ts[i] >= rows.event_ts[j]:
            best[entity] = i
    return sorted(best.values())


NUMERIC_DTYPES: dict[str, type[np.generic]] = {
    "float64": np.float64,
    "float32": np.float64,
    "int64": np.int64,
    "int32": np.int64,
    "bool": np.bool_,
}
"""The numpy type that holds a validated value of each numeric kind exactly (float32 values are doubles)."""


def _column(kind: str, values: list[Any]) -> npt.NDArray[Any]:
    """A feature's values as the online encoders take them fastest: a typed array when there is no null
    (validated values fit it), else an object array. The bytes are the same either way."""
    dtype = NUMERIC_DTYPES.get(kind)
    if dtype is not None and None not in values:
        return np.array(values, dtype=dtype)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _newest(rows: ValidRows, stamps: npt.NDArray[np.datetime64]) -> npt.NDArray[np.intp]:
    """`newest_per_entity` (as positions), sorted by numpy for an int key."""
    if rows.view.key.int_kind is None:
        return np.array(newest_per_entity(rows), dtype=np.intp)
    ids = np.array(rows.entity_ids, dtype=np.int64)
    order = np.lexsort((np.arange(len(ids)), stamps, ids))  # by id, then time, then position
    ordered = ids[order]
    last = np.ones(len(ids), dtype=np.bool_)  # the last of each id: its newest, the later of equals
    last[:-1] = ordered[1:] != ordered[:-1]
    return np.sort(order[last])


def online_rows(rows: ValidRows) -> FeatureRows:
    """Each entity's newest pushed row, as rows of the view for the online store."""
    view = rows.view
    stamps = utc_micros(rows.event_ts).view("datetime64[us]")
    chosen = _newest(rows, stamps)
    every = len(chosen) == len(stamps)
    positions = chosen.tolist()
    return FeatureRows(
        view=view.name,
        key=view.key,
        entity_ids=view.key.array(rows.entity_ids if every else [rows.entity_ids[i] for i in positions]),
        columns=tuple(
            FeatureColumn(
                f.name,
                f.kind,
                _column(
                    f.kind, rows.values[f.name] if every else [rows.values[f.name][i] for i in positions]
                ),
            )
            for f in view.features
        ),
        event_timestamps=stamps if every else stamps[chosen],
    )


def offline_rows(rows: ValidRows) -> OfflineRows:
    """Every pushed row, for the view's offline source table."""
    view = rows.view
    columns = [*view.key.join_keys, view.timestamp_field]
    if view.created_field:
        columns.append(view.created_field)
    columns += [f.name for f in view.features]
    records = []
    for i, entity in enumerate(rows.entity_ids):
        record: list[Any] = [*view.key.parts(entity), rows.event_ts[i]]
        if view.created_field:
            record.append(rows.created[i])
        record += [rows.values[f.name][i] for f in view.features]
        records.append(record)
    return OfflineRows(view=view, columns=tuple(columns), records=records)
