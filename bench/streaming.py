"""Streaming inference, measured: events at a fixed rate and the API under load at the same time, with
and without stream re-score (issue 12, part 5).

    .venv/bin/python -m bench.streaming [--entities 200000] [--rate 5000] [--duration 20] [--workers 1,2]
        [--consumers 1] [--connections 16] [--probes 20] [--burst 50000]

One throw-away database and Feast project (bench.common.bench_stores): demo data seeded and materialized,
a model trained and promoted. Then per mode (`off`: TANDEM_STREAM_RESCORE=false | `on`: the default) and
per API worker count, from a fresh batch run each time:

- `tandem stream` process(es) on a private Redis stream, `tandem serve --workers W`;
- a producer process XADDs `--rate` events a second (push source `customer_txn_stats_push`, random
  customers 1..N, event time = now) for `--warmup` + `--duration` seconds;
- during the last `--duration` seconds: wrk POSTs `/v1/predict` for random customers (mode auto) and counts
  the answers whose source is `live`; a prober XADDs `--probes` events a second of its own (part of the rate)
  and polls the API (mode `batch`: the stored score) until the stored score's `customer_txn_stats` event time
  covers the event's: event -> fresh stored score, from just before the XADD (percentiles over every probe,
  one not fresh after `--give-up` seconds counting as later than that);
- ingestion: the consumer group's acknowledged entries over the window (XINFO GROUPS), and its lag at the end;
- then, API idle, a burst of `--burst` events XADDed at once, timed until the group's lag and pending are 0:
  what the consumer(s) ingest when not paced, with the mode's re-score running.

Needs `wrk` (Debian package `wrk`), as bench/serve.py. With requests spread evenly over N customers, the share
of live answers with re-score on is about rate x (event -> stored score latency) / N: the entities whose
newest event is online but not yet re-scored.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import random
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, print_table
from bench.http_load import free_port, get_ok, require_wrk, server, wait_ready
from bench.serve_world import BASE_ENV, BIN, ROOT, prepare
from bench.stream_load import (
    WRK_LIVE_LUA,
    Freshness,
    GroupCounters,
    LiveLoad,
    event_json,
    group_counters,
    probe_freshness,
    produce,
    wrk_live,
)
from core.batch.predict import run_batch_predict
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.names import DEMO_MODEL

GROUP = "tandem"


def _wait_group(client: redis.Redis, stream: str, *, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        groups: Any = client.xinfo_groups(stream) if client.exists(stream) else []
        if any(g["name"] in (GROUP, GROUP.encode()) for g in groups):
            return
        time.sleep(0.1)
    raise RuntimeError("tandem stream did not create its consumer group in time")


def _drain(client: redis.Redis, stream: str, *, timeout_s: float = 300) -> float:
    """Seconds until the group has read and acknowledged everything in the stream."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        counters = group_counters(client, stream, GROUP)
        if counters.lag == 0 and counters.pending == 0:
            return counters.at - started
        time.sleep(0.01)
    raise RuntimeError("the consumers did not drain the burst in time")


def _burst(client: redis.Redis, stream: str, count: int, entities: int) -> float:
    """`count` events XADDed as fast as pipelines go; seconds from the first XADD until all are ingested."""
    rng = random.Random(99)
    events = [event_json(rng.randint(1, entities), rng) for _ in range(count)]
    started = time.perf_counter()
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for event in events[start : start + 5000]:
            pipe.xadd(stream, {"event": event})
        pipe.execute()
    _drain(client, stream)
    return time.perf_counter() - started


