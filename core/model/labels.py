"""Labels for training from any table or SQL query: checked, and read as Feast's entity rows.

The source (`[schema.]table` or a query) must have the feature service's join key columns, an event
timestamp column and the label column. Its timestamps may be `timestamptz`, naive `timestamp` (taken as
UTC, whatever the session's time zone) or `date` (midnight UTC). The entity rows Feast joins to are
`<join keys>, event_timestamp (timestamptz), tandem_label`. `fit_targets` turns the label values into what
the estimator fits: numbers for a regressor, 0/1 for a classifier (1: the greater of exactly two values).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
from psycopg import sql

from core.errors import TrainingError
from core.model.tasks import Task

__all__ = ["LABEL_ALIAS", "TIMESTAMP", "describe_labels", "entity_rows_query", "fit_targets", "is_query"]

TIMESTAMP = "event_timestamp"
LABEL_ALIAS = "tandem_label"  # the label rides through Feast's join as an entity_df column

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_TIMESTAMP_OIDS = {1184: "{}", 1114: "({} AT TIME ZONE 'UTC')", 1082: "({}::timestamp AT TIME ZONE 'UTC')"}


def _clean(labels: str) -> str:
    return labels.strip().rstrip(";").strip()


def is_query(labels: str) -> bool:
    """True when `labels` is SQL rather than a `[schema.]table` name."""
    return _TABLE.match(_clean(labels)) is None


def describe_labels(labels: str) -> str:
    """How messages name the labels: the table, or `the labels query`."""
    return "the labels query" if is_query(labels) else _clean(labels)


def _source(labels: str) -> sql.Composable:
    text = _clean(labels)
    if not text:
        raise TrainingError("no labels given: pass a [schema.]table or a SELECT query")
    if is_query(text):
        return sql.SQL("({})").format(sql.SQL(text))  # the user's own query, run as the user's role
    return sql.Identifier(*text.split("."))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


def _columns(cursor: psycopg.Cursor[Any], labels: str, source: sql.Composable) -> dict[str, int]:
    """Column name -> type OID of the source, or TrainingError naming it."""
    try:
        cursor.execute(sql.SQL("SELECT * FROM {} AS tandem_labels LIMIT 0").format(source))
    except psycopg.errors.Error as exc:
        raise TrainingError(
            f"cannot read labels from {describe_labels(labels)}: {_first_line(exc)}"
        ) from None
    return {column.name: column.type_code for column in cursor.description or ()}


def entity_rows_query(
    cursor: psycopg.Cursor[Any],
    *,
    labels: str,
    join_keys: Sequence[str],
    label_column: str,
    timestamp_column: str = TIMESTAMP,
) -> str:
    """SQL of the entity rows (keys, `event_timestamp` timestamptz, `tandem_label`); TrainingError if unusable.

    Unusable: unreadable, missing a column, a timestamp that is not a timestamp or date, or no rows.
    """
    source = _source(labels)
    columns = _columns(cursor, labels, source)
    needed = [*join_keys, timestamp_column, label_column]
    missing = [name for name in dict.fromkeys(needed) if name not in columns]
    if missing:
        raise TrainingError(
            f"labels from {describe_labels(labels)} lack column(s) {', '.join(missing)} "
            f"(need join keys {', '.join(join_keys)}, timestamp {timestamp_column}, label {label_column}; "
            f"found {', '.join(columns) or 'none'})"
        )
    template = _TIMESTAMP_OIDS.get(columns[timestamp_column])
    if template is None:
        type_info = cursor.connection.adapters.types.get(columns[timestamp_column])
        kind = type_info.name if type_info is not None else f"oid {columns[timestamp_column]}"
        raise TrainingError(
            f"timestamp column {timestamp_column} of {describe_labels(labels)} is {kind}, "
            "not timestamptz, timestamp or date"
        )
    query = (
        sql.SQL("SELECT {keys}, {at} AS {ts}, {label} AS {alias} FROM {source} AS tandem_labels")
        .format(
            keys=sql.SQL(", ").join(sql.Identifier(key) for key in join_keys),
            at=sql.SQL(template).format(sql.Identifier(timestamp_column)),
            ts=sql.Identifier(TIMESTAMP),
            label=sql.Identifier(label_column),
            alias=sql.Identifier(LABEL_ALIAS),
            source=source,
        )
        .as_string(cursor)
    )
    found = cursor.execute(f"SELECT EXISTS ({query})").fetchone()
    if not (found and found[0]):
        raise TrainingError(f"{describe_labels(labels)} is empty: no labels to train on")
    return query


def fit_targets(
    labels: pd.Series[Any], *, task: Task, source: str
) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    """The fit targets (0/1 for a classifier: 1 is the greater label value) and what to record about them."""
    if labels.isna().any():
        raise TrainingError(f"{int(labels.isna().sum())} labels of {source} are null")
    if task == "regression":
        try:
            return labels.to_numpy(dtype=np.float64), {}
        except (TypeError, ValueError):
            raise TrainingError(f"the labels of {source} are not numbers: regression needs numbers") from None
    values = sorted(labels.unique().tolist())
    if len(values) != 2:
        raise TrainingError(
            f"the labels of {source} take {len(values)} values {values[:5]}: a classifier needs exactly two"
        )
    return (labels == values[1]).to_numpy(dtype=np.int64), {"positive_label": str(values[1])}
