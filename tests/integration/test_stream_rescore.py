"""Stream re-score on real PostgreSQL and Redis: entities whose online features moved are re-scored, stored
and published as a run of kind `stream`, served by the API as stored scores (parity with live), and neither
the nightly batch run nor a late stream score ever replaces a newer score with an older one; failed
publishes put back what was there; superseded stream rows and runs are pruned."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.batch.predict import Progress, run_batch_predict
from core.errors import NotFoundError
from core.features.keys import EntityId
from core.online.rows import OnlineRow, StoredPrediction
from core.online.store import OnlineStore
from core.records.prediction_runs import get_run
from core.records.stored_scores import latest_published_rows, prune_stream_runs
from core.records.tracked_run import RunHandle
from core.rescore.connect import connect_rescorer
from core.rescore.rescorer import StreamRescorer
from core.rescore.run import RescoreResult, rescore_entities
from core.rescore.targets import RescoreTarget
from core.serving.stored import stored_predictions
from core.settings import Settings
from core.stores.resolve import Stores
from scheduler.jobs import default_jobs
from scheduler.registry import JobContext
from service.app import create_app
from tandem.demo.names import DEMO_MODEL
from tests.integration.service_world import API_KEY, World, build_world

HEADERS = {"X-API-Key": API_KEY}
VIEW = "customer_txn_stats"


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """Seeded, materialized, a promoted model and a published batch run."""
    return build_world(settings, stores, engine, customers=200)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient[Any]]:
    """The API with its lifespan running."""
    with TestClient(create_app(world.settings)) as test_client:
        yield test_client


@pytest.fixture
def rescorer(world: World, stores: Stores) -> Iterator[StreamRescorer]:
    """A rescorer of the promoted models on the session's stores."""
    rescorer = connect_rescorer(world.settings, stores)
    yield rescorer
    rescorer.close()


@pytest.fixture(scope="module")
def online(stores: Stores, world: World) -> Iterator[OnlineStore]:
    """A synchronous online store on the world's project."""
    store = OnlineStore.connect(stores.redis, project=world.settings.feast_project)
    yield store
    store.close()


