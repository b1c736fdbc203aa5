"""Point-in-time rows of one feature view for chosen entities, typed per feature: what online should hold.

Same semantics as `core.offline.point_in_time` (and Feast's PostgreSQL historical retrieval) for an entity row
stamped `as_of`: the row with the newest event timestamp (ties: newest created timestamp) with
`as_of - ttl <= event_timestamp <= as_of` (no lower bound when the TTL is 0); no row -> no event time and
null values. Unlike `core.offline.point_in_time` (float matrices for scoring), values keep their kind: int64 and
bool exactly, strings as text, so they can be compared with the online store value for value.

One query per view, read with psycopg's binary protocol; the candidate rows are joined to the wanted ids
(`unnest`) so only the sample is sorted. `entity_population` lists the entities a check samples from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from consistency.classify import NO_TIME, ValueColumn
from core.features.keys import EntityId, EntityKey
from core.features.specs import Kind, ViewSpec

__all__ = ["ExpectedView", "entity_population", "expected_view_rows", "latest_event_us"]

_CASTS: dict[Kind, str] = {
    "float64": "float8",
    "float32": "float8",  # compared at float32 precision by the classifier
    "int64": "int8",
    "int32": "int8",
    "bool": "bool",
    "string": "text",
}


@dataclass(frozen=True, slots=True)
class ExpectedView:
    """One view's point-in-time row per wanted entity (aligned with the ids asked for)."""

    view: str
    as_of: datetime
    event_us: npt.NDArray[np.int64]  # µs since the Unix epoch; NO_TIME: no row
    columns: dict[str, ValueColumn]  # feature name -> values


def _key_cast(kind: str) -> sql.SQL:
    return sql.SQL("text" if kind == "string" else "int8")


def _source_keys(key: EntityKey) -> tuple[list[sql.Composable], list[sql.SQL]]:
    """The join keys as `src.<column>` and the cast of each (int8 or text)."""
    return (
        [sql.SQL("src.{}").format(sql.Identifier(name)) for name in key.join_keys],
        [_key_cast(kind) for kind in key.kinds],
    )


def _wanted_join(keys: list[sql.Composable], casts: list[sql.SQL]) -> sql.Composed:
    """`JOIN unnest(%(k0)s, ...) AS wanted(...)` on every join key: only the wanted entities' rows."""
    wanted = [sql.Identifier(f"w{n}") for n in range(len(keys))]
    return sql.SQL("JOIN unnest({arrays}) AS wanted({names}) ON {match}").format(
        arrays=sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(f"k{n}"), cast) for n, cast in enumerate(casts)
        ),
        names=sql.SQL(", ").join(wanted),
        match=sql.SQL(" AND ").join(
            sql.SQL("{}::{} = wanted.{}").format(key, cast, name)
            for key, cast, name in zip(keys, casts, wanted, strict=True)
        ),
    )


def _query(view: ViewSpec, *, restrict: bool) -> sql.Composed:
    ts = sql.Identifier(view.timestamp_field)
    keys, casts = _source_keys(view.key)
    window = sql.SQL("src.{ts} <= %(as_of)s").format(ts=ts)
    if view.ttl_s:
        window = sql.SQL("{} AND src.{ts} >= %(as_of)s - make_interval(secs => {ttl})").format(
            window, ts=ts, ttl=sql.Literal(view.ttl_s)
        )
    join = _wanted_join(keys, casts) if restrict else sql.SQL("")
    order = [*keys, sql.SQL("src.{} DESC").format(ts)]
    if view.created_field:
        order.append(sql.SQL("src.{} DESC").format(sql.Identifier(view.created_field)))
    columns = [
        *(sql.SQL("{}::{}").format(key, cast) for key, cast in zip(keys, casts, strict=True)),
        sql.SQL("(EXTRACT(EPOCH FROM src.{}) * 1000000)::int8").format(ts),
        *(
            sql.SQL("src.{}::{}").format(sql.Identifier(f.name), sql.SQL(_CASTS[f.kind]))
            for f in view.features
        ),
    ]
    return sql.SQL(
        "SELECT DISTINCT ON ({key}) {columns} FROM {table} AS src {join} WHERE {window} ORDER BY {order}"
    ).format(
        key=sql.SQL(", ").join(keys),
        columns=sql.SQL(", ").join(columns),
        table=sql.SQL(view.table),  # from Feast's registry: a table name or a parenthesised query
        join=join,
        window=window,
        order=sql.SQL(", ").join(order),
    )


def _column(kind: Kind, items: Sequence[Any], positions: npt.NDArray[np.intp], size: int) -> ValueColumn:
    """Values read for some entities, scattered to their positions among `size` entities (others null)."""
    null = np.ones(size, dtype=np.bool_)
    found_null = np.fromiter((v is None for v in items), dtype=np.bool_, count=len(items))
    null[positions] = found_null
    values: npt.NDArray[Any]
    if kind in ("float64", "float32"):
        values = np.full(size, np.nan)
        values[positions] = np.array(items, dtype=np.float64)  # None -> NaN
    elif kind == "string":
        values = np.full(size, None, dtype=object)
        values[positions] = np.array(items, dtype=object)
    else:
        values = np.zeros(size, dtype=np.int64)
        values[positions] = np.array([0 if v is None else int(v) for v in items], dtype=np.int64)
    return ValueColumn(kind=kind, values=values, null=null)


