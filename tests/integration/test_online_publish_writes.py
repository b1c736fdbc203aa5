"""Publishing stored scores on a real Redis: newer-or-equal wins on the score's event time (pipelined in
batches, counted), and a failed publish undone only where its own run id is still online."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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
STATS = ViewSpec(
    "pw_stats", "s", EntityKey.single("customer_id"), "ts", None, 0, (FeatureSpec("n", "int64"),)
)
SCORES = ViewSpec(
    "pw_predictions", "(select 1)", EntityKey.single("customer_id"), "scored_at", None, 0,
    (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"), FeatureSpec("run_id", "string"),
     FeatureSpec("feature_snapshot_ts", "string")),
)  # fmt: skip
SERVICE = ServiceSpec("pw_service", (STATS,), ("pw_stats:n",))


@pytest.fixture
def store(servers: tuple[object, RedisEndpoint]) -> Iterator[tuple[OnlineStore, ReadLayout]]:
    """A store on a project of its own (purged afterwards) and the layout reading the scores view."""
    project = f"pw{uuid.uuid4().hex[:10]}"
    online = OnlineStore.connect(servers[1], project=project)
    yield online, ReadLayout(project=project, service=SERVICE, predictions=SCORES)
    online.close()
    purge_feast_project(servers[1], project)


def _batch(ids: list[int], score: float, run_id: str, scored_at: datetime) -> PublishBatch:
    return PublishBatch(
        entity_ids=np.array(ids, dtype=np.int64),
        scores=np.full(len(ids), score),
        model_version="v1",
        run_id=run_id,
        snapshots=np.array(['{"pw_stats":null}'] * len(ids), dtype=object),
        scored_at=scored_at,
    )


def _stored(
    online: OnlineStore, layout: ReadLayout, ids: list[int]
) -> dict[EntityId, StoredPrediction | None]:
    return {row.entity_id: row.stored for row in online.read(layout, ids)}


def test_newer_or_equal_wins_in_batches(store: tuple[OnlineStore, ReadLayout]) -> None:
    """Streamed in batches of 2: an older score is skipped, an equally new one (a rerun) and a newer one are
    written; the count says how many were written, and progress hears of every row sent."""
    online, layout = store
    first = online.write_newer(_batch([1, 2, 3], 0.1, "a", T0).rows(SCORES), ties_win=True, batch_rows=2)
    assert first == 3
    online.write_newer(_batch([2], 0.2, "b", T0 + timedelta(hours=1)).rows(SCORES), ties_win=True)
    seen: list[int] = []
    written = online.write_newer(
        _batch([1, 2, 3, 4, 5], 0.3, "c", T0).rows(SCORES), ties_win=True, batch_rows=2, progress=seen.append
    )
    assert (written, sum(seen), seen) == (4, 5, [2, 2, 1])
    stored = _stored(online, layout, [1, 2, 3, 4, 5])
    assert {i: s.run_id for i, s in stored.items() if s} == {1: "c", 2: "b", 3: "c", 4: "c", 5: "c"}
    strict = online.write_newer(_batch([1], 0.4, "d", T0).rows(SCORES))  # Feast's rule: equal is not newer
    assert strict == 0


def test_owned_restore_and_delete_touch_only_rows_still_carrying_the_run_id(
    store: tuple[OnlineStore, ReadLayout],
) -> None:
    """restore_owned / delete_owned act on entities whose run_id field is the failed run's, and leave an
    entity another writer replaced (or that has no row) alone."""
    online, layout = store
    online.write_newer(_batch([1, 2, 3], 0.5, "failed", T0).rows(SCORES), ties_win=True)
    online.write_newer(_batch([2], 0.9, "stream", T0 + timedelta(minutes=5)).rows(SCORES), ties_win=True)
    restored = online.restore_owned(
        _batch([1, 2], 0.1, "previous", T0 - timedelta(days=1)).rows(SCORES), owner_run_id="failed"
    )
    assert restored == 1
    removed = online.delete_owned(SCORES, np.array([2, 3, 4], dtype=np.int64), owner_run_id="failed")
    assert removed == 1
    stored = _stored(online, layout, [1, 2, 3, 4])
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
