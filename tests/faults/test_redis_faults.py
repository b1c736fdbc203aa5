"""Redis killed, stalled and talking nonsense under a running API (the suite's own redis-server): no 500,
degraded answers from PostgreSQL while Redis is away, healthy again within ~1 s of its return (the breaker's
back-off, TANDEM_REDIS_BACKOFF_S = 0.5). A push during an outage keeps its offline row, the drain writes it
online after, and the skew checker then finds no skew."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
from litestar.testing import TestClient
from pydantic import SecretStr

from consistency.checker import run_skew_check
from core.batch.materialize import run_materialize
from core.online.encoding import feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.online.store import OnlineStore
from core.push.drain import drain_outbox
from core.records.skew_models import SKEW_CLASSES
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.names import DEMO_MODEL
from tests.faults.answers import Answer, ask, figure, tally, until_recovered
from tests.faults.conftest import SpareRedis
from tests.integration.service_world import API_KEY, World
from tests.servers import free_port

RECOVERY_LIMIT_S = 1.0  # the 0.5 s back-off, one probe, on a loaded 2-core machine
HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture
def client(fault_world: World, running_redis: SpareRedis) -> Iterator[TestClient[Any]]:
    """A fresh app on the running spare Redis, answering healthy before the fault starts."""
    with TestClient(create_app(fault_world.settings)) as test_client:
        healthy = ask(test_client, 100)  # 100: no test pushes it, so its stored score is fresh
        assert (healthy.status, healthy.reason) == (200, "batch_fresh")
        yield test_client


def _during(client: TestClient[Any], seconds: float) -> list[Answer]:
    """Ask for `seconds` (entities 1..100 in turn)."""
    answers: list[Answer] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answers.append(ask(client, 1 + len(answers) % 100))
    return answers


def test_redis_killed_serves_degraded_then_recovers_within_a_second(
    client: TestClient[Any], running_redis: SpareRedis
) -> None:
    """SIGKILL: every answer while Redis is gone is a 200 from PostgreSQL (`online_unavailable`, degraded),
    none waits on Redis after the first; after a restart the answers are healthy within RECOVERY_LIMIT_S."""
    running_redis.kill()
    down = _during(client, 2.0)
    back = running_redis.start()
    recovery, after = until_recovered(client, since=back)
    figure(
        f"redis killed: {dict(tally(down))}, slowest {max(a.seconds for a in down) * 1000:.0f} ms; "
        f"recovered in {recovery * 1000:.0f} ms ({dict(tally(after))})"
    )
    assert {a.status for a in down + after} == {200}
    assert {a.reason for a in down} == {"online_unavailable"}
    assert max(a.seconds for a in down[1:]) < 0.5  # the breaker: no answer pays Redis's timeout again
    assert recovery <= RECOVERY_LIMIT_S


def test_redis_stalled_serves_degraded_then_recovers_within_a_second(
    client: TestClient[Any], running_redis: SpareRedis
) -> None:
    """SIGSTOP (connections open, nothing answers): answers are 200 `online_unavailable`; the request that
    trips the breaker pays one Redis timeout (0.5 s), not the timeout and a retry's (about 1 s before); after SIGCONT they are healthy within RECOVERY_LIMIT_S."""
    running_redis.pause()
    try:
        stalled = _during(client, 2.5)
    finally:
        running_redis.resume()
    back = time.monotonic()
    recovery, after = until_recovered(client, since=back)
    figure(
        f"redis stalled: {dict(tally(stalled))}, slowest {max(a.seconds for a in stalled) * 1000:.0f} ms; "
        f"recovered in {recovery * 1000:.0f} ms ({dict(tally(after))})"
    )
    assert {a.status for a in stalled + after} == {200}
    assert {a.reason for a in stalled} == {"online_unavailable"}
    assert max(a.seconds for a in stalled) < 0.9  # one 0.5 s timeout per back-off, never two, never a hang
    assert recovery <= RECOVERY_LIMIT_S


