"""Batch runs and the API when PostgreSQL or a process dies, on a private embedded PostgreSQL (and Redis) of
this module. PostgreSQL killed during a batch run: the postmaster and its backends get SIGKILL while the run
streams its scores into COPY, the server comes back (crash recovery), and then the run is `failed`, nothing
of it is online (the API keeps serving the previous run) and the next try publishes. A `tandem batch-predict`
SIGKILLed mid-publish: the leader's repair, or the next batch-predict, marks its run failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import pytest
import redis
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from core.batch.predict import run_batch_predict
from core.errors import StackError
from core.online.decoding import decode_value
from core.online.encoding import feature_field
from core.online.keys import encode_entity_keys
from core.records.prediction_runs import get_run, latest_published_run
from core.records.tables import JobRun, PredictionRun
from core.settings import PROJECT_ROOT, Settings
from core.stack.local import LocalStack, start_local_stack, stop_local_stack
from core.stack.postgres_server import running_postgres, stop_postgres
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from scheduler.runner import repair_dead_runs
from service.app import create_app
from tandem.demo.names import DEMO_MODEL, DEMO_PREDICTIONS_VIEW, demo_settings
from tests.faults.answers import figure
from tests.integration.service_world import World, build_world
from tests.servers import free_port, private_database, store_env


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


def _tandem_batch_predict(world: World, log: Path) -> subprocess.Popen[bytes]:
    """`tandem batch-predict --model DEMO_MODEL` in a process of its own, on the module's stores."""
    env = {**os.environ, **store_env(world.settings), "TANDEM_HOME": str(world.settings.home)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem", "batch-predict", "--model", DEMO_MODEL],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _until(done: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := done()):
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.02)
    return found


