"""The demo's streaming step: a few feature events into the Redis stream `tandem:events`, and one customer's
answer before them, right after one lands (re-scored live), and after the stream re-score (stored, kind
`stream`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from rich.console import Console
from rich.table import Table

from core.errors import StackError

__all__ = ["STREAM_CUSTOMERS", "STREAM_RESCORE_DELAY_MS", "show_stream_switch"]

STREAM_CUSTOMERS = (13, 21, 34)  # the first is the one followed; below the demo's smallest --customers
STREAM_RESCORE_DELAY_MS = 1500  # the demo's `tandem stream` re-scores every 1.5 s (default 250 ms): long
# enough to catch the live answer between the event landing online and its re-score
_PUSH_SOURCE = "customer_txn_stats_push"
_VIEW = "customer_txn_stats"


def _event(customer: int, when: datetime, amount: float) -> str:
    row = {
        "customer_id": customer,
        "event_timestamp": when.isoformat(),
        "txn_count_24h": 31,
        "txn_amount_24h": amount,
        "max_amount_24h": 3600.0,
        "txn_count_7d": 77,
        "avg_amount_30d": 150.0,
        "foreign_txn_ratio_7d": 0.8,
        "distinct_merchants_7d": 25,
    }
    return json.dumps({"push_source": _PUSH_SOURCE, "row": row})


def _answer(url: str, customer: int) -> dict[str, Any]:
    body = {"entities": [{"customer_id": customer}]}
    response = httpx.post(f"{url}/v1/predict", json=body, timeout=10)
    if response.status_code != 200:
        raise StackError(f"predict answered {response.status_code}: {response.text[:200]}")
    item: dict[str, Any] = response.json()["predictions"][0]
    return item


def _until(
    url: str,
    customer: int,
    done: Callable[[dict[str, Any]], bool],
    alive: Callable[[], None],
    timeout_s: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive()
        item = _answer(url, customer)
        if done(item):
            return item
        time.sleep(0.05)
    raise StackError(
        f"customer {customer}: the stream's answer did not arrive in {timeout_s:.0f} s (see demo-logs)"
    )


def show_stream_switch(
    console: Console, url: str, redis_url: str, stream: str, alive: Callable[[], None]
) -> tuple[int, int]:
    """XADD events for STREAM_CUSTOMERS (two for the first) and print the first customer's answers before,
    right after (live, `features_newer`) and after the re-score (stored, run kind `stream`); `alive` raises
    when a child died. Returns (events sent, entries read but not acknowledged yet)."""
    followed = STREAM_CUSTOMERS[0]
    before = _answer(url, followed)
    now = datetime.now(UTC)
    events = [(followed, 6900.0), *((c, 7100.0) for c in STREAM_CUSTOMERS), (followed, 7400.0)]
    client = redis.Redis.from_url(redis_url)
    try:
        sent_at = time.monotonic()
        for offset, (customer, amount) in enumerate(events):
            # increasing event times: the last event of a customer is its newest row
            client.xadd(stream, {"event": _event(customer, now.replace(microsecond=offset), amount)})

        def moved(item: dict[str, Any]) -> bool:
            return item.get("source") == "live" or item.get("run_kind") == "stream"

        after = _until(url, followed, moved, alive, timeout_s=60)
        rescored = _until(url, followed, lambda item: item.get("run_kind") == "stream", alive, timeout_s=30)
        took = time.monotonic() - sent_at
        groups: Any = client.xinfo_groups(stream)
        pending = sum(int(g["pending"]) for g in groups)  # read but not yet acknowledged
    finally:
        client.close()
    table = Table(
        title=f"customer {followed}: events in the Redis stream {stream} ({took:.1f} s from the first XADD to the stream score)"
    )
    for column in ("moment", "score", "source", "reason", "run_kind", f"{_VIEW} event time"):
        table.add_column(column)
    moments = [("before the events", before)]
    if after is not rescored and after.get("source") == "live":
        moments.append(("event online, not yet re-scored", after))
    moments.append(("after the stream re-score", rescored))
    for moment, item in moments:
        table.add_row(
            moment,
            f"{item['score']:.4f}",
            item["source"],
            item["reason"],
            str(item.get("run_kind")),
            str((item.get("feature_timestamps") or {}).get(_VIEW)),
        )
    console.print(table)
    return len(events), pending
