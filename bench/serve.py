"""Serving benchmark: Tandem's `/v1/predict` vs a bare Litestar endpoint vs `feast serve`, in one run.

    .venv/bin/python bench/serve.py [--entities 20000] [--workers 2] [--connections 32] [--threads 2]
                                    [--duration 15] [--warmup 3] [--rounds 3]

One throw-away database and Feast project (bench.common.bench_stores): demo data seeded and materialized,
a model trained and promoted, a batch run published. Then, with the same load tool (wrk, a Lua script that
POSTs one random entity per request), the same worker count and the same concurrency for every target:

- `bare litestar`: bench/serve_targets.py, one POST route returning a fixed JSON, same uvicorn options;
- `tandem batch-hit`: `tandem serve`, entities whose stored score is fresh (reason `batch_fresh`);
- `tandem live (features newer)`: entities that got a newer `customer_txn_stats` row through
  `POST /v1/push/customer_txn_stats_push` after the batch run (reason `features_newer`, re-scored live);
- `feast serve`: `/get-online-features` on the same feature service (`--max-requests 0`).

Targets run in `--rounds` rounds (order rotated each round, a warm-up before each measurement); the tables
quote the median round. Also measured: cold start of `tandem serve` to a 200 on `/health/ready` (polled
every 20 ms), the first `/v1/predict` after that against steady sequential latency, and the client-side
latency of 500 sequential one-row pushes (offline + online).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, median, print_table
from core.batch_predict import run_batch_predict
from core.database import create_db_engine, upgrade_schema
from core.demo_data import seed_demo_data
from core.feast_repo import apply_feature_repo, feast_env, open_feature_store
from core.model_registry import promote, register_model
from core.runtime import Stores
from core.settings import Settings
from core.training import train_model

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE_ENV = dict(os.environ)  # before Feast is imported: it sets PROMETHEUS_MULTIPROC_DIR for itself
PUSH_SOURCE = "customer_txn_stats_push"

WRK_LUA = r"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  lo = tonumber(args[1])
  hi = tonumber(args[2])
  kind = args[3]
  service = args[4]
  math.randomseed(os.time() + 7919 * tid)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local id = math.random(lo, hi)
  local body
  if kind == "feast" then
    body = '{"feature_service":"' .. service .. '","entities":{"customer_id":[' .. id .. ']}}'
  else
    body = '{"entities":[{"customer_id":' .. id .. '}]}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk measurement."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Target:
    """A server under load: where to POST and which ids to ask for."""

    name: str
    port: int
    path: str
    lo: int
    hi: int
    kind: str  # "tandem" (also the bare app) or "feast": the body shape


@dataclass(frozen=True)
class ColdStart:
    """One fresh `tandem serve`: seconds to ready, the first request, then steady sequential latency."""

    ready_s: float
    first_ms: float
    steady_p50_ms: float
    steady_p99_ms: float


# --------------------------------------------------------------------------------------------- world


def _prepare(settings: Settings, stores: Stores, *, entities: int, days: int) -> str:
    """Schema, Feast repo, demo data materialized, a promoted model and a published batch run (its id)."""
    engine = create_db_engine(stores.postgres)
    upgrade_schema(engine)
    apply_feature_repo(settings, stores)
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=entities, days=days, seed=1, end=end)
        conn.execute(
            "CREATE TABLE features.bench_labels AS SELECT * FROM features.fraud_labels ORDER BY customer_id LIMIT 20000"
        )
    store = open_feature_store(settings, stores)
    store.materialize(start_date=end - timedelta(days=days + 1), end_date=now)
    trained = train_model(store, settings, engine=engine, label_table="features.bench_labels")
    with Session(engine) as session, session.begin():
        info = register_model(
            session, model_name=settings.model_name, estimator=trained.estimator, feature_service=trained.feature_service,
            feature_refs=trained.feature_refs, training_start=trained.training_start, training_end=trained.training_end,
            metrics=trained.metrics, params=trained.params,
        )  # fmt: skip
        promote(session, model_name=settings.model_name, version=info.version)
    engine.dispose()
    return str(run_batch_predict(settings, stores).run_id)


# ------------------------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(command: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[int]:
    """Start a server in its own process group; on exit SIGTERM that group (ours), SIGKILL if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and tools, fixed arguments
            list(command), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, float]:
    """(status, decoded JSON body, seconds) of one request on a keep-alive connection."""
    payload = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    seconds = time.perf_counter() - started
    try:
        decoded = json.loads(data) if data else None
    except json.JSONDecodeError:
        decoded = data.decode(errors="replace")
    return response.status, decoded, seconds


