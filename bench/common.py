"""What every benchmark needs: a private database and Feast project on real servers, and a ratio table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from pydantic import SecretStr

from core.endpoints import parse_postgres_url, parse_redis_url
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.names import demo_settings

__all__ = ["bench_stores", "median", "print_table", "run_child"]


@contextmanager
def bench_stores() -> Iterator[tuple[Settings, Stores]]:
    """A fresh database and Feast project on TANDEM_BENCH_POSTGRES_URL / TANDEM_BENCH_REDIS_URL
    (default: the machine's 127.0.0.1:5432 and :6379); both removed afterwards."""
    admin = parse_postgres_url(
        os.environ.get("TANDEM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    redis_endpoint = parse_redis_url(os.environ.get("TANDEM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    name = f"tandem_bench_{uuid.uuid4().hex[:8]}"
    project = f"b{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = admin.with_database(name)
    stores = Stores(postgres=database, redis=redis_endpoint, local=False)
    settings = demo_settings(  # the benches run the demo's model
        Settings(
            postgres_url=SecretStr(database.url()),
            redis_url=SecretStr(redis_endpoint.url()),
            feast_project=project,
        )
    )
    try:
        yield settings, stores
    finally:
        with psycopg.connect(admin.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        client = redis.Redis.from_url(redis_endpoint.url())
        keys = list(client.scan_iter(match=f"*{project}", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
        client.close()


def median(values: Sequence[float]) -> float:
    """The median, or NaN for nothing."""
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table (Markdown-compatible) on stdout."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def run_child(script: str, settings: Settings, stores: Stores, *args: str) -> tuple[float, dict[str, Any]]:
    """Run `script` in a fresh interpreter on these stores (imports included, as a scheduled job pays
    them); returns wall seconds and the JSON object it printed last."""
    env = {
        **os.environ,
        "TANDEM_POSTGRES_URL": stores.postgres.url(),
        "TANDEM_REDIS_URL": stores.redis.url(),
        "TANDEM_FEAST_PROJECT": settings.feast_project,
        "TANDEM_MODEL_NAME": settings.model_name or "",
        "TANDEM_FEATURE_SERVICE": settings.feature_service or "",
        "TANDEM_LABELS": settings.labels or "",
        "OMP_NUM_THREADS": "1",
    }
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed script
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return time.perf_counter() - started, report
