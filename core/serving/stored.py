"""Stored scores straight from PostgreSQL: which runs are published (and their kind), and an entity's newest
published score (the newest `scored_at` of any published run, batch or stream: core.records.stored_scores).

What the API serves (degraded) when Redis is down, and how it checks that a stored score read online comes
from a run that finished publishing. Every failure to reach PostgreSQL raises StoreUnavailableError.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.errors import StoreUnavailableError, first_line
from core.features.keys import EntityId
from core.online.decoding import decode_snapshot
from core.online.rows import StoredPrediction
from core.records.stored_scores import LATEST_PUBLISHED_SQL

__all__ = ["PgStoredScores", "StoredScores", "stored_predictions"]

_PUBLISHED_RUNS = (
    "SELECT run_id::text, kind FROM tandem.prediction_runs WHERE status = 'published' AND model_name = %s "
    "AND kind = 'batch'"
)
_PUBLISHED_KINDS = (
    "SELECT run_id::text, kind FROM tandem.prediction_runs WHERE status = 'published' AND model_name = %s "
    "AND run_id = ANY(%s::uuid[])"
)


class StoredScores(Protocol):
    """PostgreSQL's view of stored scores, as the prediction service needs it."""

    async def published_runs(self) -> Mapping[str, str]:
        """The published batch runs: run id -> kind (stream runs come and go: `published_kinds`)."""
        ...

    async def published_kinds(self, run_ids: Sequence[str]) -> Mapping[str, str]:
        """Which of `run_ids` are published runs: run id -> kind (`batch` or `stream`)."""
        ...

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        """The newest published stored score of each entity that has one."""
        ...


async def stored_predictions(
    conn: AsyncConnection[Any], entity_ids: Sequence[EntityId], *, model_name: str
) -> dict[EntityId, StoredPrediction]:
    """The newest published stored prediction of the model for each entity that has one."""
    wanted = {str(entity_id): entity_id for entity_id in entity_ids}
    cursor = await conn.execute(LATEST_PUBLISHED_SQL, (model_name, list(wanted)))
    found: dict[EntityId, StoredPrediction] = {}
    for entity_key, score, version, run_id, scored_at, snapshot, kind in await cursor.fetchall():
        found[wanted[entity_key]] = StoredPrediction(
            score=float(score),
            model_version=str(version),
            run_id=str(run_id),
            scored_at=scored_at,
            # the same rules as the online copy of the snapshot (naive means UTC)
            feature_snapshot_ts=decode_snapshot(str(snapshot)) or {},
            run_kind=str(kind),
        )
    return found


class PgStoredScores:
    """StoredScores over an asyncio connection pool, each call bounded by `timeout_s`."""

    def __init__(self, pool: AsyncConnectionPool, *, model_name: str, timeout_s: float) -> None:
        self.pool = pool
        self.model_name = model_name
        self.timeout_s = timeout_s

    async def published_runs(self) -> Mapping[str, str]:
        """The model's published batch runs: run id -> kind."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                cursor = await conn.execute(_PUBLISHED_RUNS, (self.model_name,))
                return {str(row[0]): str(row[1]) for row in await cursor.fetchall()}
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def published_kinds(self, run_ids: Sequence[str]) -> Mapping[str, str]:
        """Which of `run_ids` are the model's published runs: run id -> kind."""
        ids = [run_id for run_id in run_ids if _is_uuid(run_id)]
        if not ids:
            return {}
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                cursor = await conn.execute(_PUBLISHED_KINDS, (self.model_name, ids))
                return {str(row[0]): str(row[1]) for row in await cursor.fetchall()}
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        """The newest published stored prediction of each entity that has one."""
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                return await stored_predictions(conn, entity_ids, model_name=self.model_name)
        except Exception as exc:
            raise _unavailable(exc) from exc


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"PostgreSQL (stored scores): {first_line(exc)}")
