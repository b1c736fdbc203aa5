"""`tandem demo`: the user's journey in one command, on the embedded stack unless store URLs are set.

up -> apply -> seed -> train + promote -> materialize -> batch-predict -> scheduler + API + stream -> push fresh
transactions -> predictions (batch-served vs live re-scored, with reasons) -> events into the Redis stream and
one customer's answer switching from batch to live to the stream's stored score -> skew check -> URLs ->
serve until Ctrl-C (or stop at once with --once). Everything it starts, it stops.
"""

from __future__ import annotations

import secrets
import signal
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
import httpx

from core.errors import StackError
from core.stores.resolve import Stores
from tandem.context import CliContext
from tandem.demo.processes import Children, children, port_is_free, wait_logged, wait_ready
from tandem.demo.steps import Timeline, prepare_data, show_predictions, show_skew
from tandem.demo.stream import STREAM_RESCORE_DELAY_MS, show_stream_switch

__all__ = ["demo_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


def _push_fresh(url: str, key: str, customer_ids: list[int]) -> None:
    now = datetime.now(UTC).isoformat()
    rows = [
        {
            "customer_id": customer,
            "event_timestamp": now,
            "txn_count_24h": 35,
            "txn_amount_24h": 7400.0,
            "max_amount_24h": 3900.0,
            "txn_count_7d": 80,
            "avg_amount_30d": 140.0,
            "foreign_txn_ratio_7d": 0.85,
            "distinct_merchants_7d": 27,
        }
        for customer in customer_ids
    ]
    response = httpx.post(
        f"{url}/v1/push/customer_txn_stats_push", json={"rows": rows}, headers={"X-API-Key": key}, timeout=10
    )
    if response.status_code != 200:
        raise StackError(f"push failed with {response.status_code}: {response.text[:200]}")


class _StopRequest:
    """Ctrl-C or SIGTERM while the demo's API and scheduler run: remembered from the moment they start.

    Ctrl-C reaches the whole process group, children included, possibly while the demo is still pushing
    and checking (a non-interactive shell may even start it with SIGINT ignored): the demo must hear it
    then too, and treat the children stopping as the stop it asked for, not as a failure.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: list[tuple[int, Any]] = []

    def _handler(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> _StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous.append((signum, signal.signal(signum, self._handler)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, previous in self._previous:
            signal.signal(signum, previous)

    def wait(self, group: Children) -> None:
        """Until Ctrl-C; StackError if a child ends on its own meanwhile."""
        while not self.requested:
            try:
                group.check()
            except StackError:
                time.sleep(0.5)  # its Ctrl-C may land a moment after the child's
                if not self.requested:
                    raise
            time.sleep(0.5)


@click.command("demo")
@click.option("--customers", type=click.IntRange(min=50), default=20_000, show_default=True)
@click.option("--days", type=click.IntRange(min=2, max=365), default=30, show_default=True)
@click.option("--seed", "seed_value", type=int, default=7, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="API port.")
@click.option("--once", is_flag=True, help="Stop after the summary instead of serving until Ctrl-C.")
@pass_cli
def demo_cmd(cli: CliContext, customers: int, days: int, seed_value: int, port: int, once: bool) -> None:
    """The whole journey: data, model, batch run, API, fresh events, blended predictions, skew check."""
    console, settings = cli.console, cli.settings
    if not port_is_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is already in use (another tandem demo?): use --port")
    timeline = Timeline(console)
    stores = prepare_data(cli, timeline, customers=customers, days=days, seed=seed_value)
    url = f"http://127.0.0.1:{port}"
    key = secrets.token_urlsafe(24)
    env = {
        "TANDEM_POSTGRES_URL": stores.postgres.url(),
        "TANDEM_REDIS_URL": stores.redis.url(),
        "TANDEM_FEAST_PROJECT": settings.feast_project,
        "TANDEM_API_KEYS": key,
        "TANDEM_STREAM_RESCORE_MAX_DELAY_MS": str(STREAM_RESCORE_DELAY_MS),
        "TANDEM_STREAM_METRICS_PORT": "0",  # the stream's /metrics stays off: the API's is printed
    }
    with _StopRequest() as stop, children(settings.home / "demo-logs", env) as group:
        group.start("scheduler", "scheduler")
        group.start("api", "serve", "--port", str(port))
        group.start("stream", "stream")
        try:
            _serve_steps(cli, stores, timeline, group, url=url, key=key)
        except Exception:
            if not stop.requested:
                raise
        if stop.requested:  # Ctrl-C while the steps ran
            console.print("stopping the API, the scheduler and the stream")
            return
        if once:
            return
        console.print("\nserving until Ctrl-C ...")
        stop.wait(group)
        console.print("stopping the API, the scheduler and the stream")


def _serve_steps(
    cli: CliContext, stores: Stores, timeline: Timeline, group: Children, *, url: str, key: str
) -> None:
    """With the API, the scheduler and the stream started: fresh events, blended predictions, events through
    the stream re-scored, a skew check, the URLs."""
    console = cli.console
    ready_s = wait_ready(url, group)
    timeline.step(f"API ready in {ready_s:.1f} s at {url}; scheduler and stream started")
    pushed = [3, 5, 8]
    _push_fresh(url, key, pushed)
    timeline.step(f"pushed fresh transactions for customers {', '.join(map(str, pushed))}")
    show_predictions(console, url, [*pushed, 1, 2, 4])
    stream = cli.settings.stream_name
    consuming_s = wait_logged(group, "stream", "stream: consuming")
    timeline.step(f"`tandem stream` consuming {stream} (waited {consuming_s:.1f} s)")
    sent, pending = show_stream_switch(console, url, stores.redis.url(), stream, group.check)
    timeline.step(
        f"stream: {sent} events XADDed to {stream}, written and re-scored by `tandem stream` "
        f"({pending} read and not yet acknowledged)"
    )
    show_skew(cli, stores, timeline)
    console.print(f"\nAPI docs      {url}/schema/swagger")
    console.print(f"skew review   {url}/skew")
    console.print(f"metrics       {url}/metrics")
    console.print(f"API key       {key}   (header X-API-Key, for push and job runs)")
    timeline.summary()
