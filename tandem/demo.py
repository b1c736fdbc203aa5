"""`tandem demo`: the user's journey in one command, on the embedded stack unless store URLs are set."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
import psycopg
from rich.table import Table

from core.database import create_db_engine, upgrade_schema
from core.feast_repo import (
    apply_feature_repo,
    feature_service_refs,
    materialize_incremental,
    open_feature_store,
)
from tandem.context import CliContext

__all__ = ["demo_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


@click.command("demo")
@click.option("--customers", type=click.IntRange(min=10), default=20_000, show_default=True)
@click.option("--days", type=click.IntRange(min=2, max=365), default=30, show_default=True)
@click.option("--seed", "seed_value", type=int, default=7, show_default=True)
@click.option("--once", is_flag=True, help="Stop after the summary instead of serving until Ctrl-C.")
@pass_cli
def demo_cmd(cli: CliContext, customers: int, days: int, seed_value: int, once: bool) -> None:
    """up -> apply -> seed -> materialize -> show one customer's online features."""
    from core.demo_data import seed_demo_data

    console, settings = cli.console, cli.settings
    started = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps.append((name, now - since))
        console.print(f"[green]✓[/green] {name} ({now - since:.1f} s)")
        return now

    mark = time.perf_counter()
    if settings.uses_local_stack:
        from core.stack import start_local_stack

        with console.status("starting the embedded PostgreSQL and Redis"):
            stack = start_local_stack(settings)
        mark = step(f"local stack up: {stack.postgres.masked()}, {stack.redis.masked()}", mark)
    stores = cli.stores()

    engine = create_db_engine(stores.postgres)
    try:
        with console.status("migrating and applying the feature repo"):
            upgrade_schema(engine)
            views = apply_feature_repo(settings, stores)
    finally:
        engine.dispose()
    mark = step(f"apply: schema tandem at head, {len(views)} feature views", mark)

    with (
        console.status(f"seeding {customers:,} customers x {days} days"),
        psycopg.connect(stores.postgres.url()) as conn,
    ):
        summary = seed_demo_data(conn, customers=customers, days=days, seed=seed_value, end=datetime.now(UTC))
    mark = step(
        f"seed: {summary.profile_rows + summary.txn_rows:,} feature rows, {summary.label_rows:,} labels "
        f"(fraud rate {summary.fraud_rate:.1%})",
        mark,
    )

    store = open_feature_store(settings, stores)
    with console.status("materializing features to Redis"):
        materialize_incremental(store, end=datetime.now(UTC))
    mark = step("materialize: offline -> Redis", mark)

    refs = feature_service_refs(store, settings.feature_service)
    customer_id = 42 if customers >= 42 else 1
    online = store.get_online_features(
        features=store.get_feature_service(settings.feature_service),
        entity_rows=[{"customer_id": customer_id}],
    ).to_dict()
    table = Table(title=f"customer {customer_id}: online features ({settings.feature_service})")
    table.add_column("feature")
    table.add_column("value", justify="right")
    for ref in refs:
        name = ref.split(":", 1)[1]
        table.add_row(ref, str(online.get(name, [None])[0]))
    console.print(table)
    timings = ", ".join(f"{name.split(':')[0]} {secs:.1f}s" for name, secs in steps)
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s ({timings})")
    if not once:
        console.print("(the prediction service and scheduler join the demo in later releases)")
