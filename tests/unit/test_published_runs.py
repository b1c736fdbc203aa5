"""The API's check that a stored score comes from a published run, and which kind: batch runs read in bulk,
any other run id (a stream run) looked up once by id and remembered; an unpublished one is asked about again
only after a second, and its entities get the newest published score instead."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.errors import StoreUnavailableError
from core.features.keys import EntityId
from core.online.rows import OnlineRow, StoredPrediction
from core.serving.published import PublishedRuns

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _stored(run_id: str, score: float = 0.5, kind: str | None = None) -> StoredPrediction:
    return StoredPrediction(score, "v1", run_id, NOW, {"view": NOW}, run_kind=kind)


def _row(entity_id: int, run_id: str) -> OnlineRow:
    return OnlineRow(entity_id, {}, {"view": NOW}, _stored(run_id))


@dataclass
class CountingStored:
    """Published runs by kind; counts every question; `down` fails like an unreachable PostgreSQL."""

    batch: set[str] = field(default_factory=lambda: {"b1"})
    stream: set[str] = field(default_factory=set)
    latest_scores: dict[EntityId, StoredPrediction] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)
    down: bool = False

    async def published_runs(self) -> dict[str, str]:
        return dict.fromkeys(self.batch, "batch")

    async def published_kinds(self, run_ids: Sequence[str]) -> dict[str, str]:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (stored scores): connection refused")
        self.asked.append(list(run_ids))
        kinds = {**dict.fromkeys(self.batch, "batch"), **dict.fromkeys(self.stream, "stream")}
        return {run_id: kinds[run_id] for run_id in run_ids if run_id in kinds}

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (stored scores): connection refused")
        return {i: self.latest_scores[i] for i in entity_ids if i in self.latest_scores}


def test_a_stream_run_is_looked_up_once_and_remembered_across_refreshes() -> None:
    """Rows of a stream run unknown to the cache are served as they are after one lookup by id; the kind is
    kept, and a later refresh of the batch runs does not forget it."""
    stored = CountingStored(stream={"s1"})
    runs = PublishedRuns(stored)
    asyncio.run(runs.refresh())
    rows = [_row(1, "b1"), _row(2, "s1"), _row(3, "s1")]
    assert asyncio.run(runs.verify(rows)) is rows
    assert stored.asked == [["s1"]]
    assert runs.kinds == {"b1": "batch", "s1": "stream"}
    asyncio.run(runs.refresh())
    assert asyncio.run(runs.verify(rows)) is rows
    assert stored.asked == [["s1"]]
    assert runs.kinds["s1"] == "stream"


def test_an_unpublished_run_is_replaced_and_asked_about_again_after_a_second() -> None:
    """A run id that is not published (publishing right now, or killed): its entities get the newest
    published score (with its kind, remembered); the id is asked about again only after a second, and once
    published it is served as it is."""
    clock = [100.0]
    stored = CountingStored(latest_scores={2: _stored("b1", 0.1, kind="batch")})
    runs = PublishedRuns(stored, clock=lambda: clock[0])
    rows = [_row(2, "s9")]
    (replaced,) = asyncio.run(runs.verify(rows))
    assert replaced.stored is not None
    assert (replaced.stored.run_id, replaced.stored.score, replaced.stored.run_kind) == ("b1", 0.1, "batch")
    clock[0] += 0.5
    asyncio.run(runs.verify(rows))
    assert stored.asked == [["s9"]]
    stored.stream.add("s9")
    clock[0] += 0.6
    assert asyncio.run(runs.verify(rows)) is rows
    assert stored.asked == [["s9"], ["s9"]]


def test_without_postgresql_an_unverified_score_is_not_served() -> None:
    """PostgreSQL down: a row of an unknown run loses its stored score (it may come from a killed run)."""
    stored = CountingStored(down=True)
    runs = PublishedRuns(stored)
    (row,) = asyncio.run(runs.verify([_row(5, "s1")]))
    assert row.stored is None