class _Nonsense:
    """A TCP server on a free port that answers every read with `reply` (not Redis's protocol, or the wrong
    shape), until stopped."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self.stopped.is_set():
                try:
                    if not conn.recv(65536):
                        return
                    conn.sendall(self.reply)
                except TimeoutError:
                    continue
                except OSError:
                    return

    def stop(self) -> None:
        """Stop accepting and answering."""
        self.stopped.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"\x00\xffHELLO garbage\r\n" * 3,
        b":1\r\n" * 64,
        b"-ERR nope\r\n" * 64,
        b"*2\r\n$3\r\nabc\r\n:7\r\n" * 32,
    ],
    ids=["bytes", "integers", "errors", "wrong-shape"],
)
def test_a_server_speaking_nonsense_never_gives_a_500(fault_world: World, reply: bytes) -> None:
    """The API's Redis URL points at a server that answers nonsense: readiness and every predict answer, GET
    and POST, are 200 (degraded, from PostgreSQL) or a declared 503: never a 500."""
    nonsense = _Nonsense(reply)
    settings = fault_world.settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{nonsense.port}/0")}
    )
    try:
        with TestClient(create_app(settings)) as client:
            answers = _during(client, 1.0)
            posted = client.post("/v1/predict", json={"entities": [{"customer_id": 1}, {"customer_id": 2}]})
            ready = client.get("/health/ready")
    finally:
        nonsense.stop()
    figure(
        f"nonsense {reply[:12]!r}: {dict(tally(answers))}, POST {posted.status_code}, ready {ready.status_code}"
    )
    assert {a.status for a in answers} <= {200, 503}
    assert 500 not in {posted.status_code, ready.status_code}
    degraded = [a for a in answers if a.status == 200]
    assert {a.reason for a in degraded} <= {"online_unavailable"}


def test_non_feast_bytes_in_a_key_never_give_a_500(
    client: TestClient[Any], fault_world: World, running_redis: SpareRedis
) -> None:
    """A real Redis holding garbage in one entity's hash (timestamp and feature fields): the requests that
    read that hash are answered from PostgreSQL (200, degraded), never a 500; the breaker stays closed, so a
    request for other entities right after is served from Redis as before."""
    entity = 117
    key = encode_entity_keys(
        join_key="customer_id",
        entity_ids=np.array([entity], dtype=np.int64),
        project=fault_world.settings.feast_project,
    )[0]
    fields = [timestamp_field("customer_profile"), feature_field("customer_profile", "account_age_days")]
    raw = redis.Redis(port=running_redis.port)
    saved = raw.hgetall(key)  # type: ignore[arg-type]  # redis-py annotates str; bytes keys work
    try:
        raw.hset(key, mapping=dict.fromkeys(fields, b"\xff\xfenot feast\x00"))  # type: ignore[arg-type]
        alone = client.get(f"/v1/predict/{DEMO_MODEL}", params={"customer_id": entity})
        among = client.post("/v1/predict", json={"entities": [{"customer_id": entity}, {"customer_id": 100}]})
        other = ask(client, 100)
    finally:
        raw.delete(key)
        raw.hset(key, mapping=saved)  # type: ignore[arg-type]  # bytes keys work
        raw.close()
    reasons = [item["reason"] for item in among.json()["predictions"]]
    figure(
        f"garbage key: GET {alone.status_code} {alone.json()['reason']}; POST {among.status_code} {reasons}"
    )
    assert (alone.status_code, alone.json()["reason"], alone.json()["degraded"]) == (
        200,
        "online_unavailable",
        True,
    )
    assert among.status_code == 200
    assert reasons == ["online_unavailable", "online_unavailable"]  # one bad hash degrades its whole request
    assert (other.status, other.reason) == (200, "batch_fresh")


def _push_row(entity: int, when: datetime) -> dict[str, object]:
    return {
        "customer_id": entity,
        "event_timestamp": when.isoformat(),
        "txn_count_24h": 7,
        "txn_amount_24h": 700.5,
        "max_amount_24h": 300.25,
        "txn_count_7d": 21,
        "avg_amount_30d": 55.5,
        "foreign_txn_ratio_7d": 0.25,
        "distinct_merchants_7d": 9,
    }


def _drain(stores: Stores, project: str) -> int:
    online = OnlineStore.connect(stores.redis, project=project, timeout_s=2.0)
    try:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            report = drain_outbox(conn, online)
    finally:
        online.close()
    assert report.left == 0, report.error
    return report.drained


def test_push_during_an_outage_is_kept_then_repaired_and_shows_no_skew(
    client: TestClient[Any], fault_world: World, fault_stores: Stores, running_redis: SpareRedis
) -> None:
    """Redis killed: pushes answer 200 `online: pending` and their offline rows are committed; Redis back,
    the outbox drain writes them online; after materializing, the skew checker over every entity counts 0
    skewed (entity, feature) pairs."""
    running_redis.kill()
    entities = [21, 22, 23]
    pushed = [
        client.post(
            "/v1/push/customer_txn_stats_push",
            json={"rows": [_push_row(e, datetime.now(UTC))]},
            headers=HEADERS,
        )
        for e in entities
    ]
    assert [p.status_code for p in pushed] == [200, 200, 200], [p.text for p in pushed]
    assert {p.json()["online"] for p in pushed} == {"pending"}
    with psycopg.connect(fault_stores.postgres.url()) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM features.customer_txn_stats WHERE customer_id = ANY(%s) AND txn_count_24h = 7",
            (entities,),
        ).fetchone()
    assert kept == (3,)

    running_redis.start()
    assert _drain(fault_stores, fault_world.settings.feast_project) >= 1
    time.sleep(1.1)  # past the API's back-off
    assert {ask(client, e, mode="auto").reason for e in entities} == {"features_newer"}
    run_materialize(fault_world.settings, fault_stores)
    report = run_skew_check(fault_world.settings, fault_stores, model_name=DEMO_MODEL, all_entities=True)
    counts = report.summary["counts"]
    figure(f"skew after repair: {counts}")
    assert sum(counts.get(name, 0) for name in SKEW_CLASSES) == 0
    assert counts["match"] > 0
