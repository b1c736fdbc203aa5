"""Stream re-score, stage by stage: what `core.rescore.run.rescore_entities` costs per re-scored entity.

    .venv/bin/python -m bench.rescore [--entities 20000] [--days 2] [--sizes 250,1000,5000] [--repeats 5]

One throw-away database and Feast project (bench.common.bench_stores): demo data seeded and materialized, a
model trained and promoted, a batch run published (bench.serve_world.prepare). Then, per flush size and
repeat: newer online rows of one pushed view for that many random entities (so every one needs a re-score),
then one `rescore_entities` of them, its `stage_seconds` kept. Printed: microseconds per re-scored entity per
stage (median over repeats), and the online read split into the round trip and the decoding of its replies.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, median, print_table
from bench.serve_world import prepare
from core.features.specs import ViewSpec
from core.online.rows import FeatureColumn, FeatureRows
from core.online.store import OnlineStore
from core.rescore.run import rescore_entities
from core.rescore.targets import RescoreTarget, load_targets
from core.stores.database import create_db_engine

STAGES = ("read", "select", "score", "copy", "publish", "record")


def _pushed_view(target: RescoreTarget) -> ViewSpec:
    """The first view of the model's service that a push source feeds (the stream writes those)."""
    return next(view for view in target.service.views if view.push_source is not None)


def _fresh_rows(view: ViewSpec, ids: list[int], rng: random.Random) -> FeatureRows:
    """Rows of `view` for `ids` with event time now and random values of each feature's kind."""
    columns = []
    for feature in view.features:
        if feature.kind in ("int64", "int32"):
            values: list[object] = [rng.randint(0, 50) for _ in ids]
        elif feature.kind == "bool":
            values = [rng.random() < 0.5 for _ in ids]
        elif feature.kind == "string":
            values = [f"s{rng.randint(0, 9)}" for _ in ids]
        else:
            values = [rng.uniform(0, 500) for _ in ids]
        columns.append(FeatureColumn(feature.name, feature.kind, np.array(values, dtype=object)))
    return FeatureRows(
        view=view.name,
        key=view.key,
        entity_ids=np.array(ids, dtype=np.int64),
        columns=tuple(columns),
        event_timestamps=datetime.now(UTC),
    )


def _read_split(online: OnlineStore, target: RescoreTarget, ids: list[int]) -> tuple[float, float]:
    """Seconds of the read's round trip and of decoding its replies, for `ids`."""
    layout = target.layout
    start = time.perf_counter()
    replies = online.transport.request(layout.request(ids), len(ids))
    middle = time.perf_counter()
    layout.decode_all(ids, replies)
    return middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--sizes", default="250,1000,5000", help="entities per re-score, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TANDEM_MODEL_SIGNING_KEY", secrets.token_hex(32))
    rng = random.Random(5)
    table = []
    with bench_stores() as (settings, stores):
        mark = time.perf_counter()
        prepare(settings, stores, entities=args.entities, days=args.days)
        print(f"prepared {args.entities:,} entities in {time.perf_counter() - mark:.1f} s", flush=True)
        engine = create_db_engine(stores.postgres, pool_size=2)
        online = OnlineStore.connect(stores.redis, project=settings.feast_project)
        try:
            target = load_targets(settings, stores, engine)[0]
            view = _pushed_view(target)
            for size in (int(s) for s in args.sizes.split(",")):
                per_stage: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
                trip, decode = [], []
                for _ in range(args.repeats + 1):  # the first is a warm-up
                    ids = rng.sample(range(1, args.entities + 1), size)
                    online.write(_fresh_rows(view, ids, rng))
                    result = rescore_entities(
                        engine, online, target, ids, max_staleness_s=settings.max_staleness_s
                    )
                    if result.rescored != size:
                        raise RuntimeError(f"re-scored {result.rescored} of {size}: {result.reasons}")
                    seconds = result.stage_seconds
                    for stage in STAGES:
                        per_stage[stage].append(seconds.get(stage, 0.0) * 1e6 / size)
                    per_stage["total"].append(sum(seconds.values()) * 1e6 / size)
                    round_trip, decoded = _read_split(online, target, ids)
                    trip.append(round_trip * 1e6 / size)
                    decode.append(decoded * 1e6 / size)
                table.append(
                    [
                        size,
                        *(f"{median(per_stage[stage][1:]):.1f}" for stage in (*STAGES, "total")),
                        f"{median(trip[1:]):.1f}",
                        f"{median(decode[1:]):.1f}",
                    ]
                )
                print(f"size {size}: {table[-1]}", flush=True)
        finally:
            online.close()
            engine.dispose()
    print_table(
        f"rescore_entities, us per re-scored entity (median of {args.repeats}), {args.entities:,} entities",
        ["entities", *STAGES, "total", "read: round trip", "read: decode"],
        table,
    )


if __name__ == "__main__":
    main()