def _push(client: TestClient[Any], ids: list[int], when: datetime | None = None) -> None:
    when = when or datetime.now(UTC)
    rows = [
        {
            "customer_id": i,
            "event_timestamp": when.isoformat(),
            "txn_count_24h": 30 + i % 7,
            "txn_amount_24h": 5000.0 + i,
            "max_amount_24h": 2500.0,
            "txn_count_7d": 80,
            "avg_amount_30d": 100.0 + i,
            "foreign_txn_ratio_7d": 0.7,
            "distinct_merchants_7d": 20,
        }
        for i in ids
    ]
    response = client.post("/v1/push/customer_txn_stats_push", json={"rows": rows}, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["written_online"] == len(ids)


def _predict(client: TestClient[Any], ids: list[int], mode: str = "auto") -> list[dict[str, Any]]:
    response = client.post("/v1/predict", json={"entities": [{"customer_id": i} for i in ids], "mode": mode})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["predictions"]
    return items


def _target(rescorer: StreamRescorer) -> RescoreTarget:
    (target,) = rescorer.targets
    return target


def _online_rows(online: OnlineStore, target: RescoreTarget, ids: list[int]) -> list[OnlineRow]:
    return online.read(target.layout, ids)


def _flush(rescorer: StreamRescorer, ids: list[int]) -> RescoreResult:
    rescorer.touched(VIEW, ids)
    (result,) = rescorer.flush()
    return result


def _stream_rows(stores: Stores, run_id: uuid.UUID) -> dict[int, float]:
    with psycopg.connect(stores.postgres.url()) as conn:
        rows = conn.execute(
            "SELECT entity_key, score FROM tandem.batch_predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {int(entity_id): float(score) for entity_id, score in rows}


def _latest(stores: Stores, ids: list[int]) -> dict[int, tuple[str, str]]:
    """Entity -> (run id, kind) of the newest published stored score, by PostgreSQL's own query."""
    with psycopg.connect(stores.postgres.url()) as conn:
        rows = latest_published_rows(conn, model_name=DEMO_MODEL, entity_keys=[str(i) for i in ids])
    return {int(row[0]): (str(row[3]), str(row[6])) for row in rows}


async def _degraded_read(stores: Stores, ids: list[int]) -> dict[EntityId, StoredPrediction]:
    """The API's own PostgreSQL read of stored scores (core.serving.stored), used while Redis is down."""
    async with await psycopg.AsyncConnection.connect(stores.postgres.url()) as conn:
        return await stored_predictions(conn, ids, model_name=DEMO_MODEL)


def _run_exists(engine: Engine, run_id: uuid.UUID) -> bool:
    with Session(engine) as session:
        try:
            get_run(session, run_id=run_id)
        except NotFoundError:
            return False
    return True


def test_fresh_events_are_rescored_stored_published_and_served_as_stored_scores(
    client: TestClient[Any], world: World, stores: Stores, engine: Engine, rescorer: StreamRescorer,
    online: OnlineStore,
) -> None:  # fmt: skip
    """Pushed rows for 3 entities, 2 untouched: one flush re-scores exactly the 3 (features_newer) into one
    stream run, COPYed to PostgreSQL and published online; the API serves them as stored scores
    (batch_fresh, run_kind stream) equal to the live score of the same features to 1e-9."""
    pushed, untouched = [11, 12, 13], [14, 15]
    before = {item["entity"]["customer_id"]: item for item in _predict(client, pushed + untouched)}
    assert {before[i]["run_kind"] for i in untouched} == {"batch"}
    _push(client, pushed)
    assert {item["reason"] for item in _predict(client, pushed)} == {"features_newer"}

    result = _flush(rescorer, pushed + untouched)
    assert result.run_id is not None
    assert (result.touched, result.rescored, result.published) == (5, 3, 3)
    assert result.reasons == {"features_newer": 3, "batch_fresh": 2}
    with Session(engine) as session:
        run = get_run(session, run_id=result.run_id)
    assert (run.kind, run.status, run.rows, run.as_of) == ("stream", "published", 3, result.scored_at)
    stored = _stream_rows(stores, result.run_id)
    assert sorted(stored) == pushed
    rows = _online_rows(online, _target(rescorer), pushed)
    assert {row.stored.run_id for row in rows if row.stored} == {str(result.run_id)}

    items = {item["entity"]["customer_id"]: item for item in _predict(client, pushed + untouched)}
    live = {item["entity"]["customer_id"]: item for item in _predict(client, pushed, mode="live")}
    for i in pushed:
        item = items[i]
        assert (item["source"], item["reason"], item["run_kind"]) == ("batch", "batch_fresh", "stream")
        assert item["batch_run_id"] == str(result.run_id)
        assert item["score"] == pytest.approx(stored[i], abs=1e-12)
        assert item["score"] == pytest.approx(live[i]["score"], abs=1e-9)
        assert item["feature_timestamps"] == live[i]["feature_timestamps"]
        assert live[i]["run_kind"] is None
    for i in untouched:
        assert items[i] == before[i] | {"staleness_s": items[i]["staleness_s"]}

    again = _flush(rescorer, pushed + untouched)
    assert (again.run_id, again.rescored, again.reasons) == (None, 0, {"batch_fresh": 5})


def test_an_older_batch_run_never_replaces_a_newer_stream_score(
    client: TestClient[Any], world: World, stores: Stores, engine: Engine, rescorer: StreamRescorer,
    online: OnlineStore,
) -> None:  # fmt: skip
    """A batch run as of a moment before the stream score (published after it) keeps the stream score of
    those entities, online and in PostgreSQL's latest query, and serves its own elsewhere; a batch run as of
    a later moment replaces it, and prunes the superseded stream rows and the emptied stream run."""
    ids = [21, 22]
    _push(client, ids)
    stream = _flush(rescorer, ids)
    assert stream.run_id is not None
    as_of = stream.scored_at - timedelta(milliseconds=1)  # after the world's run, before the stream score
    assert as_of > world.run.as_of
    older = run_batch_predict(world.settings, stores, model_name=DEMO_MODEL, as_of=as_of)
    assert older.kept_newer == 2
    target = _target(rescorer)
    rows = {row.entity_id: row for row in _online_rows(online, target, [*ids, 23])}
    assert rows[21].stored is not None
    assert rows[21].stored.run_id == str(stream.run_id)
    assert rows[22].stored is not None
    assert rows[22].stored.run_id == str(stream.run_id)
    assert rows[23].stored is not None
    assert rows[23].stored.run_id == str(older.run_id)
    assert _latest(stores, [*ids, 23]) == {
        21: (str(stream.run_id), "stream"),
        22: (str(stream.run_id), "stream"),
        23: (str(older.run_id), "batch"),
    }
    items = _predict(client, ids)
    assert {(item["reason"], item["run_kind"]) for item in items} == {("batch_fresh", "stream")}
    assert _stream_rows(stores, stream.run_id).keys() == set(ids)
    degraded = asyncio.run(_degraded_read(stores, [*ids, 23]))  # what the API serves while Redis is down
    assert {i: (s.run_id, s.run_kind) for i, s in degraded.items()} == {
        21: (str(stream.run_id), "stream"),
        22: (str(stream.run_id), "stream"),
        23: (str(older.run_id), "batch"),
    }

    newer = run_batch_predict(world.settings, stores, model_name=DEMO_MODEL)
    assert newer.kept_newer == 0
    assert _latest(stores, ids) == {i: (str(newer.run_id), "batch") for i in ids}
    assert {row.stored.run_id for row in _online_rows(online, target, ids) if row.stored} == {
        str(newer.run_id)
    }
    assert _stream_rows(stores, stream.run_id) == {}
    assert not _run_exists(engine, stream.run_id)
    assert {(item["run_kind"], item["batch_run_id"]) for item in _predict(client, ids)} == {
        ("batch", str(newer.run_id))
    }


def test_a_stream_score_older_than_the_stored_one_is_not_published(
    client: TestClient[Any], world: World, stores: Stores, engine: Engine, rescorer: StreamRescorer,
    online: OnlineStore,
) -> None:  # fmt: skip
    """A re-score computed as of a moment older than the stored score (a flush that lagged behind a newer
    one) is stored but never published over it, online or in PostgreSQL's latest query, and is pruned."""
    ids = [31]
    _push(client, ids)
    first = _flush(rescorer, ids)
    assert first.run_id is not None
    _push(client, ids, when=datetime.now(UTC))
    target = _target(rescorer)
    late = rescore_entities(
        engine, online, target, ids, max_staleness_s=86_400,
        clock=lambda: first.scored_at - timedelta(seconds=30),
    )  # fmt: skip
    assert late.run_id is not None
    assert (late.rescored, late.published) == (1, 0)
    (row,) = _online_rows(online, target, ids)
    assert row.stored is not None
    assert row.stored.run_id == str(first.run_id)
    assert _latest(stores, ids) == {31: (str(first.run_id), "stream")}
    assert not _run_exists(engine, late.run_id)  # superseded at once: its rows and run are pruned
    newest = _flush(rescorer, ids)  # the features did move past the stored score: a current re-score
    assert newest.published == 1
    assert not _run_exists(engine, first.run_id)
    assert _latest(stores, ids) == {31: (str(newest.run_id), "stream")}


class _FailingStore(OnlineStore):
    """Writes like the real store, then fails: a publish that died after its rows reached Redis."""

    def write_newer(self, *args: Any, **kwargs: Any) -> int:
        super().write_newer(*args, **kwargs)
        raise ConnectionError("injected failure after writing")


def test_a_failed_stream_publish_puts_back_the_published_scores(
    client: TestClient[Any], world: World, stores: Stores, engine: Engine, online: OnlineStore,
    rescorer: StreamRescorer,
) -> None:  # fmt: skip
    """A stream publish that fails after writing: its rows online are replaced by the newest published
    scores again, the run is failed, and the next re-score prunes its rows (never served)."""
    ids = [41, 42]
    before = {row.entity_id: row.stored for row in _online_rows(online, _target_of(world, stores), ids)}
    _push(client, ids)
    failing = _FailingStore(online.transport.client, project=world.settings.feast_project)
    target = _target_of(world, stores)
    with pytest.raises(ConnectionError):
        rescore_entities(engine, failing, target, ids, max_staleness_s=86_400)
    after = {row.entity_id: row.stored for row in _online_rows(online, target, ids)}
    assert after == before
    with psycopg.connect(stores.postgres.url()) as conn:
        (failed_run,) = conn.execute(
            "SELECT run_id FROM tandem.prediction_runs WHERE kind = 'stream' AND status = 'failed'"
        ).fetchone() or (None,)
    assert failed_run is not None
    assert {item["reason"] for item in _predict(client, ids)} == {"features_newer"}
    assert set(_stream_rows(stores, failed_run)) == set(ids)
    retried = _flush(rescorer, ids)
    assert retried.published == 2
    assert _stream_rows(stores, failed_run) == {}
    assert {item["run_kind"] for item in _predict(client, ids)} == {"stream"}


def _target_of(world: World, stores: Stores) -> RescoreTarget:
    rescorer = connect_rescorer(world.settings, stores)
    try:
        return _target(rescorer)
    finally:
        rescorer.close()


def _fail_at_end(rows: int) -> Progress:
    def progress(stage: str, done: int, _total: int | None) -> None:
        if stage == "publish" and done >= rows:
            raise RuntimeError("injected failure after the last publish batch")

    return progress


def test_a_failed_batch_publish_puts_back_stream_scores_it_replaced(
    client: TestClient[Any], world: World, stores: Stores, rescorer: StreamRescorer, online: OnlineStore
) -> None:
    """A batch run newer than a stream score that fails after writing every row: the entities get back what
    was there before it, the stream score where there was one and the previous batch score elsewhere."""
    ids = [51, 52]
    _push(client, ids)
    stream = _flush(rescorer, ids)
    target = _target(rescorer)
    before = {row.entity_id: row.stored for row in _online_rows(online, target, [*ids, 53, 54])}
    with pytest.raises(RuntimeError, match="injected"):
        run_batch_predict(
            world.settings, stores, model_name=DEMO_MODEL, progress=_fail_at_end(world.customers)
        )
    after = {row.entity_id: row.stored for row in _online_rows(online, target, [*ids, 53, 54])}
    assert after == before
    assert {stored.run_id for i in ids if (stored := after[i]) is not None} == {str(stream.run_id)}


def test_the_scheduler_sweep_rescores_entities_pushed_over_http(
    client: TestClient[Any], world: World, stores: Stores, engine: Engine
) -> None:
    """The `stream_rescore` job of the default registry re-scores the entities pushed through the API within
    its window (the stream's hook never saw them), leaves the unchanged ones, and records what it did."""
    ids = [61, 62]
    _push(client, ids)
    job = default_jobs(world.settings)["stream_rescore"]
    run = RunHandle(run_id=0, job="stream_rescore", attempt=1)
    job.body(JobContext(settings=world.settings, stores=stores, engine=engine), run)
    assert run.rows is not None
    assert run.rows >= 2
    runs = run.details["models"][DEMO_MODEL]["runs"]
    assert len(runs) >= 1
    items = _predict(client, ids)
    assert {(item["reason"], item["run_kind"]) for item in items} == {("batch_fresh", "stream")}
    assert {item["batch_run_id"] for item in items} <= set(runs)
    again = RunHandle(run_id=0, job="stream_rescore", attempt=1)
    job.body(JobContext(settings=world.settings, stores=stores, engine=engine), again)
    assert again.rows == 0


def test_an_abandoned_stream_run_is_failed_and_pruned(world: World, stores: Stores, engine: Engine) -> None:
    """A stream run left `publishing` by a dead process is marked failed by the next pruning once it is old
    enough, and its rows go with it; a fresh unfinished run is left alone."""
    old, fresh = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(stores.postgres.url()) as conn:
        for run_id, started in ((old, datetime.now(UTC) - timedelta(hours=1)), (fresh, datetime.now(UTC))):
            conn.execute(
                "INSERT INTO tandem.prediction_runs (run_id, model_name, model_version, feature_service, "
                "as_of, status, kind, started_at) SELECT %s, model_name, model_version, feature_service, %s, "
                "'publishing', 'stream', %s FROM tandem.prediction_runs WHERE run_id = %s",
                (run_id, started, started, world.run.run_id),
            )
            conn.execute(
                "INSERT INTO tandem.batch_predictions (run_id, entity_key, score, model_version, scored_at, "
                "feature_snapshot_ts) VALUES (%s, '99', 0.5, 'v', %s, '{}')",
                (run_id, started),
            )
    with Session(engine) as session, session.begin():
        prune_stream_runs(session, model_name=DEMO_MODEL)
    with Session(engine) as session:
        failed = get_run(session, run_id=old)
        assert failed.status == "failed"
        assert failed.error is not None
        assert "abandoned while publishing" in failed.error
        assert get_run(session, run_id=fresh).status == "publishing"
    assert _stream_rows(stores, old) == {}
    assert set(_stream_rows(stores, fresh)) == {99}
    with psycopg.connect(stores.postgres.url()) as conn:
        conn.execute("DELETE FROM tandem.prediction_runs WHERE run_id = %s", (fresh,))
