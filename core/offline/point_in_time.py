"""Point-in-time features for every entity as of one moment, straight from the offline tables.

The same semantics as Feast's PostgreSQL historical retrieval for an entity row stamped `as_of`: per view,
the row with the newest event timestamp (ties: newest created timestamp) with
`as_of - ttl <= event_timestamp <= as_of` (no lower bound when the TTL is 0); no row -> nulls. Entities are
every key with a row in that window in any view of the service.

The rows come back through one binary `COPY (query) TO STDOUT`, with every column made fixed-width in SQL
(value + null flag), so each chunk is parsed by numpy in one `frombuffer` call: no Python per row. A service
with a string feature or a string or composite entity key (variable width) is read row by row instead
(`cursor.stream`, chunked fetches), and its ids composed as `core.features.keys` says.

Values reach the model as `core.features.inputs.batch_input` makes them: float64 from PostgreSQL's `float8`
(float32 features rounded through float32, as Feast stores them online), strings as `str`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from core.features.inputs import batch_input
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec

__all__ = ["FeatureChunk", "point_in_time_query", "stream_point_in_time"]

_HEADER_FIXED = 11 + 4 + 4  # signature, flags, header-extension length


@dataclass(frozen=True, slots=True)
class FeatureChunk:
    """Consecutive entities (ordered by their join keys) with their model inputs and the event time of each
    view's row. Ids as `core.features.keys` makes them: int64 for one int key, else strings."""

    entity_ids: npt.NDArray[Any]
    values: dict[str, npt.NDArray[Any]]  # "view:feature" -> float64 (NaN: null), or object for strings (None)
    event_us: dict[str, npt.NDArray[np.int64]]  # view -> event time in µs since the Unix epoch, -1 for none

    def __len__(self) -> int:
        return int(self.entity_ids.shape[0])


def _key_aliases(spec: ServiceSpec) -> list[sql.Identifier]:
    """`k0, k1, ...`: the join keys under positional names (Feast's order), shared by every view's CTE."""
    return [sql.Identifier(f"k{n}") for n in range(len(spec.key.join_keys))]


def _view_cte(index: int, view: ViewSpec) -> sql.Composed:
    window = sql.SQL("{ts} <= %(as_of)s").format(ts=sql.Identifier(view.timestamp_field))
    if view.ttl_s:
        window = sql.SQL("{} AND {ts} >= %(as_of)s - make_interval(secs => {ttl})").format(
            window, ts=sql.Identifier(view.timestamp_field), ttl=sql.Literal(view.ttl_s)
        )
    keys = [sql.Identifier(name) for name in view.key.join_keys]
    order = [*keys, sql.SQL("{} DESC").format(sql.Identifier(view.timestamp_field))]
    if view.created_field:
        order.append(sql.SQL("{} DESC").format(sql.Identifier(view.created_field)))
    columns = [
        *(sql.SQL("{} AS {}").format(key, sql.Identifier(f"k{n}")) for n, key in enumerate(keys)),
        sql.SQL("{} AS event_ts").format(sql.Identifier(view.timestamp_field)),
        *(
            sql.SQL("{} AS {}").format(sql.Identifier(f.name), sql.Identifier(f"f{index}_{n}"))
            for n, f in enumerate(view.features)
        ),
    ]
    return sql.SQL(
        "v{i} AS (SELECT DISTINCT ON ({key}) {columns} FROM {table} AS src WHERE {window} ORDER BY {order})"
    ).format(
        i=sql.SQL(str(index)),
        key=sql.SQL(", ").join(keys),
        columns=sql.SQL(", ").join(columns),
        table=sql.SQL(view.table),  # from Feast's registry: a table name or a parenthesised query
        window=window,
        order=sql.SQL(", ").join(order),
    )


def _fixed(expression: sql.Composable, cast: str, zero: str) -> list[sql.Composable]:
    return [
        sql.SQL("COALESCE(({e})::{c}, {z})").format(e=expression, c=sql.SQL(cast), z=sql.SQL(zero)),
        sql.SQL("({e}) IS NULL").format(e=expression),
    ]


def _value(index: int, n: int, feature: FeatureSpec) -> sql.Composable:
    column = sql.SQL("v{i}.{c}").format(i=sql.SQL(str(index)), c=sql.Identifier(f"f{index}_{n}"))
    if feature.kind == "string":
        return sql.SQL("({})::text").format(column)
    return sql.SQL("(({})::int4)::float8").format(column) if feature.kind == "bool" else column


def point_in_time_query(spec: ServiceSpec) -> sql.Composed:
    """The query: the join keys, then per view its event time (µs) and features, each + a null flag on the
    fixed-width path (`_fixed_width`: one int key, numeric features, float8 for the binary COPY); else plain
    nullable columns, strings as text."""
    fixed = _fixed_width(spec)
    ctes = [_view_cte(i, view) for i, view in enumerate(spec.views)]
    aliases = _key_aliases(spec)
    select: list[sql.Composable] = [
        sql.SQL("{}::{}").format(alias, sql.SQL("text" if kind == "string" else "int8"))
        for alias, kind in zip(aliases, spec.key.kinds, strict=True)
    ]
    for i, view in enumerate(spec.views):
        ts = sql.SQL("(EXTRACT(EPOCH FROM v{i}.event_ts) * 1000000)").format(i=sql.SQL(str(i)))
        select += _fixed(ts, "int8", "-1") if fixed else [sql.SQL("({})::int8").format(ts)]
        for n, feature in enumerate(view.features):
            value = _value(i, n, feature)
            if fixed:
                select += _fixed(value, "float8", "0")
            else:
                select.append(value if feature.kind == "string" else sql.SQL("({})::float8").format(value))
    keys = sql.SQL(", ").join(aliases)
    joins = sql.SQL(" ").join(
        sql.SQL("FULL OUTER JOIN v{i} USING ({keys})").format(i=sql.SQL(str(i)), keys=keys)
        for i in range(1, len(spec.views))
    )
    return sql.SQL("WITH {ctes} SELECT {select} FROM v0 {joins} ORDER BY {keys}").format(
        ctes=sql.SQL(", ").join(ctes), select=sql.SQL(", ").join(select), joins=joins, keys=keys
    )


