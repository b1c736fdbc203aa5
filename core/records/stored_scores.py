"""Stored scores in PostgreSQL: each entity's newest published score, and pruning of superseded stream rows.

The newest score of an entity is the one with the newest `scored_at` among the model's published runs,
whatever their kind: a stream run's score computed after the nightly run's as-of time wins over that run's
even though the nightly run was published later. This is what the online store holds too (every publish is
a newer-wins write keyed on `scored_at`), so the API's degraded read, the restore after a failed publish and
the online store agree.

Stream runs are pruned so `tandem.prediction_runs` and `tandem.batch_predictions` stay bounded: a stream
row is deleted once a published row of the same entity has a newer `scored_at` (a later stream flush, or a
batch run whose as-of time is after it): it can never be served again. A published stream run left without
rows is deleted; a failed stream run loses its rows at once and its run row after `failed_retention`; an
unfinished stream run older than `abandoned_after` (its process died mid-publish) is marked failed.
Batch runs are never pruned here: they are the audit trail of the nightly scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import first_line

__all__ = [
    "LATEST_PUBLISHED_SQL",
    "Pruned",
    "latest_published_rows",
    "prune_after_publish",
    "prune_stream_runs",
]

logger = logging.getLogger(__name__)

LATEST_PUBLISHED_SQL = """
SELECT DISTINCT ON (p.entity_key) p.entity_key, p.score, p.model_version, p.run_id::text, p.scored_at,
       p.feature_snapshot_ts, r.kind
FROM tandem.batch_predictions p
JOIN tandem.prediction_runs r ON r.run_id = p.run_id AND r.status = 'published' AND r.model_name = %s
WHERE p.entity_key = ANY(%s)
ORDER BY p.entity_key, p.scored_at DESC, r.published_at DESC
"""
"""Parameters (model name, entity keys: the ids' texts, core.features.keys); rows (entity_key, score,
model_version, run_id, scored_at, feature_snapshot_ts, kind), one per entity that has a published score: the
newest by `scored_at`."""

_SUPERSEDED = """
DELETE FROM tandem.batch_predictions p
USING tandem.prediction_runs r
WHERE p.run_id = r.run_id AND r.model_name = :model AND r.kind = 'stream' AND r.status = 'published'
  AND EXISTS (
    SELECT 1 FROM tandem.batch_predictions n
    JOIN tandem.prediction_runs nr
      ON nr.run_id = n.run_id AND nr.status = 'published' AND nr.model_name = :model
    WHERE n.entity_key = p.entity_key AND n.scored_at > p.scored_at
  )
"""
# The same rows for some keys, found from each key: its few rows by the entity_key index (the OFFSET 0 keeps
# the planner from probing every run for every key instead), each row's run by its primary key (kind: null unless a published run of the model); deleted by
# their row address (ctid, stable within the statement); a run that lost all its rows (its count before the
# statement: a run's rows are only ever added by its own COPY) is deleted too. Returns (rows, runs) deleted.
# Its cost grows with the keys, not with the table nor the number of runs.
_SUPERSEDED_OF_KEYS = """
WITH keyed AS MATERIALIZED (
  SELECT n.row_ctid, n.entity_key, n.scored_at, (
    SELECT CASE WHEN r.model_name = :model AND r.status = 'published' THEN r.kind END
    FROM tandem.prediction_runs r WHERE r.run_id = n.run_id
  ) AS kind
  FROM unnest(CAST(:keys AS text[])) AS k(entity_key)
  CROSS JOIN LATERAL (
    SELECT b.ctid AS row_ctid, b.entity_key, b.run_id, b.scored_at FROM tandem.batch_predictions b
    WHERE b.entity_key = k.entity_key OFFSET 0
  ) n
), newest AS (
  SELECT entity_key, max(scored_at) AS scored_at FROM keyed WHERE kind IS NOT NULL GROUP BY entity_key
), gone AS (
  DELETE FROM tandem.batch_predictions p
  WHERE p.ctid = ANY(ARRAY(
    SELECT d.row_ctid FROM keyed d JOIN newest w ON w.entity_key = d.entity_key
    WHERE d.kind = 'stream' AND d.scored_at < w.scored_at
  ))
  RETURNING p.run_id
), lost AS (
  SELECT run_id, count(*) AS rows FROM gone GROUP BY run_id
), emptied AS (
  DELETE FROM tandem.prediction_runs r
  USING lost l
  WHERE r.run_id = l.run_id
    AND l.rows = (SELECT count(*) FROM tandem.batch_predictions b WHERE b.run_id = l.run_id)
  RETURNING r.run_id
)
SELECT (SELECT coalesce(sum(rows), 0) FROM lost), (SELECT count(*) FROM emptied)
"""
_FAILED_ROWS = """
DELETE FROM tandem.batch_predictions p
USING tandem.prediction_runs r
WHERE p.run_id = r.run_id AND r.model_name = :model AND r.kind = 'stream' AND r.status = 'failed'
"""
_ABANDONED = """
UPDATE tandem.prediction_runs r
SET status = 'failed', finished_at = now(),
    error = 'abandoned while ' || r.status || ': its process stopped before finishing (pruned)'
