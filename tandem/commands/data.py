"""`tandem seed`, `apply`, `materialize`: data in, schema up, features online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import psycopg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import TandemError
from core.features.feast_repo import apply_feature_repo, open_feature_store, push_sources_without_table
from core.features.snapshots import service_specs
from core.settings import Settings
from core.stores.database import create_db_engine, current_revision, upgrade_schema
from core.stores.resolve import Stores
from tandem.context import CliContext, cli_user

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
    from tandem.demo.data import seed_demo_data

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
        unservable = _snapshot_specs(cli.settings, stores)  # now: jobs and the API then skip importing Feast
    cli.console.print(f"feast apply: {len(views)} feature views registered ({', '.join(views)})")
    for line in unservable:
        cli.console.print(line, soft_wrap=True, markup=False)
    for push_source, view in push_sources_without_table(open_feature_store(cli.settings, stores)):
        cli.console.print(
            f"warning: push source {push_source!r} cannot take pushes: its view {view!r} reads a query, not a "
            "table (give the view's PostgreSQLSource a table= to push to it)",
            soft_wrap=True,
            markup=False,
        )


def _snapshot_specs(settings: Settings, stores: Stores) -> list[str]:
    """Snapshot the feature service and predictions view of every promoted model; one warning line per
    model the repo cannot serve (returned)."""
    from sqlalchemy.orm import Session  # lazy imports: only apply needs them

    from core.model.promoted import promoted_models

    engine = create_db_engine(stores.postgres, pool_size=1)
    try:
        with Session(engine) as session:
            models = promoted_models(session)
    finally:
        engine.dispose()
    warnings = []
    for model in models:
        try:
            service_specs(
                settings,
                stores,
                feature_service=model.feature_service,
                predictions_view=model.predictions_view,
            )
        except TandemError as exc:
            warnings.append(
                f"warning: promoted model {model.name!r} cannot be served from this repo: {exc} "
                f"(declare its view with tandem.repo.predictions_view({model.name!r}, entities=[...]))"
            )
    return warnings


@click.command("materialize")
@click.option(
    "--reset",
    "reset_days",
    type=click.IntRange(min=1),
    default=None,
    metavar="DAYS",
    help="Purge this project's online keys, then materialize the last DAYS days in full (after re-seeding).",
)
@pass_cli
def materialize_cmd(cli: CliContext, reset_days: int | None) -> None:
    """Feast incremental materialization of the feature service's views: newest offline rows to Redis."""
    from core.batch.materialize import run_materialize
    from core.records.tracked_run import tracked_run

    stores = cli.stores()
    start = None
    if reset_days is not None:
        from core.online.store import OnlineStore  # lazy import: only --reset touches Redis directly

        online = OnlineStore.connect(stores.redis, project=cli.settings.feast_project)
        try:
            purged = online.purge()
        finally:
            online.close()
        start = datetime.now(UTC) - timedelta(days=reset_days)
        cli.console.print(f"purged {purged:,} online keys of project {cli.settings.feast_project}")
    engine = create_db_engine(stores.postgres, pool_size=1)
    try:
        with (
            tracked_run(
                engine,
                job="materialize",
                trigger="manual",
                requested_by=cli_user(),
                liveness_s=cli.settings.run_liveness_s,
            ) as run,
            cli.console.status("materializing"),
        ):
            result = run_materialize(cli.settings, stores, start=start)
            run.rows = result.rows
            run.details.update(result.details())
    finally:
        engine.dispose()
    for view in result.views:
        rows = "not counted" if view.rows is None else f"{view.rows:,} entities"
        cli.console.print(
            f"  {view.name}: {view.start:%Y-%m-%d %H:%M:%S} -> {view.end:%Y-%m-%d %H:%M:%S} UTC, {rows}"
        )
    cli.console.print(
        f"materialized {len(result.views)} feature views up to {result.end:%Y-%m-%d %H:%M:%S} UTC "
        f"in {result.seconds:.1f} s (job run {run.run_id})"
    )
