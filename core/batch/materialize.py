"""Incremental materialization: the newest offline rows of the project's feature views, into Redis.

`run_materialize` calls Feast's `FeatureStore.materialize_incremental(end_date, feature_views=[...])` on
every online feature view of the project except the models' predictions views (tagged by
`tandem.repo.predictions_view`: Tandem publishes those itself after a batch run). Each view's window starts where its previous materialization ended
(Feast keeps `most_recent_end_time` in the registry), or at `end - ttl` the first time (given explicitly:
Feast's own first window starts at `utcnow() - ttl`).

Two Feast settings decide speed and memory; they live in `feature_store.yaml` under `materialization:`
(Feast's `MaterializationConfig`). When the yaml leaves them unset, Tandem applies its own defaults:

- `pull_latest_features: true`: the offline query keeps only each entity's newest row in the window
  (ROW_NUMBER() in PostgreSQL) instead of every row; the online store keeps only the newest anyway, so
  the result is the same with far fewer rows moved and converted. Feast's default is false.
- `online_write_batch_size: N`: rows are converted to protobuf and written to Redis N at a time instead
  of all at once, which bounds memory on big windows. Feast's default (None) writes one batch.

The row count is the number of entities written per view (one row each with `pull_latest_features`),
from one COUNT query over the same window; pass `count_rows=False` to skip it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from core.features.feast_repo import open_feature_store
from core.naming import PREDICTIONS_TAG
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = [
    "ONLINE_WRITE_BATCH_SIZE",
    "MaterializeResult",
    "ViewWindow",
    "apply_materialization_options",
    "close_feature_store",
    "materialized_views",
    "run_materialize",
]

logger = logging.getLogger(__name__)

ONLINE_WRITE_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class ViewWindow:
    """One feature view's materialized window and how many entities it wrote (None: not counted)."""

    name: str
    start: datetime
    end: datetime
    rows: int | None


@dataclass(frozen=True, slots=True)
class MaterializeResult:
    """What one incremental materialization did."""

    views: tuple[ViewWindow, ...]
    end: datetime
    seconds: float

    @property
    def rows(self) -> int | None:
        """Entities written across views; None when not counted."""
        counts = [view.rows for view in self.views]
        return None if any(count is None for count in counts) else sum(c for c in counts if c is not None)

    def details(self) -> dict[str, Any]:
        """A JSON-ready summary for the job run record."""
        return {
            "end": self.end.isoformat(),
            "seconds": round(self.seconds, 3),
            "views": {
                view.name: {"start": view.start.isoformat(), "end": view.end.isoformat(), "rows": view.rows}
                for view in self.views
            },
        }


def apply_materialization_options(store: Any) -> None:
    """Tandem's defaults for the two Feast options the yaml did not set (see the module docstring)."""
    from feast.repo_config import MaterializationConfig

    current = store.config.materialization_config
    chosen = current.model_fields_set
    store.config.materialization_config = MaterializationConfig(
        pull_latest_features=current.pull_latest_features if "pull_latest_features" in chosen else True,
        online_write_batch_size=(
            current.online_write_batch_size
            if "online_write_batch_size" in chosen
            else ONLINE_WRITE_BATCH_SIZE
        ),
    )


def materialized_views(store: Any) -> list[str]:
    """The project's online feature views, by name, minus the predictions views Tandem publishes itself."""
    views = store.list_feature_views()
    return sorted(view.name for view in views if view.online and PREDICTIONS_TAG not in (view.tags or {}))


def _window_start(view: Any, end: datetime) -> datetime:
    start: datetime | None = view.most_recent_end_time
    if start is None:
        ttl: timedelta | None = view.ttl
        return end - (ttl if ttl and ttl > timedelta(0) else timedelta(weeks=52))  # as Feast does
    return start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)


def _count_entities(conn: psycopg.Connection[Any], view: Any, start: datetime, end: datetime) -> int:
    source = view.batch_source
    keys = ", ".join(f'"{column.name}"' for column in view.entity_columns) or "1"
    query = (
        f"SELECT count(DISTINCT ({keys})) FROM {source.get_table_query_string()} AS src "  # noqa: S608 - registry names
        f'WHERE "{source.timestamp_field}" BETWEEN %s AND %s'
    )
    row = conn.execute(query, (start, end)).fetchone()
    return int(row[0]) if row else 0


def close_feature_store(store: Any) -> None:
    """Dispose the SQL registry's connection pools (Feast has no close for a sync FeatureStore)."""
    registry = getattr(store, "_registry", None)
    for name in ("write_engine", "read_engine"):
        engine = getattr(registry, name, None)
        if engine is not None:
            engine.dispose()


def run_materialize(
    settings: Settings,
    stores: Stores,
    *,
    end: datetime | None = None,
    start: datetime | None = None,
    feature_views: Sequence[str] | None = None,
    count_rows: bool = True,
) -> MaterializeResult:
    """Materialize the project's feature views (or `feature_views`) incrementally up to `end` (default now).

    With `start`, materialize the whole window [start, end] instead (after re-seeding, with the project's
    online keys purged first: see core.online.store.OnlineStore.purge).
    """
    if end is not None and end.tzinfo is None:
        raise ValueError(f"end must be timezone-aware (UTC), got naive {end.isoformat()}")
    end = (end or datetime.now(UTC)).astimezone(UTC)
    store = open_feature_store(settings, stores)
    try:
        apply_materialization_options(store)
        names = list(feature_views) if feature_views is not None else materialized_views(store)
        views = list(map(store.get_feature_view, names))
        windows = [(view, start or _window_start(view, end)) for view in views]
        started = time.perf_counter()
        if start is not None:
            store.materialize(start_date=start.astimezone(UTC), end_date=end, feature_views=names)
        else:
            # Feast starts a view's first incremental window at utcnow() - ttl, not end - ttl: give views
            # that were never materialized their window explicitly, the others continue incrementally.
            fresh = [view for view in views if view.most_recent_end_time is None]
            for view in fresh:
                store.materialize(
                    start_date=_window_start(view, end), end_date=end, feature_views=[view.name]
                )
            rest = [view.name for view in views if view.most_recent_end_time is not None]
            if rest:
                store.materialize_incremental(end_date=end, feature_views=rest)
        seconds = time.perf_counter() - started
    finally:
        close_feature_store(store)
    counts: list[int | None] = [None] * len(windows)
    if count_rows and windows:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            counts = [_count_entities(conn, view, start, end) for view, start in windows]
    result = MaterializeResult(
        views=tuple(
            ViewWindow(name=view.name, start=start, end=end, rows=count)
            for (view, start), count in zip(windows, counts, strict=True)
        ),
        end=end,
        seconds=seconds,
    )
    logger.info("materialized %s up to %s in %.2f s (%s rows)", names, end.isoformat(), seconds, result.rows)
    return result
