"""Batch-predict on real stores: Feast's point-in-time semantics (TTL included), durable runs, publish that
leaves the previous run served when it fails, idempotent reruns, and clear failures for bad input."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.batch.predict import Progress, run_batch_predict
from core.errors import NotFoundError, TandemError
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.model.lifecycle import train_and_promote
from core.model.registry import LoadedModel, load_model
from core.records.prediction_runs import get_run
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.data import TXN_TABLE, seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_MODEL, DEMO_PREDICTIONS_VIEW
from tests.servers import purge_feast_project

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
CUSTOMERS = 400
LATE_CUSTOMER = 5  # gets a wild row dated one second after the as-of time
EXPIRED_CUSTOMER = 9  # its transaction rows stop three days before the as-of time (TTL is two days)


@dataclass(frozen=True)
class World:
    """The module's Feast store, promoted model and as-of time."""

    store: Any
    model: LoadedModel
    as_of: datetime


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """400 customers x 6 days reseeded, a model trained and promoted, a late row and an expired customer.

    Other modules' stored scores of the model are newer than this module's as-of times, and a publish never
    replaces a newer stored score with an older one (nor does a restore put back anything but the newest
    published one): the project's Redis keys and the model's earlier runs are removed first."""
    apply_feature_repo(settings, stores)
    purge_feast_project(stores.redis, settings.feast_project)
    with psycopg.connect(stores.postgres.url()) as conn:
        conn.execute("DELETE FROM tandem.prediction_runs WHERE model_name = %s", (DEMO_MODEL,))
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=6, seed=5, end=END)
    store = open_feature_store(settings, stores)
    train_and_promote(store, settings, engine=engine)
    with Session(engine) as session:
        model = load_model(session, model_name=DEMO_MODEL)
    as_of = END - timedelta(hours=3, minutes=30)
    with psycopg.connect(stores.postgres.url()) as conn:
        conn.execute(
            f"INSERT INTO {TXN_TABLE} SELECT customer_id, %s, %s, 999, 1e6, 1e6, 999, 1e6, 1, 999 "  # noqa: S608 - constant
            f"FROM {TXN_TABLE} WHERE customer_id = %s LIMIT 1",
            (as_of + timedelta(seconds=1), as_of + timedelta(seconds=1), LATE_CUSTOMER),
        )
        conn.execute(
            f"DELETE FROM {TXN_TABLE} WHERE customer_id = %s AND event_timestamp > %s",  # noqa: S608 - constant
            (EXPIRED_CUSTOMER, as_of - timedelta(days=3)),
        )
    return World(store=store, model=model, as_of=as_of)


