"""Stored scores straight from PostgreSQL: which runs are published, and an entity's newest published score.

What the API serves (degraded) when Redis is down, and how it checks that a stored score read online comes
from a run that finished publishing. Every failure to reach PostgreSQL raises StoreUnavailableError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.errors import StoreUnavailableError, first_line
from core.features.keys import EntityId
from core.online.decoding import decode_snapshot
from core.online.rows import StoredPrediction

__all__ = ["PgStoredScores", "StoredScores", "stored_predictions"]

_LATEST_PUBLISHED = """
SELECT DISTINCT ON (p.entity_key) p.entity_key, p.score, p.model_version, p.run_id::text, p.scored_at,
       p.feature_snapshot_ts
FROM tandem.batch_predictions p
JOIN tandem.prediction_runs r ON r.run_id = p.run_id AND r.status = 'published' AND r.model_name = %s
WHERE p.entity_key = ANY(%s)
ORDER BY p.entity_key, r.published_at DESC
"""
_PUBLISHED_RUNS = (
    "SELECT run_id::text FROM tandem.prediction_runs WHERE status = 'published' AND model_name = %s"
)


class StoredScores(Protocol):
    """PostgreSQL's view of stored scores, as the prediction service needs it."""

    async def published_runs(self) -> frozenset[str]:
        """Ids of the published runs."""
        ...

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        """The newest published stored score of each entity that has one."""
        ...


async def stored_predictions(
    conn: AsyncConnection[Any], entity_ids: Sequence[EntityId], *, model_name: str
) -> dict[EntityId, StoredPrediction]:
    """The newest published stored prediction of the model for each entity that has one."""
    wanted = {str(entity_id): entity_id for entity_id in entity_ids}
    cursor = await conn.execute(_LATEST_PUBLISHED, (model_name, list(wanted)))
    found: dict[EntityId, StoredPrediction] = {}
    for entity_key, score, version, run_id, scored_at, snapshot in await cursor.fetchall():
        found[wanted[entity_key]] = StoredPrediction(
            score=float(score),
            model_version=str(version),
            run_id=str(run_id),
            scored_at=scored_at,
            # the same rules as the online copy of the snapshot (naive means UTC)
            feature_snapshot_ts=decode_snapshot(str(snapshot)) or {},
        )
    return found


class PgStoredScores:
    """StoredScores over an asyncio connection pool, each call bounded by `timeout_s`."""

    def __init__(self, pool: AsyncConnectionPool, *, model_name: str, timeout_s: float) -> None:
        self.pool = pool
        self.model_name = model_name
        self.timeout_s = timeout_s

    async def published_runs(self) -> frozenset[str]:
        """Ids of the model's published runs."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                cursor = await conn.execute(_PUBLISHED_RUNS, (self.model_name,))
                return frozenset(str(row[0]) for row in await cursor.fetchall())
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        """The newest published stored prediction of each entity that has one."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                return await stored_predictions(conn, entity_ids, model_name=self.model_name)
        except Exception as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"PostgreSQL (stored scores): {first_line(exc)}")
