"""What bench/streaming.py runs during a mode: a paced event producer, freshness probes, wrk counting
live answers, and the consumer group's counters."""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.http_load import request
from bench.serve_world import PUSH_SOURCE, push_row

__all__ = [
    "WRK_LIVE_LUA",
    "Freshness",
    "GroupCounters",
    "LiveLoad",
    "event_json",
    "group_counters",
    "probe_freshness",
    "produce",
    "wrk_live",
]

VIEW = "customer_txn_stats"  # the view PUSH_SOURCE feeds

WRK_LIVE_LUA = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  lo = tonumber(args[1])
  hi = tonumber(args[2])
  math.randomseed(os.time() + 7919 * tid)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  live = 0
  answered = 0
end

function request()
  return wrk.format(nil, nil, nil, '{"entities":[{"customer_id":' .. math.random(lo, hi) .. '}]}')
end

function response(status, headers, body)
  if status == 200 then
    answered = answered + 1
    if string.find(body, '"source":"live"', 1, true) then
      live = live + 1
    end
  end
end

function done(summary, latency, requests)
  local l, a = 0, 0
  for _, t in ipairs(threads) do
    l = l + t:get("live")
    a = a + t:get("answered")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"live":%d,"answered":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, l, a))
end
"""


@dataclass(frozen=True)
class LiveLoad:
    """One wrk run over random entities: throughput, latency, and how many answers were scored live."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    live: int
    answered: int


@dataclass(frozen=True)
class GroupCounters:
    """The consumer group's read position and pending count at one moment."""

    at: float  # time.perf_counter()
    entries_read: int
    pending: int
    lag: int

    @property
    def acknowledged(self) -> int:
        return self.entries_read - self.pending


@dataclass(frozen=True)
class Freshness:
    """Event -> fresh stored score, for the sampled events: seconds of those that got one, and the rest."""

    seconds: list[float]
    never: int


def wrk_live(
    port: int, *, script: Path, lo: int, hi: int, threads: int, connections: int, seconds: int
) -> LiveLoad:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
        f"http://127.0.0.1:{port}/v1/predict", "--", str(lo), str(hi),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603 - wrk, fixed args
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    report = json.loads(line.removeprefix("WRKJSON "))
    return LiveLoad(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        requests=report["requests"],
        errors=report["errors"],
        live=report["live"],
        answered=report["answered"],
    )


def group_counters(client: redis.Redis, stream: str, group: str) -> GroupCounters:
    at = time.perf_counter()
    info: Any = client.xinfo_groups(stream)
    mine = next(g for g in info if g["name"] in (group, group.encode()))
    return GroupCounters(
        at=at,
        entries_read=int(mine["entries-read"] or 0),
        pending=int(mine["pending"]),
        lag=int(mine["lag"] or 0),
    )


def event_json(customer_id: int, rng: random.Random) -> str:
    return json.dumps({"push_source": PUSH_SOURCE, "row": push_row(customer_id, datetime.now(UTC), rng)})


def produce(
    redis_url: str, stream: str, rate: float, seconds: float, entities: int, seed: int, out: Any
) -> None:
    """XADD `rate` events a second for `seconds` (paced every 5 ms, one pipeline per tick) over customers
    1..entities; puts (events sent, seconds taken) on `out`. Runs in its own process."""
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(seed)
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            pipe = client.pipeline(transaction=False)
            for _ in range(due):
                pipe.xadd(stream, {"event": event_json(rng.randint(1, entities), rng)})
            pipe.execute()
            sent += due
        time.sleep(0.005)
    out.put((sent, time.perf_counter() - started))
    client.close()


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None


def probe_freshness(
    client: redis.Redis,
    stream: str,
    port: int,
    *,
    entities: int,
    per_second: float,
    seconds: float,
    give_up_s: float,
    seed: int,
) -> Freshness:
    """For `seconds`, XADD `per_second` events of their own (random customers), then poll
    `POST /v1/predict` with mode `batch` (the stored score, whatever is fresher online) every 20 ms until the
    stored score's `customer_txn_stats` event time covers the event's: seconds from just before the XADD.
    Probes unanswered `give_up_s` after their event count as `never`."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    waiting: dict[int, tuple[float, datetime]] = {}
    fresh: list[float] = []
    never = 0
    started = next_event = time.perf_counter()
    while True:
        now = time.perf_counter()
        producing = now - started < seconds
        if producing and now >= next_event:
            customer = rng.randint(1, entities)
            if customer not in waiting:
                row = push_row(customer, datetime.now(UTC), rng)
                sent_at = time.perf_counter()
                client.xadd(stream, {"event": json.dumps({"push_source": PUSH_SOURCE, "row": row})})
                waiting[customer] = (sent_at, datetime.fromisoformat(row["event_timestamp"]))
            next_event += 1 / per_second
        if not producing and not waiting:
            break
        if waiting:
            ids = list(waiting)
            body = {"entities": [{"customer_id": i} for i in ids], "mode": "batch"}
            status, answer, _ = request(conn, "POST", "/v1/predict", body)
            seen = time.perf_counter()
            if status == 200:
                for customer, item in zip(ids, answer["predictions"], strict=True):
                    stored = _parse((item.get("feature_timestamps") or {}).get(VIEW))
                    sent_at, event_time = waiting[customer]
                    if stored is not None and stored >= event_time:
                        fresh.append(seen - sent_at)
                        del waiting[customer]
            for customer, (sent_at, _) in list(waiting.items()):
                if seen - sent_at > give_up_s:
                    never += 1
                    del waiting[customer]
        time.sleep(0.02)
    conn.close()
    return Freshness(seconds=fresh, never=never)