WHERE r.model_name = :model AND r.kind = 'stream' AND r.status IN ('running', 'loaded', 'publishing')
  AND r.started_at < :abandoned_before
"""
_EMPTY_RUNS = """
DELETE FROM tandem.prediction_runs r
WHERE r.model_name = :model AND r.kind = 'stream'
  AND ((r.status = 'published'
        AND NOT EXISTS (SELECT 1 FROM tandem.batch_predictions p WHERE p.run_id = r.run_id))
       OR (r.status = 'failed' AND r.finished_at < :failed_before))
"""
_OLD_FAILED_RUNS = """
DELETE FROM tandem.prediction_runs r
WHERE r.model_name = :model AND r.kind = 'stream' AND r.status = 'failed' AND r.finished_at < :failed_before
"""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning deleted."""

    rows: int
    runs: int


def latest_published_rows(conn: Any, *, model_name: str, entity_keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """`LATEST_PUBLISHED_SQL` on a psycopg (sync) connection, for the entities of these keys (ids' texts)."""
    if not entity_keys:
        return []
    return list(conn.execute(LATEST_PUBLISHED_SQL, (model_name, list(entity_keys))).fetchall())


def prune_stream_runs(
    session: Session,
    *,
    model_name: str,
    entity_keys: Sequence[str] | None = None,
    failed_retention: timedelta = timedelta(days=1),
    abandoned_after: timedelta = timedelta(minutes=10),
) -> Pruned:
    """Delete the model's superseded stream rows (of `entity_keys` only, when given: the cheap per-flush
    form, the ids' texts (core.features.keys), which deletes only the runs those rows leave empty), the
    rows of its failed stream runs, and its stream runs left empty or failed long ago. A stream
    run still unfinished `abandoned_after` its start (a re-score takes milliseconds: its process died) is
    marked failed first; the API never served its scores (only published runs are served)."""
    session.execute(
        text(_ABANDONED), {"model": model_name, "abandoned_before": datetime.now(UTC) - abandoned_after}
    )
    before = datetime.now(UTC) - failed_retention
    if entity_keys is None:
        rows = _count(session.execute(text(_SUPERSEDED), {"model": model_name}))
        rows += _count(session.execute(text(_FAILED_ROWS), {"model": model_name}))
        runs = _count(session.execute(text(_EMPTY_RUNS), {"model": model_name, "failed_before": before}))
        return Pruned(rows=rows, runs=runs)
    session.execute(text("SET LOCAL jit = off"))  # its estimates are pessimistic: compiling costs far more
    superseded = session.execute(text(_SUPERSEDED_OF_KEYS), {"model": model_name, "keys": list(entity_keys)})
    rows, runs = (int(count) for count in superseded.one())
    rows += _count(session.execute(text(_FAILED_ROWS), {"model": model_name}))
    runs += _count(session.execute(text(_OLD_FAILED_RUNS), {"model": model_name, "failed_before": before}))
    return Pruned(rows=rows, runs=runs)


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def prune_after_publish(
    engine: Engine, *, model_name: str, entity_keys: Sequence[str] | None = None
) -> Pruned:
    """`prune_stream_runs` in a transaction of its own, after a run was published: a failure (e.g. a deadlock
    with another process pruning) is logged and the run stays published; the next publish prunes."""
    try:
        with Session(engine) as session, session.begin():
            pruned = prune_stream_runs(session, model_name=model_name, entity_keys=entity_keys)
    except SQLAlchemyError as exc:
        logger.warning("pruning stream runs of model %s failed: %s", model_name, first_line(exc))
        return Pruned(rows=0, runs=0)
    return pruned
