"""Skew-check benchmark: Tandem's checker vs the naive Feast path over the same entities, in one run.

Both run in a fresh process (imports, registry and model load included) after the same preparation: demo
data seeded, a model trained and promoted, the feature views materialized up to a watermark, a batch run
published as of it.

- Tandem: `run_skew_check(all_entities=True)` — point-in-time rows by binary protocol, pipelined HMGETs in
  batches of 1,000, vectorised classification, distances, parity (live re-score), report saved;
- naive: Feast `get_historical_features` (entity rows stamped with the watermark) + `get_online_features`
  for the same entities, then a pandas comparison of values (no timestamps, distances or parity: it does
  less, so the ratio flatters it).

    .venv/bin/python bench/skew.py --entities 100000 --days 4
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batch_predict import _prepare
from bench.common import bench_stores, print_table, run_child
from core.batch.materialize import run_materialize
from core.batch.predict import run_batch_predict
from tandem.demo.names import DEMO_MODEL

TANDEM_CHILD = """
import json, resource, time
started = time.perf_counter()
from consistency.checker import run_skew_check
from core.stores.resolve import resolve_stores
from core.settings import Settings
from tandem.demo.names import DEMO_MODEL
settings = Settings()
imported = time.perf_counter() - started
report = run_skew_check(settings, resolve_stores(settings), model_name=DEMO_MODEL, all_entities=True)
print(json.dumps({"entities": report.entities_checked, "status": report.status, "imports": imported,
                  "stages": report.summary["seconds"], "counts": report.summary["counts"],
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

NAIVE_CHILD = """
import json, resource, sys, time
from datetime import datetime
import numpy as np, pandas as pd, psycopg
from core.features.feast_repo import open_feature_store
from core.stores.resolve import resolve_stores
from core.settings import Settings
from tandem.demo.names import DEMO_MODEL
watermark = datetime.fromisoformat(sys.argv[1])
settings = Settings()
stores = resolve_stores(settings)
stages = {}
mark = time.perf_counter()
store = open_feature_store(settings, stores)
service = store.get_feature_service(settings.feature_service)
with psycopg.connect(stores.postgres.url()) as conn:
    ids = sorted({row[0] for row in conn.execute(
        "SELECT customer_id FROM features.customer_profile WHERE event_timestamp <= %s "
        "UNION SELECT customer_id FROM features.customer_txn_stats WHERE event_timestamp <= %s",
        (watermark, watermark))})
stages["setup"] = time.perf_counter() - mark
mark = time.perf_counter()
offline = store.get_historical_features(
    entity_df=pd.DataFrame({"customer_id": ids, "event_timestamp": watermark}), features=service
).to_df().set_index("customer_id").sort_index()
stages["offline"] = time.perf_counter() - mark
mark = time.perf_counter()
online = pd.DataFrame(store.get_online_features(
    features=service, entity_rows=[{"customer_id": i} for i in ids]
).to_dict()).set_index("customer_id").sort_index()
stages["online"] = time.perf_counter() - mark
mark = time.perf_counter()
columns = [c for c in online.columns if c in offline.columns]
a = offline[columns].astype("float64").to_numpy()
b = online[columns].astype("float64").to_numpy()
same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= 1e-6 * np.maximum(1, np.maximum(np.abs(a), np.abs(b))))
stages["compare"] = time.perf_counter() - mark
print(json.dumps({"entities": len(ids), "mismatches": int((~same).sum()), "stages": stages,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    """Prepare, run the checker twice (fresh processes), then the naive path once; ratio to the slower run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    watermark = end - timedelta(minutes=30)
    with bench_stores() as (settings, stores):
        mark = time.perf_counter()
        _prepare(settings, stores, entities=args.entities, days=args.days, end=end)
        run_materialize(settings, stores, end=watermark, count_rows=False)
        run_batch_predict(settings, stores, model_name=DEMO_MODEL, as_of=watermark)
        print(f"prepared {args.entities:,} entities x {args.days} days in {time.perf_counter() - mark:.1f} s")
        first_s, first = run_child(TANDEM_CHILD, settings, stores)
        second_s, second = run_child(TANDEM_CHILD, settings, stores)
        warm_s, warm = (first_s, first) if first_s >= second_s else (second_s, second)
        stages: dict[str, float] = warm["stages"]
        rows = [
            [
                f"tandem check-skew --all (run {n})",
                run["entities"],
                f"{seconds:.1f}",
                f"{seconds / warm_s:.2f}",
            ]
            for n, (seconds, run) in enumerate([(first_s, first), (second_s, second)], start=1)
        ]
        naive: dict[str, object] = {}
        if not args.skip_naive:
            naive_s, naive = run_child(NAIVE_CHILD, settings, stores, watermark.isoformat())
            rows.append(
                [
                    "naive Feast path (values only)",
                    naive["entities"],
                    f"{naive_s:.1f}",
                    f"{naive_s / warm_s:.1f}",
                ]
            )
        print_table(
            "skew check of every entity, each path in a fresh process",
            ["path", "entities", "seconds", "time / tandem time"],
            rows,
        )
        print_table(
            "tandem stages of the slower run (seconds, inside the check; offline overlaps online)",
            list(stages),
            [[f"{v:.2f}" for v in stages.values()]],
        )
        if naive:
            naive_stages: dict[str, float] = naive["stages"]  # type: ignore[assignment]  # JSON
            print_table(
                "naive stages (seconds)", list(naive_stages), [[f"{v:.2f}" for v in naive_stages.values()]]
            )
        print(
            f"\ntandem: imports {warm['imports']:.1f} s, status {warm['status']}, peak RSS {warm['max_rss_mb']:,.0f} MB"
        )
        print(f"tandem classes over every (entity, feature): {warm['counts']}")
        if naive:
            print(f"naive: {naive['mismatches']} value mismatches, peak RSS {naive['max_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
