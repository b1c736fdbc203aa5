"""Push on the real stores is all or nothing, in order: offline committed first (with its outbox row), then
the atomic newer-wins online write. A Redis of its own (a spare redis-server on a free loopback port) is
stopped and restarted: the offline rows stay, the outbox keeps what Redis missed, the drain (scheduler or
next push) writes it, and offline and online then agree. 120 pairs of concurrent pushes leave the newer row
online every time. PostgreSQL down: 503-worthy StoreUnavailableError and nothing online."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import psycopg
import pytest
import redis
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine

from core.endpoints import RedisEndpoint
from core.errors import StoreUnavailableError, TandemError
from core.features.keys import EntityKey
from core.features.specs import ServiceSpec, ViewSpec
from core.offline.append import PgAppender
from core.online.async_store import AsyncOnlineStore
from core.online.decoding import decode_timestamp
from core.online.encoding import timestamp_field
from core.online.keys import encode_entity_keys
from core.online.resp_pool import RespPool
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore
from core.online.wire import pack_hsets
from core.push.drain import drain_outbox
from core.push.outbox import PgPushStore
from core.push.rows import offline_rows, online_rows, validate_rows
from core.push.service import PushPolicy, PushResult, PushService
from core.records.tracked_run import RunHandle
from core.settings import Settings
from core.stack.redis_server import redis_bin_dir
from core.stores.resolve import Stores
from scheduler.jobs import default_jobs
from scheduler.registry import JobContext
from tests.item_views import item_row, item_view, offline_count, offline_newest, online_items
from tests.newer_wins_reference import newer_positions, pack_hgets
from tests.servers import free_port

PROJECT = f"push{uuid.uuid4().hex[:8]}"


class SpareRedis:
    """A redis-server of this module's own on a free loopback port, stopped and started by its pid."""

    def __init__(self) -> None:
        binary = redis_bin_dir() / "redis-server"
        self.binary = str(binary) if binary.exists() else shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> RedisEndpoint:
        """Where it listens."""
        return RedisEndpoint("127.0.0.1", self.port)

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """SIGTERM to its pid; wait until it is gone."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def spare_redis() -> Iterator[SpareRedis]:
    """The module's own Redis, running at the start of each test."""
    server = SpareRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def running_redis(spare_redis: SpareRedis) -> SpareRedis:
    """The spare Redis, started again if a test left it stopped, and empty."""
    if spare_redis.process is None:
        spare_redis.start()
    redis.Redis(port=spare_redis.port).flushall()
    return spare_redis


@pytest.fixture
def view(stores: Stores, engine: Engine) -> Iterator[ViewSpec]:
    """A pushable view over a fresh offline table of the session's database (schema at head)."""
    with item_view(stores, prefix="push") as made:
        yield made
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute("DELETE FROM tandem.push_outbox")


@dataclass
class World:
    """PushServices on a real PostgreSQL pool and the spare Redis (one RespPool each: separate workers)."""

    view: ViewSpec
    pool: AsyncConnectionPool
    services: list[PushService]
    resp: list[RespPool]

    async def close(self) -> None:
        """Close the pools."""
        for resp in self.resp:
            await resp.close()
        await self.pool.close()


async def _world(stores: Stores, view: ViewSpec, redis_endpoint: RedisEndpoint, *, workers: int = 1) -> World:
    pool = AsyncConnectionPool(stores.postgres.url(), min_size=1, max_size=8, open=False)
    await pool.open()
    resp = [RespPool(redis_endpoint, timeout_s=0.5) for _ in range(workers)]
    spec = ServiceSpec(name="push test", views=(view,), refs=())
    policy = PushPolicy(online_attempts=2, online_retry_s=0.01, drain_every_s=3600)
    services = [
        PushService(
            service=spec,
            offline=PgPushStore.connect(pool, timeout_s=5.0, lease_s=30.0),
            online=AsyncOnlineStore(transport, project=PROJECT),
            policy=policy,
        )
        for transport in resp
    ]
    return World(view, pool, services, resp)


