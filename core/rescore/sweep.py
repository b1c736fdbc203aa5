"""The scheduler's catch-up re-score: entities with rows appended to a pushed view's offline table lately.

The stream process re-scores what it ingests (`StreamRescorer`); rows pushed through `POST /v1/push`, or
whose re-score was dropped (a store was down), are found here: every push-fed view a promoted model reads is
asked for the entities with a row created (its `created` column, else its event time) since `since`, and
those entities go through the same re-score (unchanged ones are skipped by the selection, so overlapping
windows cost a read, never a second score).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from core.features.keys import EntityId
from core.features.specs import ViewSpec
from core.online.store import OnlineStore
from core.rescore.run import RescoreResult, rescore_entities
from core.rescore.targets import load_targets
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores

__all__ = ["recently_pushed", "sweep_pushed"]


def recently_pushed(
    conn: psycopg.Connection[Any], view: ViewSpec, *, since: datetime, limit: int
) -> list[EntityId]:
    """Ids of the entities with a row of `view`'s offline table created at or after `since` (at most
    `limit`); none for a view without a push source or over a query."""
    if view.push_source is None or view.reads_query:
        return []
    key = view.key
    query = sql.SQL("SELECT DISTINCT {keys} FROM {table} WHERE {field} >= %s LIMIT %s").format(
        keys=sql.SQL(", ").join(sql.Identifier(name) for name in key.join_keys),
        table=sql.SQL(view.table),  # from Feast's registry: a table name
        field=sql.Identifier(view.created_field or view.timestamp_field),
    )
    return [key.compose(row) for row in conn.execute(query, (since, limit)).fetchall()]


def sweep_pushed(
    settings: Settings,
    stores: Stores,
    *,
    since: datetime,
    model_names: Sequence[str] | None = None,
    limit: int = 1_000_000,
) -> list[RescoreResult]:
    """Re-score, per promoted model, the entities pushed since `since` (see the module doc)."""
    engine = create_db_engine(stores.postgres, pool_size=2)
    online = OnlineStore.connect(stores.redis, project=settings.feast_project, timeout_s=30.0)
    chunk = settings.stream_rescore_max_entities
    results: list[RescoreResult] = []
    try:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            for target in load_targets(settings, stores, engine, model_names):
                ids = list(
                    dict.fromkeys(
                        entity_id
                        for view in target.service.views
                        for entity_id in recently_pushed(conn, view, since=since, limit=limit)
                    )
                )
                for start in range(0, len(ids), chunk):
                    results.append(
                        rescore_entities(
                            engine,
                            online,
                            target,
                            ids[start : start + chunk],
                            max_staleness_s=settings.max_staleness_s,
                        )
                    )
    finally:
        online.close()
        engine.dispose()
    return results
