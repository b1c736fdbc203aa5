"""PostgreSQL killed during a batch run, on a private embedded PostgreSQL (and Redis) of this module: the
postmaster and its backends get SIGKILL while the run streams its scores into COPY, the server comes back
(crash recovery), and then the run is `failed`, nothing of it is online (the API keeps serving the previous
run) and the next try publishes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import pytest
import redis
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.batch.predict import run_batch_predict
from core.errors import StackError
from core.online.decoding import decode_value
from core.online.encoding import feature_field
from core.online.keys import encode_entity_keys
from core.records.prediction_runs import get_run, latest_published_run
from core.settings import Settings
from core.stack.local import LocalStack, start_local_stack, stop_local_stack
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.names import DEMO_MODEL, DEMO_PREDICTIONS_VIEW, demo_settings
from tests.faults.answers import figure
from tests.integration.service_world import World, build_world
from tests.servers import free_port, private_database


class Embedded:
    """The module's own embedded stack: its settings (to restart it) and what runs now."""

    def __init__(self, home: Path) -> None:
        self.settings = Settings(home=home, local_postgres_port=free_port(), local_redis_port=free_port())
        self.stack: LocalStack = start_local_stack(self.settings)

    def crash_postgres(self) -> None:
        """SIGKILL to the postmaster and every backend (a machine crash), then start it again (crash recovery)."""
        postmaster = psutil.Process(self.stack.postgres_pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
        psutil.wait_procs(processes, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.stack = start_local_stack(self.settings)
                return
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """A private embedded PostgreSQL and Redis on free ports, stopped afterwards."""
    stack = Embedded(tmp_path_factory.mktemp("embedded"))
    yield stack
    stop_local_stack(stack.settings)


@pytest.fixture(scope="module")
def pg_world(embedded: Embedded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Stores]]:
    """The served world (published run 1) on a database of the embedded PostgreSQL."""
    with private_database(embedded.stack.postgres) as database:
        stores = Stores(postgres=database, redis=embedded.stack.redis, local=False)
        engine = create_db_engine(database)
        upgrade_schema(engine)
        settings = demo_settings(
            Settings(
                postgres_url=SecretStr(database.url()),
                redis_url=SecretStr(stores.redis.url()),
                feast_project=f"p{uuid.uuid4().hex[:10]}",
                home=Path(tmp_path_factory.mktemp("home")),
            )
        )
        world = build_world(settings, stores, engine, customers=120)
        engine.dispose()
        yield world, stores


def _status(engine: Engine, run_id: uuid.UUID) -> str:
    with Session(engine) as session:
        return get_run(session, run_id=run_id).status


def _online_runs(world: World, stores: Stores) -> set[Any]:
    """The run ids the predictions view holds in Redis for entities 1..120, read directly."""
    client = redis.Redis(host=stores.redis.host, port=stores.redis.port)
    keys = encode_entity_keys(
        join_key="customer_id",
        entity_ids=np.arange(1, world.customers + 1, dtype=np.int64),
        project=world.settings.feast_project,
    )
    field = feature_field(DEMO_PREDICTIONS_VIEW, "run_id")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, field)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    values = cast("list[bytes | None]", pipe.execute())
    client.close()
    return {decode_value(value) for value in values}


def _served_runs(world: World) -> set[Any]:
    """The batch run ids the API serves for entities 1..20 (a fresh app: nothing cached)."""
    with TestClient(create_app(world.settings)) as client:
        items = [
            client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": e}).json() for e in range(1, 21)
        ]
    assert {item["reason"] for item in items} == {"batch_fresh"}, items
    return {item["batch_run_id"] for item in items}


def test_postgres_killed_during_a_batch_run_fails_it_and_publishes_nothing(
    embedded: Embedded, pg_world: tuple[World, Stores]
) -> None:
    """The kill lands while the run COPYs its scores: run_batch_predict raises, the run row says `failed`,
    the previous run stays the latest published one and the API serves it; the next try is published."""
    world, stores = pg_world
    previous = world.run.run_id
    crashed_at: list[float] = []

    def crash(stage: str, done: int, total: int | None) -> None:
        if stage == "score" and not crashed_at:
            crashed_at.append(time.monotonic())
            embedded.crash_postgres()

    run_id = uuid.uuid4()
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever psycopg says about its lost connection
        run_batch_predict(world.settings, stores, model_name=DEMO_MODEL, run_id=run_id, progress=crash)
    figure(f"postgres restarted in {time.monotonic() - crashed_at[0]:.2f} s")
    engine = create_db_engine(stores.postgres)
    try:
        assert _status(engine, run_id) == "failed"
        with Session(engine) as session:
            latest = latest_published_run(session, model_name=DEMO_MODEL)
        assert latest is not None
        assert latest.run_id == previous
        assert _online_runs(world, stores) == {str(previous)}
        assert _served_runs(world) == {str(previous)}

        retry = run_batch_predict(world.settings, stores, model_name=DEMO_MODEL)
        assert _status(engine, retry.run_id) == "published"
        assert retry.rows == world.customers
        assert _online_runs(world, stores) == {str(retry.run_id)}
        assert _served_runs(world) == {str(retry.run_id)}
    finally:
        engine.dispose()