def _stored(stores: Stores, run_id: uuid.UUID) -> pd.DataFrame:
    with psycopg.connect(stores.postgres.url()) as conn:
        rows = conn.execute(
            "SELECT entity_key::int8, score, feature_snapshot_ts FROM tandem.batch_predictions WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    return pd.DataFrame(rows, columns=["customer_id", "score", "snapshot"]).set_index("customer_id")


def _online(world: World, ids: list[int]) -> dict[str, list[Any]]:
    refs = [f"{DEMO_PREDICTIONS_VIEW}:{name}" for name in ("score", "run_id", "model_version")]
    return dict(
        world.store.get_online_features(
            features=refs, entity_rows=[{"customer_id": i} for i in ids]
        ).to_dict()
    )


def test_scores_equal_feasts_point_in_time_path(world: World, settings: Settings, stores: Stores) -> None:
    """Every stored score equals Feast get_historical_features at the as-of time + the model: a row dated one
    second later never counts, and a customer past the TTL is scored on nulls exactly as Feast gives them."""
    result = run_batch_predict(settings, stores, model_name=DEMO_MODEL, as_of=world.as_of)
    stored = _stored(stores, result.run_id)
    assert result.rows == len(stored) == CUSTOMERS
    entity_df = pd.DataFrame({"customer_id": stored.index.to_numpy(), "event_timestamp": world.as_of})
    frame = world.store.get_historical_features(
        entity_df=entity_df, features=world.store.get_feature_service(DEMO_FEATURE_SERVICE)
    ).to_df()
    frame = frame.set_index("customer_id").loc[stored.index]
    expected = world.model.predict_scores(frame)
    np.testing.assert_allclose(stored["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert frame.loc[LATE_CUSTOMER, "txn_count_24h"] != 999
    assert pd.isna(frame.loc[EXPIRED_CUSTOMER, "txn_count_24h"])
    assert '"customer_txn_stats":null' in str(stored.loc[EXPIRED_CUSTOMER, "snapshot"])
    late_snapshot = str(stored.loc[LATE_CUSTOMER, "snapshot"])
    assert (world.as_of + timedelta(seconds=1)).isoformat() not in late_snapshot
    online = _online(world, [1, LATE_CUSTOMER, CUSTOMERS])
    assert online["run_id"] == [str(result.run_id)] * 3
    assert online["score"][1] == pytest.approx(stored.loc[LATE_CUSTOMER, "score"], abs=0)
    with Session(create_engine_for(stores)) as session:
        run = get_run(session, run_id=result.run_id)
    assert run.status == "published"
    assert run.rows == CUSTOMERS
    assert set(run.stage_seconds) == {"features", "score", "copy", "publish"}


def create_engine_for(stores: Stores) -> Engine:
    """An engine on the session database (closed by garbage collection: tests only)."""
    from core.stores.database import create_db_engine  # lazy import: test helper

    return create_db_engine(stores.postgres, pool_size=1)


class InjectedFailureError(RuntimeError):
    """Raised by a test's progress callback to fail a run half-way."""


def _fail_after(stage: str, rows: int) -> Progress:
    """A progress callback that fails the run once `rows` rows of `stage` are done ("copy": scored and
    copied; "publish": acknowledged by Redis)."""
    progress_stage = {"copy": "score", "publish": "publish"}[stage]

    def progress(name: str, done: int, _total: int | None) -> None:
        if name == progress_stage and done >= rows:
            raise InjectedFailureError(f"injected failure after {done} rows")

    return progress


@pytest.mark.parametrize("stage", ["copy", "publish"])
def test_failure_half_way_publishes_nothing(
    world: World, settings: Settings, stores: Stores, stage: str
) -> None:
    """A failure after half the rows (while loading or while publishing) leaves the previous run served online,
    marks the run failed with the error, and leaves no rows of it in PostgreSQL when loading failed."""
    previous = run_batch_predict(settings, stores, model_name=DEMO_MODEL, as_of=world.as_of)
    ids = list(range(1, CUSTOMERS + 1))
    before = _online(world, ids)
    run_id = uuid.uuid4()
    with pytest.raises(InjectedFailureError):
        run_batch_predict(
            settings,
            stores,
            model_name=DEMO_MODEL,
            as_of=world.as_of + timedelta(minutes=5),
            run_id=run_id,
            progress=_fail_after(stage, CUSTOMERS // 2),
        )
    after = _online(world, ids)
    assert after == before
    assert set(after["run_id"]) == {str(previous.run_id)}
    with Session(create_engine_for(stores)) as session:
        run = get_run(session, run_id=run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert "injected failure" in run.error
    if stage == "copy":
        assert _stored(stores, run_id).empty


def test_rerun_of_a_run_id_has_no_duplicates(world: World, settings: Settings, stores: Stores) -> None:
    """Running the same run id twice stores each entity once and keeps the run's as-of time."""
    first = run_batch_predict(settings, stores, model_name=DEMO_MODEL, as_of=world.as_of)
    again = run_batch_predict(settings, stores, model_name=DEMO_MODEL, run_id=first.run_id)
    assert again.as_of == first.as_of
    stored = _stored(stores, first.run_id)
    assert len(stored) == CUSTOMERS
    assert stored.index.is_unique


def test_unknown_model_version_is_named(settings: Settings, stores: Stores, world: World) -> None:
    """An unknown model version fails before any run is created, naming the version."""
    with pytest.raises(NotFoundError, match="no-such-version"):
        run_batch_predict(settings, stores, model_name=DEMO_MODEL, model_version="no-such-version")


def test_no_entities_fails_the_run_with_a_clear_error(
    world: World, settings: Settings, stores: Stores
) -> None:
    """An as-of time before any feature row: the run is marked failed saying there was nothing to score."""
    run_id = uuid.uuid4()
    with pytest.raises(TandemError, match="nothing to score"):
        run_batch_predict(
            settings, stores, model_name=DEMO_MODEL, as_of=END - timedelta(days=60), run_id=run_id
        )
    with Session(create_engine_for(stores)) as session:
        assert get_run(session, run_id=run_id).status == "failed"


def test_unknown_model_is_named(world: World, settings: Settings, stores: Stores) -> None:
    """A model without a promoted version: NotFoundError naming it, and no run is recorded."""
    with pytest.raises(NotFoundError, match="nope_v9"):
        run_batch_predict(settings, stores, model_name="nope_v9", as_of=world.as_of)
