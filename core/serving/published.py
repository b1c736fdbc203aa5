"""Only published runs are served: a stored score online from a run that never finished publishing (its
process was killed mid-publish) is replaced by the entity's newest published score from PostgreSQL.

A failed publish restores the previous run's scores itself (core.batch.publish); a killed one cannot, so
the prediction service checks every stored score's run id against the published runs it knows, refreshing
that set when it meets an unknown id (at most once a second) and on the model watcher's interval.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from core.errors import StoreUnavailableError
from core.features.keys import EntityId
from core.online.rows import OnlineRow
from core.serving.stored import StoredScores

__all__ = ["PublishedRuns"]

_REFRESH_MIN_S = 1.0


class PublishedRuns:
    """The ids of published prediction runs, as last read from PostgreSQL."""

    def __init__(self, stored: StoredScores) -> None:
        self.stored = stored
        self.ids: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")

    async def refresh(self) -> None:
        """Reload the set (raises StoreUnavailableError if PostgreSQL does not answer)."""
        self.ids = await self.stored.published_runs()
        self.loaded_at = time.monotonic()

    def _unverified(self, rows: Sequence[OnlineRow]) -> list[EntityId]:
        known = self.ids
        return [row.entity_id for row in rows if row.stored is not None and row.stored.run_id not in known]

    async def verify(self, rows: list[OnlineRow]) -> list[OnlineRow]:
        """`rows`, with stored scores of unpublished runs replaced by the newest published ones (or none)."""
        suspects = self._unverified(rows)
        if not suspects:
            return rows
        if time.monotonic() - self.loaded_at >= _REFRESH_MIN_S:
            try:
                await self.refresh()
            except StoreUnavailableError:  # the unverified scores are dropped below
                self.loaded_at = time.monotonic()
            suspects = self._unverified(rows)
            if not suspects:
                return rows
        try:
            found = await self.stored.latest(suspects)
        except StoreUnavailableError:  # without PostgreSQL an unverified score is not served as stored
            found = {}
        replace = set(suspects)
        return [
            dataclasses.replace(row, stored=found.get(row.entity_id)) if row.entity_id in replace else row
            for row in rows
        ]