def _fixed_width(spec: ServiceSpec) -> bool:
    """Whether every column is fixed-width: one int join key and no string feature."""
    if spec.key.int_kind is None:
        return False
    return not any(feature.kind == "string" for view in spec.views for feature in view.features)


def _row_dtype(spec: ServiceSpec) -> np.dtype[Any]:
    fields: list[tuple[str, str]] = [("nfields", ">i2"), ("l_id", ">i4"), ("entity_id", ">i8")]
    for i, view in enumerate(spec.views):
        fields += [(f"l_t{i}", ">i4"), (f"t{i}", ">i8"), (f"l_tn{i}", ">i4"), (f"tn{i}", "?")]
        for n in range(len(view.features)):
            fields += [
                (f"l_v{i}_{n}", ">i4"),
                (f"v{i}_{n}", ">f8"),
                (f"l_n{i}_{n}", ">i4"),
                (f"n{i}_{n}", "?"),
            ]
    return np.dtype(fields)


def _to_chunk(spec: ServiceSpec, rows: npt.NDArray[np.void]) -> FeatureChunk:
    values: dict[str, npt.NDArray[Any]] = {}
    event_us: dict[str, npt.NDArray[np.int64]] = {}
    for i, view in enumerate(spec.views):
        event_us[view.name] = rows[f"t{i}"].astype(np.int64)
        for n, feature in enumerate(view.features):
            column = rows[f"v{i}_{n}"].astype(np.float64)
            column[rows[f"n{i}_{n}"]] = np.nan
            values[f"{view.name}:{feature.name}"] = batch_input(feature.kind, column)
    return FeatureChunk(rows["entity_id"].astype(np.int64), values, event_us)


def _rows_to_chunk(spec: ServiceSpec, rows: list[tuple[Any, ...]]) -> FeatureChunk:
    """A chunk from plain rows (the row-by-row path): nulls become NaN for numbers, None for strings."""
    columns = list(zip(*rows, strict=True))
    values: dict[str, npt.NDArray[Any]] = {}
    event_us: dict[str, npt.NDArray[np.int64]] = {}
    key = spec.key
    position = len(key.join_keys)
    if key.composite:
        ids = key.array([key.compose(parts) for parts in zip(*columns[:position], strict=True)])
    else:
        ids = key.array(columns[0])
    for view in spec.views:
        event_us[view.name] = np.array([-1 if t is None else t for t in columns[position]], dtype=np.int64)
        position += 1
        for feature in view.features:
            raw = columns[position]
            position += 1
            if feature.kind == "string":
                values[f"{view.name}:{feature.name}"] = np.array(raw, dtype=object)
            else:  # None -> NaN
                values[f"{view.name}:{feature.name}"] = batch_input(
                    feature.kind, np.array(raw, dtype=np.float64)
                )
    return FeatureChunk(ids, values, event_us)


def _stream_rows(
    conn: psycopg.Connection[Any], spec: ServiceSpec, *, as_of: datetime, chunk_rows: int
) -> Iterator[FeatureChunk]:
    pending: list[tuple[Any, ...]] = []
    with conn.cursor(binary=True) as cur:
        for row in cur.stream(point_in_time_query(spec), {"as_of": as_of}, size=min(chunk_rows, 10_000)):
            pending.append(tuple(row))
            if len(pending) == chunk_rows:
                yield _rows_to_chunk(spec, pending)
                pending = []
    if pending:
        yield _rows_to_chunk(spec, pending)


def stream_point_in_time(
    conn: psycopg.Connection[Any], spec: ServiceSpec, *, as_of: datetime, chunk_rows: int = 100_000
) -> Iterator[FeatureChunk]:
    """Yield the point-in-time features of every entity as of `as_of`, `chunk_rows` entities at a time."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    if not _fixed_width(spec):
        yield from _stream_rows(conn, spec, as_of=as_of, chunk_rows=chunk_rows)
        return
    dtype = _row_dtype(spec)
    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(point_in_time_query(spec))
    pending = bytearray()
    header_done = False
    with conn.cursor() as cur, cur.copy(query, {"as_of": as_of}) as copy:
        for block in copy:
            pending += block
            if not header_done:
                if len(pending) < _HEADER_FIXED:
                    continue
                extension = int.from_bytes(pending[15:19], "big")
                del pending[: _HEADER_FIXED + extension]
                header_done = True
            whole = (len(pending) // dtype.itemsize) * dtype.itemsize
            if whole >= chunk_rows * dtype.itemsize:
                usable = (len(pending) // (chunk_rows * dtype.itemsize)) * chunk_rows * dtype.itemsize
                rows = np.frombuffer(bytes(pending[:usable]), dtype=dtype)
                del pending[:usable]
                for start in range(0, len(rows), chunk_rows):
                    yield _to_chunk(spec, rows[start : start + chunk_rows])
    if pending[-2:] == b"\xff\xff":  # the trailer: a field count of -1
        del pending[-2:]
    if len(pending) % dtype.itemsize:
        raise RuntimeError(
            "COPY stream ended inside a row: the point-in-time query returned a partial result"
        )
    if pending:
        yield _to_chunk(spec, np.frombuffer(bytes(pending), dtype=dtype))
