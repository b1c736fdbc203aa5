"""Decoding one field of many HMGET replies at once: a column of serialized Feast values or timestamps.

Pure (no I/O). Each function equals its one-value decoder (`core.online.decoding`) mapped over the column, for
any input; it only takes a faster road where the column has the common shape. A float64 (float32) column whose
every value is the 9 (5) bytes `0x29 <f64>` (`0x35 <f32>`) is read by numpy in one go; anything else (a null,
a missing field, another encoding) goes value by value. Timestamps repeat (a view's rows, a run's scores)
and are decoded once per distinct value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

import numpy as np

from core.online.decoding import Decoder, Scalar, decode_timestamp

__all__ = ["decode_stamps", "decode_values"]

_FIXED = {  # kind -> (size, tag, numpy layout of tag + value)
    "float64": (9, 0x29, np.dtype([("tag", "u1"), ("value", "<f8")])),
    "float32": (5, 0x35, np.dtype([("tag", "u1"), ("value", "<f4")])),
}


def _fixed_width(kind: str, column: Sequence[bytes | None]) -> list[Scalar] | None:
    """The column's values when every one has `kind`'s one-field shape, else None."""
    size, tag, layout = _FIXED[kind]
    if not column or set(map(type, column)) != {bytes}:
        return None  # None (missing) somewhere
    present = cast("Sequence[bytes]", column)
    if set(map(len, present)) != {size}:
        return None  # b"" (null) or another shape somewhere
    cells = np.frombuffer(b"".join(present), dtype=layout)
    if not bool((cells["tag"] == tag).all()):
        return None
    values: list[Scalar] = cells["value"].astype(np.float64).tolist()
    return values


def decode_values(kind: str, decoder: Decoder, column: Sequence[bytes | None]) -> list[Scalar]:
    """`decoder` (the feature's `value_decoder(kind)`) of every value of the column, in order."""
    if kind in _FIXED:
        values = _fixed_width(kind, column)
        if values is not None:
            return values
    return list(map(decoder, column))


def decode_stamps(column: Sequence[bytes | None]) -> list[datetime | None]:
    """`decode_timestamp` of every value of the column (None stays None: no row of that view)."""
    seen: dict[bytes, datetime] = {}
    stamps: list[datetime | None] = []
    for data in column:
        if data is None:
            stamps.append(None)
            continue
        stamp = seen.get(data)
        if stamp is None:
            stamp = seen[data] = decode_timestamp(data)
        stamps.append(stamp)
    return stamps
