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
import contextlib
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, median, print_table
from bench.http_load import (
    WRK_LUA,
    Load,
    Target,
    free_port,
    get_ok,
    median_load,
    post_ok,
    require_wrk,
    server,
    wait_ready,
    wrk,
)
from bench.serve_world import (
    BASE_ENV,
    BIN,
    PUSH_SOURCE,
    ROOT,
    check_feast,
    check_reason,
    cold_start,
    predict_body,
    prepare,
    push_latency,
    push_many,
)
from core.features.feast_repo import feast_env
from tandem.demo.names import DEMO_FEATURE_SERVICE

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
    parser.add_argument(
        "--skip-feast",
        action="store_true",
        help="leave out the feast serve reference (it is the slowest part)",
    )
    args = parser.parse_args()
    require_wrk()
    live = (1, args.live_entities)
    batch = (args.live_entities + 1, args.entities)
    key = secrets.token_hex(16)  # this run only: never printed, never stored
    with bench_stores() as (settings, stores), tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        logs = Path(tmp)
        script = logs / "predict.lua"
        script.write_text(WRK_LUA)
        mark = time.perf_counter()
        run_id = prepare(settings, stores, entities=args.entities, days=args.days)
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
            cold = cold_start(
                tandem_env, workers=args.workers, batch_ids=batch, steady=300, log=logs / f"cold{n}.log"
            )
            colds.append(cold)
            print(
                f"cold start {n + 1}: ready {cold.ready_s:.2f} s, first request {cold.first_ms:.1f} ms, "
                f"then p50 {cold.steady_p50_ms:.2f} / p99 {cold.steady_p99_ms:.2f} ms sequential"
            )

        ports = {name: free_port() for name in ("bare", "tandem", "feast")}
        feast_environ = {**tandem_env, **feast_env(settings, stores)}
        w = str(args.workers)
        with (
            server(
                [sys.executable, "-m", "bench.serve_targets", "--port", str(ports["bare"]), "--workers", w],
                env=tandem_env, cwd=ROOT, log=logs / "bare.log",
            ),
            server(
                [str(BIN / "tandem"), "serve", "--workers", w, "--port", str(ports["tandem"])],
                env=tandem_env, cwd=ROOT, log=logs / "tandem.log",
            ),
            server(
                [str(BIN / "feast"), "serve", "--host", "127.0.0.1", "--port", str(ports["feast"]),
                 "--workers", w, "--max-requests", "0", "--no-access-log"],
                env=feast_environ, cwd=ROOT / settings.feature_repo, log=logs / "feast.log",
            ) if not args.skip_feast else contextlib.nullcontext(),
        ):  # fmt: skip
            wait_ready(ports["bare"], post_ok("/v1/predict", predict_body(1)), timeout_s=60)
            wait_ready(ports["tandem"], get_ok("/health/ready"), timeout_s=60)
            if not args.skip_feast:
                wait_ready(ports["feast"], get_ok("/health"), timeout_s=120)

            sample = random.Random(3).randint(*batch)
            fresh = check_reason(ports["tandem"], sample, "batch_fresh")
            if fresh["batch_run_id"] != run_id:
                raise RuntimeError(f"served run {fresh['batch_run_id']}, expected {run_id}")
            mark = time.perf_counter()
            push_many(ports["tandem"], key, list(range(live[0], live[1] + 1)))
            print(
                f"pushed newer rows for {args.live_entities:,} entities in {time.perf_counter() - mark:.1f} s"
            )
            for customer_id in random.Random(4).sample(range(live[0], live[1] + 1), 5):
                item = check_reason(ports["tandem"], customer_id, "features_newer")
                if item["source"] != "live":
                    raise RuntimeError(f"features_newer not served live: {item}")
            if not args.skip_feast:
                check_feast(ports["feast"], DEMO_FEATURE_SERVICE, sample)
            print(
                f"checked: {sample} -> batch_fresh, pushed ids -> features_newer (live), feast serve answers"
            )

            targets = [
                Target("bare litestar", ports["bare"], "/v1/predict", 1, args.entities, "tandem"),
                Target("tandem batch-hit", ports["tandem"], "/v1/predict", *batch, "tandem"),
                Target("tandem live (features newer)", ports["tandem"], "/v1/predict", *live, "tandem"),
                Target("feast serve", ports["feast"], "/get-online-features", 1, args.entities, "feast"),
            ][: 3 if args.skip_feast else 4]
            loads: dict[str, list[Load]] = {t.name: [] for t in targets}

            def measure(target: Target, seconds: float) -> Load:
                return wrk(
                    target, script=script, threads=args.threads, connections=args.connections,
                    seconds=seconds, service=DEMO_FEATURE_SERVICE,
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
            check_reason(ports["tandem"], sample, "batch_fresh")  # the batch set stayed fresh throughout
            pushes = push_latency(ports["tandem"], key, list(range(live[0], live[1] + 1)), count=args.pushes)

    result = {name: median_load(runs) for name, runs in loads.items()}
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
        if bottom not in loads:  # a reference left out (--skip-feast)
            continue
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
