"""What goes in and out of the online store: rows read for a feature service, rows written for a view.

Plain values, no I/O. `apply_ttl` gives a read row the point-in-time meaning offline retrieval has (Feast's
online read ignores a view's TTL, feast-dev/feast#6821).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.keys import EntityId, EntityKey
from core.features.specs import ServiceSpec, ViewSpec
from core.online.decoding import Scalar
from core.online.encoding import FeatureColumn

__all__ = [
    "STORED_FEATURES",
    "FeatureColumn",
    "FeatureRows",
    "OnlineRow",
    "StoredPrediction",
    "apply_ttl",
    "ttl_cutoff",
]

STORED_FEATURES = ("score", "model_version", "run_id", "feature_snapshot_ts")
"""The features of a stored-scores view, in the order the store reads them."""


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """An entity's published stored score and what it was computed from."""

    score: float
    model_version: str
    run_id: str
    scored_at: datetime  # the event time of the stored-scores view's row
    feature_snapshot_ts: dict[str, datetime | None]  # per feature view: event time of the row the score used
    run_kind: str | None = None  # batch | stream, when known (the online row does not carry it)


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """One entity's online state."""

    entity_id: EntityId
    values: dict[str, Scalar]  # "view:feature" -> value; None: null or missing
    event_ts: dict[str, datetime | None]  # view -> online event time; None: no row of that view
    stored: StoredPrediction | None  # None: no stored prediction, or an incomplete one


@dataclass(frozen=True, slots=True)
class FeatureRows:
    """Rows of one view to write: one per entity id, a column per feature, one event time per row (or one
    for all; naive means UTC). `view` is the name Feast uses in fields, `key` the view's entity key (ids are
    int64 for a single int key, else strings: `core.features.keys`), `key_ttl_s` EXPIREs written keys."""

    view: str
    key: EntityKey
    entity_ids: npt.NDArray[Any]
    columns: tuple[FeatureColumn, ...]
    event_timestamps: npt.NDArray[np.datetime64] | datetime
    key_ttl_s: int | None = None

    def __post_init__(self) -> None:
        ids = self.entity_ids
        if ids.ndim != 1:
            raise ValueError("entity_ids must be one-dimensional")
        names = [column.name for column in self.columns]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need distinct feature columns, got {names}")
        for column in self.columns:
            if len(column.values) != len(ids):
                raise ValueError(f"column {column.name!r} has {len(column.values)} values for {len(ids)} ids")
        stamps = self.event_timestamps
        if not isinstance(stamps, datetime) and len(stamps) != len(ids):
            raise ValueError(f"{len(stamps)} event timestamps for {len(ids)} entity ids")

    def __len__(self) -> int:
        return len(self.entity_ids)

    def part(self, start: int, stop: int) -> FeatureRows:
        """Rows `start:stop`."""
        return self.take(slice(start, stop))

    def take(self, index: slice | npt.NDArray[Any] | list[int]) -> FeatureRows:
        """The rows at `index` (a slice, positions or a boolean mask)."""
        stamps = self.event_timestamps
        return replace(
            self,
            entity_ids=self.entity_ids[index],
            columns=tuple(
                FeatureColumn(c.name, c.kind, np.asarray(c.values, dtype=object)[index])
                if not isinstance(c.values, np.ndarray)
                else FeatureColumn(c.name, c.kind, c.values[index])
                for c in self.columns
            ),
            event_timestamps=stamps if isinstance(stamps, datetime) else stamps[index],
        )


def ttl_cutoff(view: ViewSpec, now: datetime) -> datetime | None:
    """The oldest event time of `view` that counts at `now` (`now - ttl`), or None when the view has no TTL
    (`ttl_s == 0`): a row before the cutoff, or without an event time, is absent (`apply_ttl`)."""
    return now - timedelta(seconds=view.ttl_s) if view.ttl_s > 0 else None


def apply_ttl(row: OnlineRow, service: ServiceSpec, *, now: datetime) -> OnlineRow:
    """The row as offline retrieval at `now` would see it: a view whose row is older than its TTL is absent.

    Offline, a view's row counts when `event_timestamp >= as_of - ttl`; here a view with `ttl_s > 0` whose
    event time is before `now - ttl` (or unknown) gets null values and no event time. `ttl_s == 0` means no
    TTL. The stored prediction is left alone: its age is the blend policy's `max_staleness_s`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expired = [
        view
        for view in service.views
        if (cutoff := ttl_cutoff(view, now)) is not None
        and ((stamp := row.event_ts.get(view.name)) is None or stamp < cutoff)
    ]
    if not expired:
        return row
    values = dict(row.values)
    event_ts = dict(row.event_ts)
    for view in expired:
        event_ts[view.name] = None
        for feature in view.features:
            values[f"{view.name}:{feature.name}"] = None
    return replace(row, values=values, event_ts=event_ts)
