"""Publishing stored scores on a real Redis, for every key shape: newer-or-equal wins on the score's event
time (pipelined in batches, counted), and a failed publish undone only where its own run id is still online."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.batch.publish import PublishBatch
from core.endpoints import RedisEndpoint
from core.features.keys import EntityId, EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.rows import StoredPrediction
from core.online.store import OnlineStore
from core.online.wire import ReadLayout
from tests.servers import purge_feast_project

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
SHAPES: dict[str, tuple[EntityKey, Callable[[int], EntityId]]] = {
    "int64": (EntityKey.single("customer_id"), lambda i: i),
    "string": (EntityKey.single("store_code", "string"), lambda i: f"störe-{i}"),
    "composite": (
        EntityKey.of([("sku", "int64"), ("store_code", "string")]),
        lambda i: EntityKey.of([("sku", "int64"), ("store_code", "string")]).compose([i, f"s{i}"]),
    ),
}


@dataclass(frozen=True)
class Scores:
    """A store on a project of its own, the layout reading the scores view, and ids of the key shape."""

    online: OnlineStore
    layout: ReadLayout
    view: ViewSpec
    ident: Callable[[int], EntityId]

    def batch(self, numbers: list[int], score: float, run_id: str, scored_at: datetime) -> PublishBatch:
        return PublishBatch(
            entity_ids=self.view.key.array([self.ident(i) for i in numbers]),
            scores=np.full(len(numbers), score),
            model_version="v1",
            run_id=run_id,
            snapshots=np.array(['{"pw_stats":null}'] * len(numbers), dtype=object),
            scored_at=scored_at,
        )

    def stored(self, numbers: list[int]) -> dict[int, StoredPrediction | None]:
        rows = self.online.read(self.layout, [self.ident(i) for i in numbers])
        return {i: row.stored for i, row in zip(numbers, rows, strict=True)}


@pytest.fixture(params=sorted(SHAPES))
def scores(request: pytest.FixtureRequest, servers: tuple[object, RedisEndpoint]) -> Iterator[Scores]:
    """Scores of one key shape on a project of its own (purged afterwards)."""
    key, ident = SHAPES[request.param]
    stats = ViewSpec("pw_stats", "s", key, "ts", None, 0, (FeatureSpec("n", "int64"),))
    view = ViewSpec(
        "pw_predictions", "(select 1)", key, "scored_at", None, 0,
        (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"),
         FeatureSpec("run_id", "string"), FeatureSpec("feature_snapshot_ts", "string")),
    )  # fmt: skip
    project = f"pw{uuid.uuid4().hex[:10]}"
    online = OnlineStore.connect(servers[1], project=project)
    layout = ReadLayout(
        project=project, service=ServiceSpec("pw", (stats,), ("pw_stats:n",)), predictions=view
    )
    yield Scores(online, layout, view, ident)
    online.close()
    purge_feast_project(servers[1], project)


def test_newer_or_equal_wins_in_batches(scores: Scores) -> None:
    """Streamed in batches of 2: an older score is skipped, an equally new one (a rerun) and a newer one are
    written; the count says how many were written, and progress hears of every row sent."""
    write = scores.online.write_newer
    assert write(scores.batch([1, 2, 3], 0.1, "a", T0).rows(scores.view), ties_win=True, batch_rows=2) == 3
    write(scores.batch([2], 0.2, "b", T0 + timedelta(hours=1)).rows(scores.view), ties_win=True)
    seen: list[int] = []
    rows = scores.batch([1, 2, 3, 4, 5], 0.3, "c", T0).rows(scores.view)
    written = write(rows, ties_win=True, batch_rows=2, progress=seen.append)
    assert (written, sum(seen), seen) == (4, 5, [2, 2, 1])
    stored = scores.stored([1, 2, 3, 4, 5])
    assert {i: s.run_id for i, s in stored.items() if s} == {1: "c", 2: "b", 3: "c", 4: "c", 5: "c"}
    assert write(scores.batch([1], 0.4, "d", T0).rows(scores.view)) == 0  # Feast's rule: equal is not newer


def test_owned_restore_and_delete_touch_only_rows_still_carrying_the_run_id(scores: Scores) -> None:
    """restore_owned / delete_owned act on entities whose run_id field is the failed run's, and leave an
    entity another writer replaced (or that has no row) alone."""
    online, view = scores.online, scores.view
    online.write_newer(scores.batch([1, 2, 3], 0.5, "failed", T0).rows(view), ties_win=True)
    online.write_newer(scores.batch([2], 0.9, "stream", T0 + timedelta(minutes=5)).rows(view), ties_win=True)
    previous = scores.batch([1, 2], 0.1, "previous", T0 - timedelta(days=1))
    assert online.restore_owned(previous.rows(view), owner_run_id="failed") == 1
    gone = view.key.array([scores.ident(i) for i in (2, 3, 4)])
    assert online.delete_owned(view, gone, owner_run_id="failed") == 1
    stored = scores.stored([1, 2, 3, 4])
    assert stored[1] is not None
    assert (stored[1].run_id, stored[1].score, stored[1].scored_at) == (
        "previous",
        0.1,
        T0 - timedelta(days=1),
    )
    assert stored[2] is not None
    assert (stored[2].run_id, stored[2].score) == ("stream", 0.9)
    assert stored[3] is None
    assert stored[4] is None
