"""Stored predictions straight from PostgreSQL: what the API serves (degraded) when Redis is down."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from core.online.reader import StoredPrediction

__all__ = ["parse_snapshot", "stored_predictions"]

_LATEST_PUBLISHED = """
SELECT DISTINCT ON (p.entity_id) p.entity_id, p.score, p.model_version, p.run_id::text, p.scored_at,
       p.feature_snapshot_ts
FROM tandem.batch_predictions p
JOIN tandem.prediction_runs r ON r.run_id = p.run_id AND r.status = 'published' AND r.feature_service = %s
WHERE p.entity_id = ANY(%s)
ORDER BY p.entity_id, r.published_at DESC
"""


def parse_snapshot(text: str) -> dict[str, datetime | None]:
    """`{"view": "ISO time" | null}` -> aware datetimes."""
    raw = json.loads(text) if text else {}
    return {view: (datetime.fromisoformat(stamp) if stamp else None) for view, stamp in raw.items()}


async def stored_predictions(
    conn: AsyncConnection[Any], entity_ids: Sequence[int], *, feature_service: str
) -> dict[int, StoredPrediction]:
    """The newest published stored prediction of each entity that has one."""
    cursor = await conn.execute(_LATEST_PUBLISHED, (feature_service, list(entity_ids)))
    found: dict[int, StoredPrediction] = {}
    for entity_id, score, version, run_id, scored_at, snapshot in await cursor.fetchall():
        found[int(entity_id)] = StoredPrediction(
            score=float(score),
            model_version=str(version),
            run_id=str(run_id),
            scored_at=scored_at,
            feature_snapshot_ts=parse_snapshot(str(snapshot)),
        )
    return found
