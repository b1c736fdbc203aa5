"""The world bench/serve.py loads: prepared data and model, pushes, cold starts, answer checks."""

from __future__ import annotations

import http.client
import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http_load import (
    ColdStart,
    free_port,
    get_ok,
    request,
    server,
    wait_ready,
)
from core.batch.predict import run_batch_predict
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.model.lifecycle import train_and_promote
from core.settings import Settings
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_MODEL

__all__ = [
    "BASE_ENV",
    "BIN",
    "PUSH_SOURCE",
    "ROOT",
    "check_feast",
    "check_reason",
    "cold_start",
    "predict_body",
    "prepare",
    "push_latency",
    "push_many",
    "push_row",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASE_ENV = dict(os.environ)  # before Feast is imported: it sets PROMETHEUS_MULTIPROC_DIR for itself
PUSH_SOURCE = "customer_txn_stats_push"


def prepare(settings: Settings, stores: Stores, *, entities: int, days: int) -> str:
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
    train_and_promote(store, settings, engine=engine, label_table="features.bench_labels")
    engine.dispose()
    return str(run_batch_predict(settings, stores, model_name=DEMO_MODEL).run_id)


# ------------------------------------------------------------------------------------------- servers


def predict_body(customer_id: int) -> dict[str, Any]:
    return {"entities": [{"customer_id": customer_id}]}


def push_row(customer_id: int, when: datetime, rng: random.Random) -> dict[str, Any]:
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


def cold_start(
    env: dict[str, str], *, workers: int, batch_ids: tuple[int, int], steady: int, log: Path
) -> ColdStart:
    """Spawn `tandem serve`, time it to ready, then the first predict and `steady` more on one connection."""
    port = free_port()
    command = [str(BIN / "tandem"), "serve", "--workers", str(workers), "--port", str(port)]
    rng = random.Random(port)
    with server(command, env=env, cwd=ROOT, log=log):
        ready_s = wait_ready(port, get_ok("/health/ready"), timeout_s=60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, _, first = request(conn, "POST", "/v1/predict", predict_body(rng.randint(*batch_ids)))
        if status != 200:
            raise RuntimeError(f"first request answered {status}")
        times = [
            request(conn, "POST", "/v1/predict", predict_body(rng.randint(*batch_ids)))[2]
            for _ in range(steady)
        ]
        conn.close()
    return ColdStart(
        ready_s=ready_s,
        first_ms=first * 1000,
        steady_p50_ms=float(np.percentile(times, 50)) * 1000,
        steady_p99_ms=float(np.percentile(times, 99)) * 1000,
    )


def push_many(port: int, key: str, ids: Sequence[int], *, chunk: int = 1000) -> None:
    """Newer customer_txn_stats rows for `ids` through the push endpoint, `chunk` rows a request."""
    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for start in range(0, len(ids), chunk):
        now = datetime.now(UTC)
        rows = [push_row(i, now, rng) for i in ids[start : start + chunk]]
        status, body, _ = request(
            conn, "POST", f"/v1/push/{PUSH_SOURCE}", {"rows": rows}, headers={"X-API-Key": key}
        )
        if status != 200:
            raise RuntimeError(f"push answered {status}: {body}")
    conn.close()


def push_latency(port: int, key: str, ids: Sequence[int], *, count: int) -> list[float]:
    """Seconds per one-row push, `count` sequential pushes on one keep-alive connection (after 20 warm-ups)."""
    rng = random.Random(11)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for n in range(count + 20):
        row = push_row(ids[n % len(ids)], datetime.now(UTC), rng)
        status, body, seconds = request(
            conn, "POST", f"/v1/push/{PUSH_SOURCE}", {"rows": [row]}, headers={"X-API-Key": key}
        )
        if status != 200 or body.get("written_online") != 1:
            raise RuntimeError(f"push answered {status}: {body}")
        if n >= 20:
            times.append(seconds)
    conn.close()
    return times


def check_reason(port: int, customer_id: int, expected: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, body, _ = request(conn, "POST", "/v1/predict", predict_body(customer_id))
    conn.close()
    item: dict[str, Any] = body["predictions"][0] if status == 200 else {}
    if item.get("reason") != expected:
        raise RuntimeError(f"customer {customer_id}: expected reason {expected}, got {status} {body}")
    return item


def check_feast(port: int, service: str, customer_id: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = {"feature_service": service, "entities": {"customer_id": [customer_id]}}
    status, answer, _ = request(conn, "POST", "/get-online-features", body)
    conn.close()
    if status != 200:
        raise RuntimeError(f"feast serve answered {status}: {answer}")
    names = answer["metadata"]["feature_names"]
    present = [r["statuses"][0] for r in answer["results"]]
    if len(names) < 10 or present.count("PRESENT") != len(names):
        raise RuntimeError(f"feast serve: not every feature present for {customer_id}: {answer}")
