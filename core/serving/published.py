"""Only published runs are served: a stored score online from a run that never finished publishing (its
process was killed mid-publish) is replaced by the entity's newest published score from PostgreSQL.

A failed publish restores the published scores itself (core.batch.publish); a killed one cannot, so the
prediction service checks every stored score's run id against the published runs it knows, and keeps
each one's kind (`batch` or `stream`) for the answer's provenance. The published batch runs are read on
the model watcher's interval; a run id it does not know (a stream run, published every few seconds, or a
batch run published since) is looked up by id, and remembered: once when published, for a second when
not (it may be publishing right now).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from core.errors import StoreUnavailableError
from core.features.keys import EntityId
from core.online.rows import OnlineRow
from core.serving.stored import StoredScores

__all__ = ["PublishedRuns"]

_RECHECK_S = 1.0  # how long a run id found unpublished is taken as unpublished without asking again
_LEARNED_MAX = 100_000  # run ids remembered beyond the batch runs (stream runs); forgotten all at once


class PublishedRuns:
    """The published prediction runs (run id -> kind), as last read from PostgreSQL."""

    def __init__(self, stored: StoredScores, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stored = stored
        self.clock = clock
        self.kinds: dict[str, str] = {}
        self.loaded_at = float("-inf")
        self._learned: dict[str, str] = {}
        self._unpublished: dict[str, float] = {}

    async def refresh(self) -> None:
        """Reload the published batch runs (raises StoreUnavailableError if PostgreSQL does not answer)."""
        batch = await self.stored.published_runs()
        self.kinds = {**self._learned, **batch}
        self.loaded_at = self.clock()

    def _learn(self, kinds: dict[str, str]) -> None:
        if len(self._learned) + len(kinds) > _LEARNED_MAX:
            self._learned.clear()
        self._learned.update(kinds)
        self.kinds = {**self.kinds, **kinds}

    def _unverified(self, rows: Sequence[OnlineRow]) -> list[EntityId]:
        known = self.kinds
        return [row.entity_id for row in rows if row.stored is not None and row.stored.run_id not in known]

    async def _look_up(self, rows: Sequence[OnlineRow]) -> None:
        """Ask PostgreSQL about the run ids of `rows` it was not asked about within the last second."""
        now = self.clock()
        self._unpublished = {k: at for k, at in self._unpublished.items() if now - at < _RECHECK_S}
        unknown = sorted(
            {
                row.stored.run_id
                for row in rows
                if row.stored is not None
                and row.stored.run_id not in self.kinds
                and row.stored.run_id not in self._unpublished
            }
        )
        if not unknown:
            return
        try:
            found = dict(await self.stored.published_kinds(unknown))
        except StoreUnavailableError:  # the unverified scores are dropped below
            found = {}
        self._learn(found)
        self._unpublished.update((run_id, now) for run_id in unknown if run_id not in found)

    async def verify(self, rows: list[OnlineRow]) -> list[OnlineRow]:
        """`rows`, with stored scores of unpublished runs replaced by the newest published ones (or none)."""
        if not self._unverified(rows):
            return rows
        await self._look_up(rows)
        suspects = self._unverified(rows)
        if not suspects:
            return rows
        try:
            found = await self.stored.latest(suspects)
        except StoreUnavailableError:  # without PostgreSQL an unverified score is not served as stored
            found = {}
        self._learn({s.run_id: s.run_kind for s in found.values() if s.run_kind is not None})
        replace = set(suspects)
        return [
            dataclasses.replace(row, stored=found.get(row.entity_id)) if row.entity_id in replace else row
            for row in rows
        ]
