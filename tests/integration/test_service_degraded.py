"""Degraded, not down: Redis unreachable serves stored scores from PostgreSQL; PostgreSQL unreachable keeps
the live path answering; both down is a 503 with a message; readiness says which store is down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from core.endpoints import RedisEndpoint
from core.online.async_store import AsyncOnlineStore
from core.online.breaker import BreakerTransport
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool
from core.serving.stored import PgStoredScores
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from service.state import Services
from tests.integration.service_world import World, build_world
from tests.servers import free_port


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """Seeded, materialized, a promoted model and a published batch run."""
    return build_world(settings, stores, engine, customers=120)


@pytest.fixture
def client(world: World) -> Iterator[TestClient[Any]]:
    """A fresh app per test: these tests break its connections on purpose."""
    with TestClient(create_app(world.settings)) as test_client:
        yield test_client


def _kill_redis(services: Services) -> None:
    """Point the worker's one online store (reads, pushes, pings: shared by every model) at a port nobody
    listens on."""
    online = services.models.get("customer_risk").online
    assert isinstance(online, AsyncOnlineStore)
    online.transport = Coalescer(RespPool(RedisEndpoint("127.0.0.1", free_port()), timeout_s=0.5))


def _kill_postgres(client: TestClient[Any]) -> None:
    """Close the worker's PostgreSQL pool (shared by every model): every later use fails."""
    stored = client.app.state.tandem.models.get("customer_risk").stored
    assert isinstance(stored, PgStoredScores)
    client.blocking_portal.call(stored.pool.close)


def test_redis_down_serves_stored_scores_from_postgres(client: TestClient[Any], world: World) -> None:
    """Redis unreachable: every answer is the stored score from PostgreSQL, degraded, online_unavailable."""
    _kill_redis(client.app.state.tandem)
    response = client.post("/v1/predict", json={"entities": [{"customer_id": 1}, {"customer_id": 2}]})
    assert response.status_code == 200, response.text
    for item in response.json()["predictions"]:
        assert (item["source"], item["reason"], item["degraded"]) == ("batch", "online_unavailable", True)
        assert item["batch_run_id"] == str(world.run.run_id)
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "down"
    assert ready.json()["degraded"] is True
    unknown = client.get("/v1/predict/customer_risk", params={"customer_id": 999999})
    assert unknown.status_code == 503
    assert "Redis is unreachable" in unknown.json()["detail"]


def test_redis_down_from_the_start_still_serves(world: World) -> None:
    """Started while Redis is unreachable: the app comes up, degraded, and answers from PostgreSQL."""
    settings = world.settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")}
    )
    with TestClient(create_app(settings)) as client:
        item = client.get("/v1/predict/customer_risk", params={"customer_id": 3}).json()
        assert (item["source"], item["reason"]) == ("batch", "online_unavailable")
        assert client.get("/health/ready").json()["redis"] == "down"


def test_postgres_down_keeps_the_live_path(client: TestClient[Any]) -> None:
    """PostgreSQL unreachable (pool closed): predictions keep coming from Redis and the loaded model."""
    _kill_postgres(client)
    live = client.get("/v1/predict/customer_risk", params={"customer_id": 4, "mode": "live"})
    assert live.status_code == 200, live.text
    assert live.json()["source"] == "live"
    fresh = client.get("/v1/predict/customer_risk", params={"customer_id": 5})
    assert fresh.json()["source"] == "batch"
    ready = client.get("/health/ready").json()
    assert ready["postgresql"] == "down"
    assert ready["ready"] is True


def test_both_stores_down_is_503_with_a_message(client: TestClient[Any]) -> None:
    """Neither store answers: 503 naming both, and readiness is 503."""
    _kill_postgres(client)
    _kill_redis(client.app.state.tandem)
    response = client.get("/v1/predict/customer_risk", params={"customer_id": 6})
    assert response.status_code == 503
    assert "both stores are unreachable" in response.json()["detail"]
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "both stores" in ready.json()["detail"]


def test_a_redis_failure_is_paid_once_then_skipped_until_the_back_off_ends(
    client: TestClient[Any], stores: Stores
) -> None:
    """After one timeout the breaker skips Redis: the next answers are degraded at once (no 0.5 s each), and
    Redis is asked again once the back-off is over."""
    services = client.app.state.tandem
    online = services.models.get("customer_risk").online
    assert isinstance(online, AsyncOnlineStore)
    dead = Coalescer(RespPool(RedisEndpoint("127.0.0.1", free_port()), timeout_s=0.5))
    online.transport = breaker = BreakerTransport(dead, backoff_s=1.0)
    params = {"customer_id": 3}
    first = client.get("/v1/predict/customer_risk", params=params)
    assert first.json()["reason"] == "online_unavailable"
    assert breaker.is_open
    started = time.perf_counter()
    for _ in range(20):
        assert client.get("/v1/predict/customer_risk", params=params).json()["reason"] == "online_unavailable"
    assert time.perf_counter() - started < 1.0  # 20 answers without waiting on Redis
    time.sleep(1.05)
    breaker.inner = Coalescer(RespPool(stores.redis, timeout_s=0.5))  # Redis is back
    assert client.get("/v1/predict/customer_risk", params=params).json()["reason"] == "batch_fresh"
    assert not breaker.is_open


def test_pushes_cannot_take_the_connections_degraded_answers_need(client: TestClient[Any]) -> None:
    """Every connection of the push pool held (a burst of pushes) and Redis down: predictions still come
    from PostgreSQL through the read pool."""
    services = client.app.state.tandem
    push_pool = services.push.offline.appender.pool
    read_pool = services.models.get("customer_risk").stored.pool
    assert push_pool is not read_pool
    _kill_redis(services)
    held = [client.blocking_portal.call(push_pool.getconn) for _ in range(push_pool.max_size)]
    try:
        answer = client.get("/v1/predict/customer_risk", params={"customer_id": 3})
        assert answer.status_code == 200, answer.text
        assert answer.json()["reason"] == "online_unavailable"
    finally:
        for conn in held:
            client.blocking_portal.call(push_pool.putconn, conn)