def _kill_mid_publish(embedded: Embedded, world: World, engine: Engine, log: Path) -> tuple[uuid.UUID, int]:
    """Start the command, stall Redis once its job run is recorded (its store check is behind it), SIGKILL it
    while its run is `publishing`, resume Redis; returns the run left behind and its job run."""
    process = _tandem_batch_predict(world, log)
    try:
        job = _until(lambda: _running_cli_job(engine), timeout_s=60, what="running job run")
        os.kill(embedded.stack.redis_pid, signal.SIGSTOP)
        try:
            run = _until(lambda: _publishing_run(engine), timeout_s=60, what="run in state publishing")
            process.kill()  # SIGKILL: no handler, no cleanup, no failed status
            process.wait(timeout=10)
        finally:
            os.kill(embedded.stack.redis_pid, signal.SIGCONT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert _status(engine, run) == "publishing"  # what was left: nothing repairs it by itself
    return run, job


def _running_cli_job(engine: Engine) -> int | None:
    with Session(engine) as session:
        return session.scalar(
            select(JobRun.id).where(
                JobRun.job == "batch_predict", JobRun.trigger == "manual", JobRun.status == "running"
            )
        )


def _publishing_run(engine: Engine) -> uuid.UUID | None:
    with Session(engine) as session:
        return session.scalar(select(PredictionRun.run_id).where(PredictionRun.status == "publishing"))


def _batch_served_runs(world: World) -> set[Any]:
    """The run ids of the stored scores the API serves for entities 1..20 (a fresh app)."""
    with TestClient(create_app(world.settings)) as client:
        items = [
            client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": e}).json() for e in range(1, 21)
        ]
    return {item.get("batch_run_id") for item in items if item.get("source") == "batch"}


def test_a_cli_batch_run_killed_mid_publish_is_failed_by_the_leader_or_the_next_run(
    embedded: Embedded, pg_world: tuple[World, Stores], tmp_path: Path
) -> None:
    """`tandem batch-predict` SIGKILLed while its run is `publishing` (Redis stalled under it): the run stays
    `publishing` until a repair. (1) The scheduler leader's repair marks it failed even when its job run
    says another host ran it (no pid to check there: its liveness lock is what is gone), naming the
    process; the previous run stays the latest published one and no answer serves the killed run's scores.
    (2) Killed again, the next `tandem batch-predict` marks it failed, then publishes a run that is served."""
    world, stores = pg_world
    engine = create_db_engine(stores.postgres)
    try:
        with Session(engine) as session:
            before = latest_published_run(session, model_name=DEMO_MODEL)
        assert before is not None
        killed, job = _kill_mid_publish(embedded, world, engine, tmp_path / "first.log")
        with Session(engine) as session, session.begin():  # as if machine B had run it
            session.execute(update(JobRun).where(JobRun.id == job).values(host="machine-b", pid=1))
        jobs, runs = repair_dead_runs(engine)  # what the leader runs when it leads, then every 30 s
        assert (jobs, runs) == ([job], [killed])
        with Session(engine) as session:
            failed = get_run(session, run_id=killed)
            latest = latest_published_run(session, model_name=DEMO_MODEL)
        assert failed.status == "failed"
        assert "died while publishing" in (failed.error or "")
        assert "on machine-b" in (failed.error or "")
        assert latest is not None
        assert latest.run_id == before.run_id
        served = _batch_served_runs(world)
        assert str(killed) not in served
        figure(f"cli batch run killed mid-publish: failed by the leader's repair; served runs {served}")

        again, _ = _kill_mid_publish(embedded, world, engine, tmp_path / "second.log")
        next_run = _tandem_batch_predict(world, tmp_path / "third.log")
        assert next_run.wait(timeout=180) == 0, (tmp_path / "third.log").read_text()[-2000:]
        with Session(engine) as session:
            assert get_run(session, run_id=again).status == "failed"
            latest = latest_published_run(session, model_name=DEMO_MODEL)
        assert latest is not None
        assert latest.run_id not in {before.run_id, killed, again}
        assert _online_runs(world, stores) == {str(latest.run_id)}
        assert _batch_served_runs(world) == {str(latest.run_id)}
    finally:
        engine.dispose()


def test_an_api_started_while_postgres_is_down_is_not_ready_then_recovers_by_itself(
    embedded: Embedded, pg_world: tuple[World, Stores]
) -> None:
    """The API starts with PostgreSQL stopped: it comes up (live 200), /health/ready is 503 saying
    postgresql down and that PostgreSQL, which holds the models, has not answered; a predict is a 503 with
    that message, never a 404 or a 500. PostgreSQL started again, the same process loads the promoted model
    from its watcher and is ready, answering from the stored scores, without a restart."""
    world, _ = pg_world
    settings = world.settings.model_copy(update={"model_poll_s": 0.2, "postgres_timeout_s": 0.5})
    stop_postgres(embedded.settings.home)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/health/live").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert (body["postgresql"], body["redis"], body["models"]) == ("down", "ok", {})
            assert "PostgreSQL, which holds the models, has not answered" in body["detail"]
            answer = client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": 1})
            assert answer.status_code == 503
            assert "PostgreSQL" in answer.json()["detail"]
            time.sleep(1.0)  # a few failed watcher polls: none of them gives up for good
            assert client.get("/health/ready").status_code == 503

            embedded.stack = start_local_stack(embedded.settings)
            back = time.monotonic()
            while (ready := client.get("/health/ready")).status_code != 200:
                assert time.monotonic() - back < 30, ready.json()
                time.sleep(0.05)
            ready_s = time.monotonic() - back
            assert ready.json()["models"] == {DEMO_MODEL: str(world.run.model_version)}
            while (body := client.get("/health/ready").json())["postgresql"] != "ok":
                assert time.monotonic() - back < 30, body
                time.sleep(0.05)
            healthy_s = time.monotonic() - back
            assert body["degraded"] is False
            item = client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": 1}).json()
            assert (item["source"], item["reason"]) == ("batch", "batch_fresh")
        figure(
            f"api started with postgres down: ready (model loaded) {ready_s * 1000:.0f} ms and not degraded "
            f"{healthy_s * 1000:.0f} ms after postgres answered again"
        )
    finally:
        if running_postgres(embedded.settings.home) is None:
            embedded.stack = start_local_stack(embedded.settings)
