"""Only published runs are served: a stored score online from a run that never finished publishing (its
process was killed mid-publish) is replaced by the entity's newest published score from PostgreSQL.

A failed publish restores the previous run's scores itself (core.batch.publish); a killed one cannot, so
the service checks every stored score's run id against the published runs it knows, refreshing that set
when it meets an unknown id (at most once a second) and on the model watcher's interval.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

from core.online.reader import OnlineRow
from core.serving.stored import stored_predictions

__all__ = ["PublishedRuns", "verify_stored"]

_REFRESH_MIN_S = 1.0


class PublishedRuns:
    """The ids of published prediction runs of one feature service, as last read from PostgreSQL."""

    def __init__(self, feature_service: str) -> None:
        self.feature_service = feature_service
        self.ids: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")

    async def refresh(self, pool: AsyncConnectionPool, *, timeout_s: float) -> None:
        """Reload the set (raises if PostgreSQL does not answer)."""
        async with pool.connection(timeout=timeout_s) as conn:
            cursor = await conn.execute(
                "SELECT run_id::text FROM tandem.prediction_runs WHERE status = 'published' AND feature_service = %s",
                (self.feature_service,),
            )
            self.ids = frozenset(str(row[0]) for row in await cursor.fetchall())
        self.loaded_at = time.monotonic()


def _unverified(rows: Sequence[OnlineRow], known: frozenset[str]) -> list[int]:
    return [row.entity_id for row in rows if row.stored is not None and row.stored.run_id not in known]


async def verify_stored(
    rows: list[OnlineRow], published: PublishedRuns, pool: AsyncConnectionPool, *, timeout_s: float
) -> list[OnlineRow]:
    """`rows`, with stored scores of unpublished runs replaced by the newest published ones (or none)."""
    suspects = _unverified(rows, published.ids)
    if not suspects:
        return rows
    if time.monotonic() - published.loaded_at >= _REFRESH_MIN_S:
        try:
            await published.refresh(pool, timeout_s=timeout_s)
        except Exception:  # noqa: BLE001 - PostgreSQL down: the unverified scores are dropped below
            published.loaded_at = time.monotonic()
        suspects = _unverified(rows, published.ids)
        if not suspects:
            return rows
    try:
        async with pool.connection(timeout=timeout_s) as conn:
            found = await stored_predictions(conn, suspects, feature_service=published.feature_service)
    except Exception:  # noqa: BLE001 - without PostgreSQL an unverified score is not served as stored
        found = {}
    replace = set(suspects)
    return [
        dataclasses.replace(row, stored=found.get(row.entity_id)) if row.entity_id in replace else row
        for row in rows
    ]