def _push(stores: Stores, view: ViewSpec, endpoint: RedisEndpoint, rows: list[dict[str, Any]]) -> PushResult:
    async def run() -> PushResult:
        world = await _world(stores, view, endpoint)
        try:
            return await world.services[0].push(view.push_source or "", rows)
        finally:
            await world.close()

    return asyncio.run(run())


def _outbox(stores: Stores) -> list[tuple[str, int, int, datetime | None, str | None]]:
    with psycopg.connect(stores.postgres.url()) as conn:
        return conn.execute(
            "SELECT view, rows, attempts, lease_until, last_error FROM tandem.push_outbox ORDER BY id"
        ).fetchall()


def _drain(stores: Stores, endpoint: RedisEndpoint, *, lease_s: float = 30.0) -> Any:
    online = OnlineStore.connect(endpoint, project=PROJECT, timeout_s=2.0)
    try:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            return drain_outbox(conn, online, lease_s=lease_s)
    finally:
        online.close()


def test_push_commits_offline_then_writes_online(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """A push on healthy stores: offline rows committed, each entity's newest row online, no outbox row left,
    and offline and online agree value for value."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [item_row(1, now, 1.5, 2), item_row(1, now - timedelta(minutes=5), 9.0), item_row(2, now, 2.5, 3)]
    result = _push(stores, view, running_redis.endpoint, rows)
    assert (result.rows, result.written_online, result.online) == (3, 2, "written")
    assert offline_count(stores, view) == 3
    assert _outbox(stores) == []
    assert online_items(running_redis.endpoint, view, [1, 2], project=PROJECT) == offline_newest(stores, view)
    assert online_items(running_redis.endpoint, view, [1], project=PROJECT)[1] == (now, 1.5, 2)


def test_redis_stopped_during_push_then_the_scheduler_drain_repairs(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """Redis stopped: the push is `pending` (no error), its offline rows are kept and its outbox row holds
    the online rows with Redis's error; a drain while Redis is still down leaves it; once Redis is back,
    the scheduler's drain writes it online and offline and online agree."""
    now = datetime.now(UTC)
    running_redis.stop()
    result = _push(stores, view, running_redis.endpoint, [item_row(5, now, 5.5, 5), item_row(6, now, 6.5, 6)])
    assert (result.written_online, result.online) == (0, "pending")
    assert offline_count(stores, view) == 2
    [(name, count, attempts, lease, error)] = _outbox(stores)
    assert (name, count, attempts, lease) == (view.name, 2, 1, None)
    assert error is not None
    assert "Redis" in error

    still_down = _drain(stores, running_redis.endpoint)
    assert (still_down.drained, still_down.left) == (0, 1)
    assert len(_outbox(stores)) == 1

    running_redis.start()
    repaired = _drain(stores, running_redis.endpoint)
    assert (repaired.drained, repaired.written_online, repaired.left, repaired.error) == (1, 2, 0, None)
    assert _outbox(stores) == []
    offline = offline_newest(stores, view)
    assert online_items(running_redis.endpoint, view, [5, 6], project=PROJECT) == offline
    assert offline[5][1:] == (5.5, 5)


def test_the_next_push_drains_what_redis_missed(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """Redis down for one push, back for the next: the next push of the same worker writes both."""
    now = datetime.now(UTC)

    async def run() -> tuple[PushResult, PushResult]:
        world = await _world(stores, view, running_redis.endpoint)
        try:
            running_redis.stop()
            first = await world.services[0].push(view.push_source or "", [item_row(7, now, 7.5)])
            running_redis.start()
            second = await world.services[0].push(view.push_source or "", [item_row(8, now, 8.5)])
            return first, second
        finally:
            await world.close()

    first, second = asyncio.run(run())
    assert (first.online, second.online, second.written_online) == ("pending", "written", 1)
    assert _outbox(stores) == []
    assert online_items(running_redis.endpoint, view, [7, 8], project=PROJECT) == offline_newest(stores, view)
    assert set(offline_newest(stores, view)) == {7, 8}


def test_a_crash_after_the_commit_leaves_an_outbox_row_the_drain_writes(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """The offline commit carries the outbox row: a process that dies before its online write leaves the row
    leased; no drain takes it while the lease runs, the first drain after writes it."""
    now = datetime.now(UTC)
    valid = validate_rows(view, [item_row(9, now, 9.5, 9)], now=now)

    async def commit_then_crash() -> None:
        pool = AsyncConnectionPool(stores.postgres.url(), min_size=1, max_size=1, open=False)
        await pool.open()
        try:
            store = PgPushStore(PgAppender(pool, timeout_s=5.0), lease_s=0.5)
            await store.append(offline_rows(valid), online_rows(valid))
        finally:
            await pool.close()

    asyncio.run(commit_then_crash())
    assert offline_count(stores, view) == 1
    assert online_items(running_redis.endpoint, view, [9], project=PROJECT) == {}
    assert _drain(stores, running_redis.endpoint).drained == 0  # leased to the push that died
    time.sleep(0.6)
    assert _drain(stores, running_redis.endpoint).drained == 1
    assert online_items(running_redis.endpoint, view, [9], project=PROJECT) == offline_newest(stores, view)


def test_concurrent_pushes_leave_the_newer_row_online(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """120 pairs of simultaneous pushes for the same entities, from two workers (own Redis connections),
    the newer and the older row of each pair in random order: the newer row is online every time."""
    now = datetime.now(UTC).replace(microsecond=0)
    pairs = 120
    rng = random.Random(11)

    async def run() -> list[PushResult]:
        world = await _world(stores, view, running_redis.endpoint, workers=2)
        try:
            pushes = []
            for item in range(pairs):
                newer = [item_row(item, now - timedelta(seconds=item % 7), float(item), 2)]
                older = [item_row(item, now - timedelta(seconds=item % 7, microseconds=1), -1.0, 1)]
                first, second = (newer, older) if rng.random() < 0.5 else (older, newer)
                source = view.push_source or ""
                pushes += [world.services[0].push(source, first), world.services[1].push(source, second)]
            return list(await asyncio.gather(*pushes))
        finally:
            await world.close()

    results = asyncio.run(run())
    assert all(result.online == "written" for result in results)
    online = online_items(running_redis.endpoint, view, list(range(pairs)), project=PROJECT)
    assert len(online) == pairs
    assert [values[1:] for values in online.values()] == [(float(item), 2) for item in range(pairs)]
    assert online == offline_newest(stores, view)
    assert sum(result.written_online for result in results) in range(pairs, 2 * pairs + 1)
    assert _outbox(stores) == []


def test_postgres_down_is_store_unavailable_and_nothing_online(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """PostgreSQL unreachable: StoreUnavailableError naming PostgreSQL (the API's 503); Redis untouched."""

    async def run() -> None:
        pool = AsyncConnectionPool(
            f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0, max_size=1, open=False
        )
        await pool.open(wait=False)
        resp = RespPool(running_redis.endpoint, timeout_s=0.5)
        service = PushService(
            service=ServiceSpec(name="push test", views=(view,), refs=()),
            offline=PgPushStore.connect(pool, timeout_s=0.5, lease_s=30.0),
            online=AsyncOnlineStore(resp, project=PROJECT),
        )
        try:
            await service.push(view.push_source or "", [item_row(3, datetime.now(UTC), 1.0)])
        finally:
            await resp.close()
            await pool.close()

    with pytest.raises(StoreUnavailableError, match="PostgreSQL"):
        asyncio.run(run())
    assert online_items(running_redis.endpoint, view, [3], project=PROJECT) == {}
    assert _outbox(stores) == []


class _ReadThenWrite(AsyncOnlineStore):
    """Newer-wins as two round trips (HGET, then HSET): the non-atomic write this store replaced."""

    async def write_newer(self, rows: FeatureRows) -> int:
        stored = await self.transport.request(pack_hgets(self.project, rows), len(rows))
        keep = newer_positions(rows, stored)
        if keep:
            payload, commands = pack_hsets(self.project, rows.take(keep))
            await self.transport.request(payload, commands)
        return len(keep)


def _race(endpoint: RedisEndpoint, store: type[AsyncOnlineStore], project: str) -> int:
    """120 entities, each written by two connections at once (older and newer row, random order): how
    many entities end up with the older row online."""
    rng = random.Random(5)
    base = np.datetime64("2026-12-01T00:00:00", "us")

    def rows(entity: int, micros: int) -> FeatureRows:
        return FeatureRows(
            view="race",
            key=EntityKey.single("item_id"),
            entity_ids=np.array([entity], dtype=np.int64),
            columns=(FeatureColumn("x", "float64", np.array([float(micros)])),),
            event_timestamps=np.array([base + np.timedelta64(micros, "us")]),
        )

    async def run() -> None:
        pools = [RespPool(endpoint, timeout_s=2.0), RespPool(endpoint, timeout_s=2.0)]
        one, two = (store(pool, project=project) for pool in pools)
        writes = []
        for entity in range(120):
            newer, older = rows(entity, 2), rows(entity, 1)
            first, second = (newer, older) if rng.random() < 0.5 else (older, newer)
            writes += [one.write_newer(first), two.write_newer(second)]
        await asyncio.gather(*writes)
        for pool in pools:
            await pool.close()

    asyncio.run(run())
    client = redis.Redis(host=endpoint.host, port=endpoint.port)
    keys = encode_entity_keys(join_key="item_id", entity_ids=np.arange(120, dtype=np.int64), project=project)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, timestamp_field("race"))  # type: ignore[arg-type]  # redis-py annotates str
    stamps = cast("list[bytes]", pipe.execute())
    client.close()
    return len([stamp for stamp in stamps if decode_timestamp(stamp).microsecond != 2])


def test_the_compare_and_set_wins_the_race_a_read_then_write_loses(running_redis: SpareRedis) -> None:
    """Store level: with the Lua compare-and-set no entity of 120 racing pairs keeps the older row; the same
    race with a read-then-write (HGET, HSET) leaves older rows online, so the race is real."""
    assert _race(running_redis.endpoint, AsyncOnlineStore, f"{PROJECT}a") == 0
    assert _race(running_redis.endpoint, _ReadThenWrite, f"{PROJECT}b") > 0


def test_the_scheduler_job_drains_the_outbox(
    stores: Stores, settings: Settings, engine: Engine, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """The `push_outbox` job of the default registry: while Redis is down it fails naming what is left (the
    rows stay); once Redis is back it writes them, counts them as its rows, and offline and online agree."""
    now = datetime.now(UTC)
    running_redis.stop()
    assert _push(stores, view, running_redis.endpoint, [item_row(11, now, 11.5, 11)]).online == "pending"
    job = default_jobs(settings)["push_outbox"]
    context = JobContext(
        settings=settings.model_copy(update={"feast_project": PROJECT}),
        stores=Stores(postgres=stores.postgres, redis=running_redis.endpoint, local=False),
        engine=engine,
    )
    failed = RunHandle(run_id=0, job="push_outbox", attempt=1)
    with pytest.raises(TandemError, match="1 row"):
        job.body(context, failed)
    assert len(_outbox(stores)) == 1

    running_redis.start()
    run = RunHandle(run_id=0, job="push_outbox", attempt=1)
    job.body(context, run)
    assert (run.rows, run.details) == (1, {"drained": 1, "written_online": 1, "left": 0})
    assert _outbox(stores) == []
    assert online_items(running_redis.endpoint, view, [11], project=PROJECT) == offline_newest(stores, view)


def test_stalled_redis_never_leaves_an_online_onlyitem_row(
    stores: Stores, view: ViewSpec, running_redis: SpareRedis
) -> None:
    """Redis stalled (SIGSTOP) during a push: the write times out, the push is `pending` with its offline rows
    committed; whatever Redis runs after SIGCONT, offline already holds it, and the drain leaves offline and
    online equal (the case where PostgreSQL used to roll back a row Redis had taken)."""
    assert running_redis.process is not None
    pid = running_redis.process.pid
    now = datetime.now(UTC)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = _push(stores, view, running_redis.endpoint, [item_row(12, now, 12.5, 12)])
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (result.written_online, result.online) == (0, "pending")
    assert elapsed < 3.0  # two tries of the 0.5 s timeout, not a hang
    assert offline_count(stores, view) == 1
    assert _drain(stores, running_redis.endpoint).left == 0
    assert _outbox(stores) == []
    assert online_items(running_redis.endpoint, view, [12], project=PROJECT) == offline_newest(stores, view)