def expected_view_rows(
    conn: psycopg.Connection[Any],
    view: ViewSpec,
    *,
    as_of: datetime,
    entity_ids: npt.NDArray[Any],
    restrict: bool = True,
) -> ExpectedView:
    """The point-in-time row of `view` as of `as_of` for each of `entity_ids` (sorted, unique; ids as
    `core.features.keys` makes them).

    `restrict=False` reads every entity's row and keeps the wanted ones: faster when they are (nearly) all.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    key = view.key
    ids = key.array(entity_ids)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("entity_ids must be sorted and unique")
    params: dict[str, Any] = {"as_of": as_of}
    if restrict:
        params |= {f"k{n}": column for n, column in enumerate(_key_columns(key, ids))}
    with conn.cursor(binary=True) as cur:
        cur.execute(_query(view, restrict=restrict), params)
        rows = cur.fetchall()
    width = len(key.join_keys)
    positions, keep = _positions(key, ids, [key.compose(row[:width]) for row in rows])
    kept = [row for row, wanted in zip(rows, keep.tolist(), strict=True) if wanted]
    transposed: list[Sequence[Any]] = (
        list(zip(*kept, strict=True)) if kept else [()] * (width + 1 + len(view.features))
    )
    event_us = np.full(len(ids), NO_TIME, dtype=np.int64)
    event_us[positions] = np.array(transposed[width], dtype=np.int64)
    columns = {
        feature.name: _column(feature.kind, transposed[width + 1 + n], positions, len(ids))
        for n, feature in enumerate(view.features)
    }
    return ExpectedView(view=view.name, as_of=as_of, event_us=event_us, columns=columns)


def _key_columns(key: EntityKey, ids: npt.NDArray[Any]) -> list[list[Any]]:
    """One list of values per join key, for `unnest`."""
    return [list(column) for column in key.columns(ids)]


def _positions(
    key: EntityKey, ids: npt.NDArray[Any], found: list[EntityId]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where each found id sits among `ids` (sorted), and which found ids are wanted at all."""
    if key.int_kind is not None and len(ids):
        found_ids = np.array(found, dtype=np.int64)
        positions = np.searchsorted(ids, found_ids)
        keep = ids[np.minimum(positions, len(ids) - 1)] == found_ids
        return positions[keep], keep
    index = {entity_id: n for n, entity_id in enumerate(ids.tolist())}
    keep = np.array([entity_id in index for entity_id in found], dtype=np.bool_)
    positions = np.array([index[entity_id] for entity_id in found if entity_id in index], dtype=np.intp)
    return positions, keep


def entity_population(
    conn: psycopg.Connection[Any], *, as_of: Mapping[str, tuple[ViewSpec, datetime]]
) -> npt.NDArray[Any]:
    """Sorted, unique ids of every entity with a row at or before its view's time, in any of the views given
    (view name -> (spec, time)). Rows past a TTL count: an expired entity is still checked. An entity has
    many rows per view (one per event): one view alone needs DISTINCT as much as several need UNION."""
    parts = [
        sql.SQL("SELECT DISTINCT {keys} FROM {table} AS src WHERE src.{ts} <= {moment}").format(
            keys=sql.SQL(", ").join(
                sql.SQL("src.{}::{}").format(sql.Identifier(name), _key_cast(kind))
                for name, kind in zip(spec.key.join_keys, spec.key.kinds, strict=True)
            ),
            table=sql.SQL(spec.table),
            ts=sql.Identifier(spec.timestamp_field),
            moment=sql.Placeholder(f"t{index}"),
        )
        for index, (spec, _) in enumerate(as_of.values())
    ]
    if not parts:
        return np.empty(0, dtype=np.int64)
    key = next(iter(as_of.values()))[0].key
    params = {f"t{index}": moment for index, (_, moment) in enumerate(as_of.values())}
    with conn.cursor(binary=True) as cur:
        cur.execute(sql.SQL(" UNION ").join(parts), params)
        if key.int_kind is not None:
            return np.unique(np.fromiter((row[0] for row in cur), dtype=np.int64))
        found = {key.compose(row) for row in cur if None not in row}
    return key.array(sorted(found))


def latest_event_us(
    conn: psycopg.Connection[Any], view: ViewSpec, *, entity_ids: npt.NDArray[Any]
) -> npt.NDArray[np.int64]:
    """The newest offline event time of `view` (no time bound, no TTL) of each of `entity_ids`, in µs since
    the Unix epoch, NO_TIME for an entity without a row; aligned with the ids."""
    key = view.key
    ids = key.array(entity_ids)
    latest = np.full(len(ids), NO_TIME, dtype=np.int64)
    if not len(ids):
        return latest
    keys, casts = _source_keys(key)
    query = sql.SQL(
        "SELECT {columns}, (EXTRACT(EPOCH FROM max(src.{ts})) * 1000000)::int8 FROM {table} AS src "
        "{join} GROUP BY {group}"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("{}::{}").format(k, c) for k, c in zip(keys, casts, strict=True)),
        ts=sql.Identifier(view.timestamp_field),
        table=sql.SQL(view.table),
        join=_wanted_join(keys, casts),
        group=sql.SQL(", ").join(keys),
    )
    width = len(keys)
    with conn.cursor(binary=True) as cur:
        cur.execute(query, {f"k{n}": column for n, column in enumerate(_key_columns(key, ids))})
        found = {
            key.compose(row[:width]): int(row[width]) for row in cur.fetchall() if row[width] is not None
        }
    for position, entity in enumerate(ids.tolist()):
        latest[position] = found.get(entity, NO_TIME)
    return latest