def _wait_ready(port: int, probe: Callable[[http.client.HTTPConnection], bool], *, timeout_s: float) -> float:
    """Seconds until `probe` answers True, polling every 20 ms on a fresh connection each time."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            if probe(conn):
                return time.perf_counter() - started
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} not ready after {timeout_s:.0f} s")


def _get_ok(path: str) -> Callable[[http.client.HTTPConnection], bool]:
    return lambda conn: _request(conn, "GET", path)[0] == 200


def _post_ok(path: str, body: object) -> Callable[[http.client.HTTPConnection], bool]:
    return lambda conn: _request(conn, "POST", path, body)[0] == 200


# ---------------------------------------------------------------------------------------------- load


def _wrk(
    target: Target, *, script: Path, threads: int, connections: int, seconds: float, service: str
) -> Load:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{target.port}{target.path}",
        "--", str(target.lo), str(target.hi), target.kind, service,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    report = json.loads(line.removeprefix("WRKJSON "))
    return Load(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        requests=report["requests"],
        errors=report["errors"],
    )


def _median_load(loads: Sequence[Load]) -> Load:
    return Load(
        rps=median([x.rps for x in loads]),
        p50_ms=median([x.p50_ms for x in loads]),
        p99_ms=median([x.p99_ms for x in loads]),
        requests=sum(x.requests for x in loads),
        errors=sum(x.errors for x in loads),
    )


# ----------------------------------------------------------------------------------------- measures


def _predict_body(customer_id: int) -> dict[str, Any]:
    return {"entities": [{"customer_id": customer_id}]}


def _push_row(customer_id: int, when: datetime, rng: random.Random) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "event_timestamp": when.isoformat(),
        "txn_count_24h": rng.randint(0, 40),
        "txn_amount_24h": round(rng.uniform(0, 9000), 2),
        "max_amount_24h": round(rng.uniform(0, 4000), 2),
        "txn_count_7d": rng.randint(0, 90),
        "avg_amount_30d": round(rng.uniform(5, 300), 2),
        "foreign_txn_ratio_7d": round(rng.random(), 3),
        "distinct_merchants_7d": rng.randint(0, 30),
    }


def _cold_start(
    env: dict[str, str], *, workers: int, batch_ids: tuple[int, int], steady: int, log: Path
) -> ColdStart:
    """Spawn `tandem serve`, time it to ready, then the first predict and `steady` more on one connection."""
    port = _free_port()
    command = [str(BIN / "tandem"), "serve", "--workers", str(workers), "--port", str(port)]
    rng = random.Random(port)
    with _server(command, env=env, cwd=ROOT, log=log):
        ready_s = _wait_ready(port, _get_ok("/health/ready"), timeout_s=60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, _, first = _request(conn, "POST", "/v1/predict", _predict_body(rng.randint(*batch_ids)))
        if status != 200:
            raise RuntimeError(f"first request answered {status}")
        times = [
            _request(conn, "POST", "/v1/predict", _predict_body(rng.randint(*batch_ids)))[2]
            for _ in range(steady)
        ]
        conn.close()
    return ColdStart(
        ready_s=ready_s,
        first_ms=first * 1000,
        steady_p50_ms=float(np.percentile(times, 50)) * 1000,
        steady_p99_ms=float(np.percentile(times, 99)) * 1000,
    )


def _push_many(port: int, key: str, ids: Sequence[int], *, chunk: int = 1000) -> None:
    """Newer customer_txn_stats rows for `ids` through the push endpoint, `chunk` rows a request."""
    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for start in range(0, len(ids), chunk):
        now = datetime.now(UTC)
        rows = [_push_row(i, now, rng) for i in ids[start : start + chunk]]
        status, body, _ = _request(
            conn, "POST", f"/v1/push/{PUSH_SOURCE}", {"rows": rows}, headers={"X-API-Key": key}
        )
        if status != 200:
            raise RuntimeError(f"push answered {status}: {body}")
    conn.close()


def _push_latency(port: int, key: str, ids: Sequence[int], *, count: int) -> list[float]:
    """Seconds per one-row push, `count` sequential pushes on one keep-alive connection (after 20 warm-ups)."""
    rng = random.Random(11)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for n in range(count + 20):
        row = _push_row(ids[n % len(ids)], datetime.now(UTC), rng)
        status, body, seconds = _request(
            conn, "POST", f"/v1/push/{PUSH_SOURCE}", {"rows": [row]}, headers={"X-API-Key": key}
        )
        if status != 200 or body.get("written_online") != 1:
            raise RuntimeError(f"push answered {status}: {body}")
        if n >= 20:
            times.append(seconds)
    conn.close()
    return times


def _check_reason(port: int, customer_id: int, expected: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, body, _ = _request(conn, "POST", "/v1/predict", _predict_body(customer_id))
    conn.close()
    item: dict[str, Any] = body["predictions"][0] if status == 200 else {}
    if item.get("reason") != expected:
        raise RuntimeError(f"customer {customer_id}: expected reason {expected}, got {status} {body}")
    return item


def _check_feast(port: int, service: str, customer_id: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = {"feature_service": service, "entities": {"customer_id": [customer_id]}}
    status, answer, _ = _request(conn, "POST", "/get-online-features", body)
    conn.close()
    if status != 200:
        raise RuntimeError(f"feast serve answered {status}: {answer}")
    names = answer["metadata"]["feature_names"]
    present = [r["statuses"][0] for r in answer["results"]]
    if len(names) < 10 or present.count("PRESENT") != len(names):
        raise RuntimeError(f"feast serve: not every feature present for {customer_id}: {answer}")


# ---------------------------------------------------------------------------------------------- main


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    """Prepare the world, start the servers, load them in rounds, print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--live-entities", type=int, default=2_000, help="ids 1..N get newer pushed rows")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=500)
    args = parser.parse_args()
    live = (1, args.live_entities)
    batch = (args.live_entities + 1, args.entities)
    key = secrets.token_hex(16)  # this run only: never printed, never stored
    with bench_stores() as (settings, stores), tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        logs = Path(tmp)
        script = logs / "predict.lua"
        script.write_text(WRK_LUA)
        mark = time.perf_counter()
        run_id = _prepare(settings, stores, entities=args.entities, days=args.days)
        print(
            f"prepared {args.entities:,} entities, batch run {run_id}, in {time.perf_counter() - mark:.1f} s"
        )
        tandem_env = {
            **BASE_ENV,
            "TANDEM_POSTGRES_URL": stores.postgres.url(),
            "TANDEM_REDIS_URL": stores.redis.url(),
            "TANDEM_FEAST_PROJECT": settings.feast_project,
            "TANDEM_API_KEYS": key,
        }
        tandem_env.pop("PROMETHEUS_MULTIPROC_DIR", None)

        colds = []
        for n in range(args.cold_starts):
            cold = _cold_start(
                tandem_env, workers=args.workers, batch_ids=batch, steady=300, log=logs / f"cold{n}.log"
            )
            colds.append(cold)
            print(
                f"cold start {n + 1}: ready {cold.ready_s:.2f} s, first request {cold.first_ms:.1f} ms, "
                f"then p50 {cold.steady_p50_ms:.2f} / p99 {cold.steady_p99_ms:.2f} ms sequential"
            )

        ports = {name: _free_port() for name in ("bare", "tandem", "feast")}
        feast_environ = {**tandem_env, **feast_env(settings, stores)}
        w = str(args.workers)
        with (
            _server(
                [sys.executable, "-m", "bench.serve_targets", "--port", str(ports["bare"]), "--workers", w],
                env=tandem_env, cwd=ROOT, log=logs / "bare.log",
            ),
            _server(
                [str(BIN / "tandem"), "serve", "--workers", w, "--port", str(ports["tandem"])],
                env=tandem_env, cwd=ROOT, log=logs / "tandem.log",
            ),
            _server(
                [str(BIN / "feast"), "serve", "--host", "127.0.0.1", "--port", str(ports["feast"]),
                 "--workers", w, "--max-requests", "0", "--no-access-log"],
                env=feast_environ, cwd=ROOT / settings.feature_repo, log=logs / "feast.log",
            ),
        ):  # fmt: skip
            _wait_ready(ports["bare"], _post_ok("/v1/predict", _predict_body(1)), timeout_s=60)
            _wait_ready(ports["tandem"], _get_ok("/health/ready"), timeout_s=60)
            _wait_ready(ports["feast"], _get_ok("/health"), timeout_s=120)

            sample = random.Random(3).randint(*batch)
            fresh = _check_reason(ports["tandem"], sample, "batch_fresh")
            if fresh["batch_run_id"] != run_id:
                raise RuntimeError(f"served run {fresh['batch_run_id']}, expected {run_id}")
            mark = time.perf_counter()
            _push_many(ports["tandem"], key, list(range(live[0], live[1] + 1)))
            print(
                f"pushed newer rows for {args.live_entities:,} entities in {time.perf_counter() - mark:.1f} s"
            )
            for customer_id in random.Random(4).sample(range(live[0], live[1] + 1), 5):
                item = _check_reason(ports["tandem"], customer_id, "features_newer")
                if item["source"] != "live":
                    raise RuntimeError(f"features_newer not served live: {item}")
            _check_feast(ports["feast"], settings.feature_service, sample)
            print(
                f"checked: {sample} -> batch_fresh, pushed ids -> features_newer (live), feast serve answers"
            )

            targets = [
                Target("bare litestar", ports["bare"], "/v1/predict", 1, args.entities, "tandem"),
                Target("tandem batch-hit", ports["tandem"], "/v1/predict", *batch, "tandem"),
                Target("tandem live (features newer)", ports["tandem"], "/v1/predict", *live, "tandem"),
                Target("feast serve", ports["feast"], "/get-online-features", 1, args.entities, "feast"),
            ]
            loads: dict[str, list[Load]] = {t.name: [] for t in targets}

            def measure(target: Target, seconds: float) -> Load:
                return _wrk(
                    target, script=script, threads=args.threads, connections=args.connections,
                    seconds=seconds, service=settings.feature_service,
                )  # fmt: skip

            for r in range(args.rounds):
                for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
                    measure(target, args.warmup)
                    load = measure(target, args.duration)
                    loads[target.name].append(load)
                    print(
                        f"round {r + 1} {target.name}: {load.rps:,.0f} rps, p50 {load.p50_ms:.2f} ms, "
                        f"p99 {load.p99_ms:.2f} ms, errors {load.errors}"
                    )
            _check_reason(ports["tandem"], sample, "batch_fresh")  # the batch set stayed fresh throughout
            pushes = _push_latency(ports["tandem"], key, list(range(live[0], live[1] + 1)), count=args.pushes)

    result = {name: _median_load(runs) for name, runs in loads.items()}
    hit = result["tandem batch-hit"]
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s (+{args.warmup:.0f} s warm-up), "
        f"{args.workers} workers per server, one random entity per request, median of {args.rounds} rounds"
    )
    print_table(
        "load",
        ["target", "rps", "p50 ms", "p99 ms", "rps per round", "errors"],
        [
            [
                name,
                f"{x.rps:,.0f}",
                f"{x.p50_ms:.2f}",
                f"{x.p99_ms:.2f}",
                " / ".join(f"{run.rps:,.0f}" for run in loads[name]),
                x.errors,
            ]
            for name, x in result.items()
        ],
    )

    def paired(top: str, bottom: str, field: str) -> tuple[float, str]:
        """Median over rounds of top/bottom (each pair measured minutes apart at most), and every round's."""
        per_round = [
            getattr(a, field) / getattr(b, field) for a, b in zip(loads[top], loads[bottom], strict=True)
        ]
        return median(per_round), " / ".join(f"{x:.2f}" for x in per_round)

    hit_name, live_name = "tandem batch-hit", "tandem live (features newer)"
    specs = [
        ("batch-hit rps / feast serve rps", hit_name, "feast serve", "rps", ">= 10x", 10.0, True),
        ("batch-hit rps / bare rps", hit_name, "bare litestar", "rps", ">= 0.5x", 0.5, True),
        ("batch-hit p99 / bare p99", hit_name, "bare litestar", "p99_ms", "<= 2x", 2.0, False),
        ("live rps / batch-hit rps", live_name, hit_name, "rps", ">= 0.6x", 0.6, True),
    ]
    ratios = []
    for label, top, bottom, field, goal, bound, at_least in specs:
        value, rounds = paired(top, bottom, field)
        ratios.append([label, f"{value:.2f}x", rounds, goal, value >= bound if at_least else value <= bound])
    print_table(
        "ratios (median of the per-round ratios)",
        ["ratio", "median", "per round", "target", "met?"],
        [[*r[:4], _met(bool(r[4]))] for r in ratios],
    )
    print_table(
        f"cold start: `tandem serve --workers {args.workers}` to 200 on /health/ready, then the first "
        "POST /v1/predict and 300 sequential ones",
        ["run", "ready s", "first request ms", "steady p50 ms", "steady p99 ms"],
        [
            [
                n + 1,
                f"{c.ready_s:.2f}",
                f"{c.first_ms:.2f}",
                f"{c.steady_p50_ms:.2f}",
                f"{c.steady_p99_ms:.2f}",
            ]
            for n, c in enumerate(colds)
        ],
    )
    push_ms = np.array(pushes) * 1000
    push_p50, push_p99 = float(np.percentile(push_ms, 50)), float(np.percentile(push_ms, 99))
    print_table(
        f"push: {args.pushes} sequential one-row POST /v1/push/{PUSH_SOURCE} (offline insert + online write), "
        "client-side",
        ["p50 ms", "p90 ms", "p99 ms", "max ms"],
        [[f"{push_p50:.2f}", f"{np.percentile(push_ms, 90):.2f}", f"{push_p99:.2f}", f"{push_ms.max():.2f}"]],
    )
    ready = median([c.ready_s for c in colds])
    first = median([c.first_ms for c in colds])
    steady = median([c.steady_p99_ms for c in colds])
    rows = [[name, measured, target, _met(bool(ok))] for name, measured, _, target, ok in ratios]
    rows += [
        ["cold start to ready (median)", f"{ready:.2f} s", "<= 3 s", _met(ready <= 3)],
        ["first request / steady sequential p99", f"{first:.2f} / {steady:.2f} ms = {first / steady:.2f}x",
         "<= 2x", _met(first <= 2 * steady)],
        ["first request / batch-hit p99 under load", f"{first:.2f} / {hit.p99_ms:.2f} ms = {first / hit.p99_ms:.2f}x",
         "<= 2x", _met(first <= 2 * hit.p99_ms)],
        ["push one row p99", f"{push_p99:.2f} ms", "<= 5 ms", _met(push_p99 <= 5)],
    ]  # fmt: skip
    print_table("targets", ["target", "measured", "goal", "met?"], rows)


if __name__ == "__main__":
    main()
