"""What a model receives for a feature value: one conversion per kind, the same on the batch and live paths.

- numbers and bools become float64, null becomes NaN;
- a float32 feature is the float32 Feast stores online (`Value.float_val`, rounded to nearest): the live path
  decodes those 4 bytes (exact in a double), so the batch path rounds the offline value through float32
  before widening it, and both hand the model the same double, bit for bit;
- int32, int64 and bool values are exact in a double up to 2**53; beyond, both paths round to nearest
  (PostgreSQL's `int8::float8` and Python's `float(int)` agree);
- a string stays a `str` (null: None) for categorical pipelines: nothing turns it into a number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.specs import Kind

__all__ = ["NUMERIC_KINDS", "batch_input", "live_input", "numeric_column"]

NUMERIC_KINDS: frozenset[Kind] = frozenset({"float64", "float32", "int64", "int32", "bool"})
"""Kinds a model receives as float64; `string` is the only other kind."""


def _round_float32(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(over="ignore"):  # beyond float32's range: infinity, as protobuf's float field holds
        return values.astype(np.float32).astype(np.float64)


def batch_input(kind: Kind, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The model's column for offline values of `kind`: float64 (NaN for null) as read from PostgreSQL's
    `float8`, float32-rounded for a float32 feature; strings untouched (an object array, None for null)."""
    if kind == "string":
        return values
    column = np.asarray(values, dtype=np.float64)
    return _round_float32(column) if kind == "float32" else column


def live_input(kind: Kind, value: float | int | str | bool | None) -> float | str | None:
    """The model's value for one decoded online value of `kind` (see the module docstring)."""
    if kind == "string":
        return None if value is None else str(value)
    if value is None:
        return math.nan
    if isinstance(value, str):
        raise TypeError(f"a {kind} feature holds a string online: {value!r}")
    number = float(value)
    if kind == "float32" and math.isfinite(number):
        return float(_round_float32(np.array([number]))[0])
    return number


def numeric_column(kind: Kind, values: list[float | int | str | bool | None]) -> npt.NDArray[np.float64]:
    """`live_input` of every decoded online value of a numeric `kind`, as one float64 column, at once: numpy
    converts numbers and bools as `float()` does and None to NaN; a string (which `live_input` refuses) takes
    the value-by-value path, which raises."""
    if str in set(map(type, values)):
        return np.array([live_input(kind, value) for value in values], dtype=np.float64)
    column = np.array(values, dtype=np.float64)
    return _round_float32(column) if kind == "float32" else column
