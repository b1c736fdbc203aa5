"""Run the stream consumer: connect, consume until stopped, finish the batch in hand, close.

`run_stream` blocks until `stop` is set (SIGTERM/SIGINT in the entry points): the consumer finishes and
acknowledges its current micro-batch and returns 0. The writer, the broker's consumer and the stores are
built here, the one wiring place; `on_committed` (streaming inference) and `views` (tests) are injected.
`python -m streaming [--broker redis|nats]` is the plain entry point.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

import psycopg
import redis

from core.features.specs import ViewSpec
from core.online.store import OnlineStore
from core.push.service import PushPolicy
from core.settings import Settings
from core.stores.resolve import Stores, resolve_stores
from streaming.nats_consumer import NatsOptions, NatsStreamConsumer
from streaming.redis_consumer import RedisStreamConsumer, StreamOptions
from streaming.views import RegistryPushViews
from streaming.writer import OnCommitted, StreamWriter, ignore_committed

__all__ = ["consumer_name", "install_stop_signals", "main", "run_stream"]

logger = logging.getLogger(__name__)


def consumer_name(settings: Settings) -> str:
    """This process's consumer name: the setting, else host-pid."""
    return settings.stream_consumer or f"{socket.gethostname()}-{os.getpid()}"


def run_stream(
    settings: Settings,
    stores: Stores,
    *,
    broker: str | None = None,
    stop: threading.Event,
    on_committed: OnCommitted = ignore_committed,
    views: Mapping[str, ViewSpec] | Callable[[str], ViewSpec | None] | None = None,
    notify: Callable[[str], None] = logger.info,
) -> int:
    """Consume events from `broker` (default: the setting) until `stop`; returns 0."""
    broker = broker or settings.stream_broker
    find = (
        views
        if views is not None
        else RegistryPushViews(settings, stores, poll_s=settings.stream_views_poll_s)
    )
    rescorer = None
    if on_committed is ignore_committed and settings.stream_rescore:  # streaming inference, unless injected
        from core.rescore.connect import connect_rescorer

        rescorer = connect_rescorer(settings, stores)
        rescorer.start()
        on_committed = rescorer.on_committed
        notify(f"stream: re-scoring changed entities of {len(rescorer.targets)} model(s) as events arrive")
    online = OnlineStore.connect(stores.redis, project=settings.feast_project, timeout_s=10.0)
    stream = settings.stream_name if broker == "redis" else settings.stream_nats_stream
    writer = StreamWriter(
        lambda: psycopg.connect(stores.postgres.url(), connect_timeout=5),
        online,
        find,
        broker=broker,
        stream=stream,
        policy=PushPolicy.from_settings(settings),
        on_committed=on_committed,
        seen_keep_s=settings.stream_seen_keep_s,
    )
    consumer: RedisStreamConsumer | NatsStreamConsumer
    client: redis.Redis | None = None
    if broker == "redis":
        client = redis.Redis.from_url(stores.redis.url(), socket_timeout=30, socket_connect_timeout=5)
        consumer = RedisStreamConsumer(client, writer, redis_options(settings))
        where = f"Redis stream {settings.stream_name}, group {settings.stream_group}"
    elif broker == "nats":
        consumer = NatsStreamConsumer(writer, nats_options(settings))
        where = f"JetStream {settings.stream_nats_stream} on {settings.stream_nats_url}, durable {settings.stream_group}"
    else:
        raise ValueError(f"unknown broker {broker!r}: redis or nats")
    notify(f"stream: consuming {where} as {consumer_name(settings)} (pid {os.getpid()})")
    # Everything alive now (Feast's registry objects above all) leaves the collector's sight: full
    # collections over it cost milliseconds and, every few batches, most of a micro-batch's time.
    gc.collect()
    gc.freeze()
    try:
        consumer.run(stop)
    finally:
        writer.close()
        online.close()
        if client is not None:
            client.close()
        if rescorer is not None:
            rescorer.close()  # flushes what the last batches touched
    notify("stream: stopped; every batch read was written and acknowledged")
    return 0


def redis_options(settings: Settings) -> StreamOptions:
    """The Redis consumer's options from the settings."""
    return StreamOptions(
        stream=settings.stream_name,
        group=settings.stream_group,
        consumer=consumer_name(settings),
        dead_letters=settings.stream_dead_letters,
        batch=settings.stream_batch,
        block_ms=settings.stream_block_ms,
        claim_idle_ms=settings.stream_claim_idle_ms,
    )


def nats_options(settings: Settings) -> NatsOptions:
    """The NATS consumer's options from the settings."""
    return NatsOptions(
        url=settings.stream_nats_url,
        stream=settings.stream_nats_stream,
        subjects=settings.stream_nats_subjects,
        durable=settings.stream_group,
        batch=settings.stream_batch,
        block_ms=settings.stream_block_ms,
        claim_idle_ms=settings.stream_claim_idle_ms,
    )


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` (call from the main thread)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def start_metrics(settings: Settings, port: int | None = None) -> Any:
    """Serve /metrics on the stream's port (0: off); returns the server, or None (off, or the port is taken)."""
    from prometheus_client import start_http_server

    chosen = settings.stream_metrics_port if port is None else port
    if not chosen:
        return None
    try:
        return start_http_server(chosen, addr=settings.stream_metrics_host)
    except OSError as exc:  # another consumer on this host has the port: consume anyway, without /metrics
        logger.warning(
            "stream: /metrics not served (%s:%d: %s); set TANDEM_STREAM_METRICS_PORT per process",
            settings.stream_metrics_host,
            chosen,
            exc.strerror or exc,
        )
        return None


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m streaming [--broker redis|nats]`: settings from the environment."""
    parser = argparse.ArgumentParser(prog="python -m streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["redis", "nats"], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    settings = Settings()
    stop = threading.Event()
    install_stop_signals(stop)
    start_metrics(settings)
    sys.exit(run_stream(settings, resolve_stores(settings), broker=args.broker, stop=stop))
