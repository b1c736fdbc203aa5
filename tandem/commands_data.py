"""`tandem seed`, `apply`, `materialize`: data in, schema up, features online."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
import psycopg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.database import create_db_engine, current_revision, upgrade_schema
from core.feast_repo import apply_feature_repo, materialize_incremental, open_feature_store
from tandem.context import CliContext

__all__ = ["apply_cmd", "materialize_cmd", "seed_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@click.command("seed")
@click.option("--customers", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--days", type=click.IntRange(min=2, max=365), default=30, show_default=True)
@click.option("--seed", "seed_value", type=int, default=7, show_default=True, help="Random seed.")
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Time of the newest snapshot, UTC (default: now).",
)
@pass_cli
def seed_cmd(cli: CliContext, customers: int, days: int, seed_value: int, end: datetime | None) -> None:
    """Write the demo's offline feature tables and fraud labels (deterministic for a seed)."""
    from core.demo_data import seed_demo_data

    stores = cli.stores()
    with (
        psycopg.connect(stores.postgres.url()) as conn,
        Progress(
            TextColumn("seeding"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=cli.console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("customers", total=customers)
        summary = seed_demo_data(
            conn,
            customers=customers,
            days=days,
            seed=seed_value,
            end=_aware(end),
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    cli.console.print(
        f"seeded {summary.customers:,} customers x {summary.days} days: {summary.profile_rows:,} profile rows, "
        f"{summary.txn_rows:,} transaction-stat rows, {summary.label_rows:,} labels "
        f"(fraud rate {summary.fraud_rate:.1%}) in {summary.seconds:.1f} s"
    )


@click.command("apply")
@pass_cli
def apply_cmd(cli: CliContext) -> None:
    """Migrate Tandem's schema to head (Alembic), then `feast apply` the feature repo."""
    stores = cli.stores()
    engine = create_db_engine(stores.postgres)
    try:
        with cli.console.status("migrating schema tandem"):
            upgrade_schema(engine)
            revision = current_revision(engine)
    finally:
        engine.dispose()
    cli.console.print(f"schema tandem at revision {revision}")
    with cli.console.status("feast apply"):
        views = apply_feature_repo(cli.settings, stores)
    cli.console.print(f"feast apply: {len(views)} feature views registered ({', '.join(views)})")


@click.command("materialize")
@pass_cli
def materialize_cmd(cli: CliContext) -> None:
    """Feast incremental materialization: newest offline rows to Redis."""
    stores = cli.stores()
    store = open_feature_store(cli.settings, stores)
    started = time.perf_counter()
    end = datetime.now(UTC)
    with cli.console.status("materializing"):
        materialize_incremental(store, end=end)
    cli.console.print(
        f"materialized up to {end:%Y-%m-%d %H:%M:%S} UTC in {time.perf_counter() - started:.1f} s"
    )