def run_mode(
    args: argparse.Namespace, settings: Settings, stores: Stores, logs: Path, *, rescore: bool, workers: int
) -> dict[str, Any]:
    """One mode, one worker count: fresh batch run, children up, paced events + load + probes, burst."""
    run = run_batch_predict(settings, stores, model_name=DEMO_MODEL)  # every mode starts from a fresh run
    tag = f"{'on' if rescore else 'off'}{workers}-{uuid.uuid4().hex[:6]}"
    stream = f"bench:events:{tag}"
    env = {
        **BASE_ENV,
        "TANDEM_POSTGRES_URL": stores.postgres.url(),
        "TANDEM_REDIS_URL": stores.redis.url(),
        "TANDEM_FEAST_PROJECT": settings.feast_project,
        "TANDEM_STREAM_NAME": stream,
        "TANDEM_STREAM_DEAD_LETTERS": f"{stream}:dead",
        "TANDEM_STREAM_GROUP": GROUP,
        "TANDEM_STREAM_METRICS_PORT": "0",
        "TANDEM_STREAM_RESCORE": "true" if rescore else "false",
        "TANDEM_MODEL_SIGNING_KEY": os.environ["TANDEM_MODEL_SIGNING_KEY"],
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    client = redis.Redis.from_url(stores.redis.url(), decode_responses=True)
    port = free_port()
    script = logs / "live.lua"
    script.write_text(WRK_LIVE_LUA)
    with contextlib.ExitStack() as running:  # unwound in reverse: the API, the consumers, then the stream
        running.callback(client.close)
        running.callback(client.delete, stream, f"{stream}:dead")
        for n in range(args.consumers):
            running.enter_context(
                server([str(BIN / "tandem"), "stream"], env=env, cwd=ROOT, log=logs / f"stream-{tag}-{n}.log")
            )
        running.enter_context(
            server(
                [str(BIN / "tandem"), "serve", "--workers", str(workers), "--port", str(port)],
                env=env, cwd=ROOT, log=logs / f"serve-{tag}.log",
            )
        )  # fmt: skip
        wait_ready(port, get_ok("/health/ready"), timeout_s=90)
        _wait_group(client, stream)
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        producer = context.Process(
            target=produce,
            args=(
                stores.redis.url(), stream, args.rate - args.probes, args.warmup + args.duration + 1,
                args.entities, 1, out,
            ),
        )  # fmt: skip
        producer.start()
        time.sleep(args.warmup)
        loads: list[LiveLoad] = []
        ends: list[GroupCounters] = []

        def load_then_count() -> None:
            loads.append(
                wrk_live(
                    port, script=script, lo=1, hi=args.entities, threads=args.threads,
                    connections=args.connections, seconds=args.duration,
                )
            )  # fmt: skip
            with redis.Redis.from_url(stores.redis.url()) as own:  # this thread's connection
                ends.append(group_counters(own, stream, GROUP))

        load = threading.Thread(target=load_then_count)
        before = group_counters(client, stream, GROUP)
        load.start()
        fresh: Freshness = probe_freshness(
            client, stream, port, entities=args.entities, per_second=args.probes,
            seconds=args.duration, give_up_s=args.give_up, seed=2,
        )  # fmt: skip
        load.join()
        sent, produced_s = out.get(timeout=30)
        producer.join()
        after = ends[0]  # when the load ended
        _drain(client, stream)
        burst_s = _burst(client, stream, args.burst, args.entities) if args.burst else float("nan")
    ingested = after.acknowledged - before.acknowledged
    window = after.at - before.at
    return {
        "mode": "re-score on" if rescore else "re-score off",
        "workers": workers,
        "batch_rows": run.rows,
        "offered": sent / produced_s + args.probes,
        "load": loads[0],
        "fresh": fresh,
        "ingested_per_s": ingested / window,
        "lag_end": after.lag,
        "burst_per_s": args.burst / burst_s if args.burst else float("nan"),
    }


def _pct(fresh: Freshness, q: float, give_up_s: float) -> str:
    """Nearest-rank percentile over every probe, a probe never fresh counting as later than `give_up_s`."""
    ranked = sorted(fresh.seconds) + [float("inf")] * fresh.never
    if not ranked:
        return "-"
    value = ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]
    return f"{value:.2f}" if math.isfinite(value) else f"> {give_up_s:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5_000, help="events a second, probes included")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per mode")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of events before the load")
    parser.add_argument("--workers", default="1,2", help="API worker counts, comma-separated")
    parser.add_argument("--modes", default="off,on", help="re-score modes, comma-separated")
    parser.add_argument("--consumers", type=int, default=1, help="`tandem stream` processes")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probes", type=float, default=20.0, help="freshness probes a second")
    parser.add_argument("--give-up", type=float, default=8.0, help="seconds before a probe counts as never")
    parser.add_argument("--burst", type=int, default=50_000, help="events of the unpaced burst (0: none)")
    args = parser.parse_args()
    require_wrk()
    results = []
    # models are signed: this run's own key unless one is set (never printed, never stored)
    os.environ.setdefault("TANDEM_MODEL_SIGNING_KEY", secrets.token_hex(32))
    with bench_stores() as (settings, stores), tempfile.TemporaryDirectory(prefix="tandem-stream-") as tmp:
        mark = time.perf_counter()
        prepare(settings, stores, entities=args.entities, days=args.days)
        print(f"prepared {args.entities:,} entities in {time.perf_counter() - mark:.1f} s", flush=True)
        for mode in args.modes.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                result = run_mode(args, settings, stores, Path(tmp), rescore=mode == "on", workers=workers)
                load, fresh = result["load"], result["fresh"]
                print(
                    f"{result['mode']}, {workers} worker(s): {load.rps:,.0f} rps p99 {load.p99_ms:.1f} ms, "
                    f"live {load.live}/{load.answered}, fresh {len(fresh.seconds)} never {fresh.never}, "
                    f"ingested {result['ingested_per_s']:,.0f}/s, burst {result['burst_per_s']:,.0f}/s",
                    flush=True,
                )
                results.append(result)
    print_table(
        f"{args.rate:,.0f} events/s offered over {args.entities:,} customers, {args.consumers} `tandem stream` "
        f"process(es), wrk -t{args.threads} -c{args.connections} for {args.duration} s on random customers",
        [
            "mode", "API workers", "answers live", "API rps", "API p50 ms", "API p99 ms",
            "event->stored p50 s", "event->stored p99 s", "probes never fresh", "events/s offered",
            "events/s ingested", "lag at end", "burst events/s",
        ],
        [
            (
                r["mode"], r["workers"],
                f"{100 * r['load'].live / max(1, r['load'].answered):.2f}% ({r['load'].live:,}/{r['load'].answered:,})",
                f"{r['load'].rps:,.0f}", f"{r['load'].p50_ms:.2f}", f"{r['load'].p99_ms:.2f}",
                _pct(r["fresh"], 50, args.give_up), _pct(r["fresh"], 99, args.give_up),
                f"{r['fresh'].never}/{r['fresh'].never + len(r['fresh'].seconds)}",
                f"{r['offered']:,.0f}", f"{r['ingested_per_s']:,.0f}", f"{r['lag_end']:,}",
                f"{r['burst_per_s']:,.0f}",
            )
            for r in results
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
