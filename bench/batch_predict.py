"""Batch-predict benchmark: Tandem's path vs the naive Feast path, on the same data, in one run.

Naive path: Feast `get_historical_features` for every entity + `predict_proba` + `write_to_online_store`.
Tandem's path runs in a child process so its peak RSS is its own. Usage:

    .venv/bin/python bench/batch_predict.py --entities 100000 --days 4
    .venv/bin/python bench/batch_predict.py --entities 1000000 --days 4 --skip-naive
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_stores, print_table, run_child
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.snapshots import service_specs
from core.model.lifecycle import train_and_promote
from core.settings import Settings
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_PREDICTIONS_VIEW

CHILD = """
import json, resource, sys
from datetime import datetime
from core.batch.predict import run_batch_predict
from core.stores.resolve import resolve_stores
from core.settings import Settings
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_MODEL, DEMO_PREDICTIONS_VIEW
settings = Settings()
result = run_batch_predict(settings, resolve_stores(settings), model_name=DEMO_MODEL, as_of=datetime.fromisoformat(sys.argv[1]))
print(json.dumps({"rows": result.rows, "stages": result.stage_seconds,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _prepare(settings: Settings, stores: Stores, *, entities: int, days: int, end: datetime) -> None:
    engine = create_db_engine(stores.postgres)
    upgrade_schema(engine)
    apply_feature_repo(settings, stores)
    service_specs(
        settings, stores, feature_service=DEMO_FEATURE_SERVICE, predictions_view=DEMO_PREDICTIONS_VIEW
    )  # as `tandem apply` does
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=entities, days=days, seed=1, end=end)
        conn.execute(
            "CREATE TABLE features.bench_labels AS SELECT * FROM features.fraud_labels ORDER BY customer_id LIMIT 20000"
        )
    train_and_promote(
        open_feature_store(settings, stores), settings, engine=engine, label_table="features.bench_labels"
    )
    engine.dispose()


NAIVE_CHILD = """
import json, resource, sys, time
from datetime import datetime
import pandas as pd, psycopg
from sqlalchemy.orm import Session
from core.stores.database import create_db_engine
from core.features.feast_repo import open_feature_store
from core.model.registry import load_model
from core.stores.resolve import resolve_stores
from core.settings import Settings
from tandem.demo.names import DEMO_MODEL
as_of = datetime.fromisoformat(sys.argv[1])
settings = Settings()
stores = resolve_stores(settings)
stages = {}
mark = time.perf_counter()
store = open_feature_store(settings, stores)
with Session(create_db_engine(stores.postgres)) as session:
    model = load_model(session, model_name=settings.model_name)
with psycopg.connect(stores.postgres.url()) as conn:
    ids = [row[0] for row in conn.execute("SELECT DISTINCT customer_id FROM features.customer_profile")]
frame = store.get_historical_features(
    entity_df=pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}),
    features=store.get_feature_service(settings.feature_service),
).to_df()
stages["features"] = time.perf_counter() - mark
mark = time.perf_counter()
scores = model.predict_scores(frame)
stages["score"] = time.perf_counter() - mark
mark = time.perf_counter()
online = pd.DataFrame({"customer_id": frame["customer_id"].to_numpy(), "score": scores, "model_version": model.version,
                       "run_id": "naive", "feature_snapshot_ts": "{}", "scored_at": as_of})
store.write_to_online_store("batch_predictions", online)
stages["publish"] = time.perf_counter() - mark
print(json.dumps({"stages": stages, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(
    script: str, settings: Settings, stores: Stores, as_of: datetime
) -> tuple[float, dict[str, float], float]:
    """One path in a fresh interpreter: wall seconds, stage seconds, peak RSS (MB)."""
    seconds, report = run_child(script, settings, stores, as_of.isoformat())
    return seconds, report["stages"], report["max_rss_mb"]


def main() -> None:
    """Seed, train, then run both paths and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    as_of = end - timedelta(minutes=30)
    with bench_stores() as (settings, stores):
        mark = time.perf_counter()
        _prepare(settings, stores, entities=args.entities, days=args.days, end=end)
        print(f"prepared {args.entities:,} entities x {args.days} days in {time.perf_counter() - mark:.1f} s")
        tandem_s, tandem_stages, rss = _child(CHILD, settings, stores, as_of)
        rows = [
            [
                "tandem batch-predict",
                f"{args.entities:,}",
                f"{tandem_s:.1f}",
                f"{args.entities / tandem_s:,.0f}",
                "1.00",
            ]
        ]
        stage_rows = [
            [
                "tandem",
                *(
                    f"{tandem_stages.get(s, float('nan')):.2f}"
                    for s in ("features", "score", "copy", "publish")
                ),
            ]
        ]
        if not args.skip_naive:
            naive_s, naive_stages, naive_rss = _child(NAIVE_CHILD, settings, stores, as_of)
            rows.append(
                [
                    "naive Feast path",
                    f"{args.entities:,}",
                    f"{naive_s:.1f}",
                    f"{args.entities / naive_s:,.0f}",
                    f"{naive_s / tandem_s:.2f}",
                ]
            )
            stage_rows.append(
                [
                    "naive",
                    *(
                        f"{naive_stages.get(s, float('nan')):.2f}"
                        for s in ("features", "score", "copy", "publish")
                    ),
                ]
            )
            print(f"\nspeed-up of Tandem over the naive path: {naive_s / tandem_s:.1f}x")
        print_table(
            "end to end, each path in a fresh process (imports, registry and model load included)",
            ["path", "entities", "seconds", "rows/s", "time / tandem time"],
            rows,
        )
        print_table("per stage, seconds", ["path", "features", "score", "copy", "publish"], stage_rows)
        print(f"\nTandem peak RSS: {rss:,.0f} MB (child process)")
        if not args.skip_naive:
            print(f"naive path peak RSS: {naive_rss:,.0f} MB (child process)")


if __name__ == "__main__":
    main()
