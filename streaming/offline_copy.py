"""Valid rows as one PostgreSQL binary COPY buffer, built by numpy, for a table whose columns have the
natural types of the view's kinds.

`psycopg`'s `write_row` formats a row at a time in Python; here each column is converted once for the
whole group (ints, floats, bools, microseconds since 2000) and the tuples are laid out by a numpy
structured array (one `tobytes`), or, when a column has nulls or strings, joined row by row from per-column
pieces. Binary COPY needs the column's exact type, so `copy_buffer` says None unless every column is one it
writes exactly as the text COPY would be read: int8 (int4 for an int32 kind), float8, bool, text or
varchar, timestamptz or timestamp (UTC). The caller then COPYs the rows as text. Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core.batch.copy import COPY_HEADER, COPY_TRAILER, NULL_FIELD, PG_EPOCH_US, binary_field
from core.online.encoding import row_bytes
from core.push.rows import NUMERIC_DTYPES, ValidRows
from core.push.times import utc_micros, wall_micros

__all__ = ["copy_buffer", "offline_columns"]


# (kind, PostgreSQL type) -> numpy big-endian type of the binary field
_FIXED: dict[tuple[str, str], str] = {
    ("int64", "int8"): ">i8",
    ("int32", "int8"): ">i8",
    ("int32", "int4"): ">i4",
    ("float64", "float8"): ">f8",
    ("float32", "float8"): ">f8",
    ("bool", "bool"): "?",
    ("timestamp", "timestamptz"): ">i8",  # the kind becomes the column's type (`_array` converts by it)
    ("timestamp", "timestamp"): ">i8",
}
_TEXT_TYPES = {"text", "varchar"}


def offline_columns(valid: ValidRows) -> list[tuple[str, str, list[Any]]]:
    """(column, kind, values) of the view's source table in `offline_rows`'s order; a timestamp's kind is
    `timestamp`. Composite keys are not split here (the caller keeps the text COPY for them)."""
    view = valid.view
    columns: list[tuple[str, str, list[Any]]] = [
        (view.key.join_keys[0], view.key.kinds[0], valid.entity_ids),
        (view.timestamp_field, "timestamp", valid.event_ts),
    ]
    if view.created_field:
        columns.append((view.created_field, "timestamp", valid.created))
    columns += [(f.name, f.kind, valid.values[f.name]) for f in view.features]
    return columns


def _micros(moments: Sequence[datetime], *, wall: bool) -> npt.NDArray[np.int64]:
    """Microseconds since 2000-01-01 (PostgreSQL's timestamps): of the UTC instant for a timestamptz, of
    the wall time for a timestamp (the text COPY's offset is ignored there)."""
    return (wall_micros(moments) if wall else utc_micros(moments)) - PG_EPOCH_US


def _array(kind: str, values: list[Any]) -> npt.NDArray[Any]:
    if kind in ("timestamp", "timestamptz"):
        return _micros(values, wall=kind == "timestamp")
    return np.array(values, dtype=NUMERIC_DTYPES[kind])


def _pieces(kind: str, dtype: str | None, values: list[Any]) -> list[bytes]:
    """Each value as `<length><data>` (a null: length -1)."""
    if dtype is None:  # text
        encoded = [None if v is None else v.encode("utf-8") for v in values]
        return [NULL_FIELD if data is None else binary_field(data) for data in encoded]
    if None in values:
        present = [i for i, v in enumerate(values) if v is not None]
        out = [NULL_FIELD] * len(values)
        for i, piece in zip(present, _pieces(kind, dtype, [values[i] for i in present]), strict=True):
            out[i] = piece
        return out
    array = _array(kind, values)
    width = np.dtype(dtype).itemsize
    rows = np.empty(len(values), dtype=[("n", ">i4"), ("v", dtype)])
    rows["n"], rows["v"] = width, array
    return row_bytes(rows.view(np.uint8).reshape(len(values), 4 + width))


def copy_buffer(
    valid: ValidRows, pg_types: Mapping[str, str], positions: Sequence[int] | None = None
) -> bytes | None:
    """The binary COPY (header, tuples, trailer) of the rows (those at `positions`, or all) for a table
    whose column types are `pg_types` (column -> type name); None when a column's type is not one this
    writes exactly (then COPY the rows as text)."""
    if valid.view.key.composite:
        return None
    columns = offline_columns(valid)
    if positions is not None:
        columns = [(name, kind, [values[i] for i in positions]) for name, kind, values in columns]
    count = len(columns[0][2])
    plan: list[tuple[str, str | None, list[Any]]] = []
    for name, kind, values in columns:
        pg_type = pg_types.get(name)
        if kind == "string" and pg_type in _TEXT_TYPES:
            plan.append((kind, None, values))
            continue
        dtype = _FIXED.get((kind, pg_type or ""))
        if dtype is None:
            return None
        plan.append((pg_type if kind == "timestamp" and pg_type else kind, dtype, values))
    fields = struct.pack(">h", len(plan))
    if all(dtype is not None and None not in values for _, dtype, values in plan):
        layout = [("fields", ">i2")]
        for i, (_, dtype, _values) in enumerate(plan):
            layout += [(f"n{i}", ">i4"), (f"v{i}", dtype or "")]
        rows = np.empty(count, dtype=layout)
        rows["fields"] = len(plan)
        for i, (kind, dtype, values) in enumerate(plan):
            rows[f"n{i}"] = np.dtype(dtype).itemsize
            rows[f"v{i}"] = _array(kind, values)
        return COPY_HEADER + rows.tobytes() + COPY_TRAILER
    pieces = [_pieces(kind, dtype, values) for kind, dtype, values in plan]
    body = b"".join(fields + b"".join(row) for row in zip(*pieces, strict=True))
    return COPY_HEADER + body + COPY_TRAILER
