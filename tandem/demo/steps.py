"""The demo's steps that don't involve child processes: data and model, predictions table, skew summary."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from core.batch.materialize import run_materialize
from core.batch.predict import run_batch_predict
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.snapshots import service_specs
from core.model.lifecycle import train_and_promote
from core.online.store import OnlineStore
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.context import CliContext
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_MODEL, DEMO_PREDICTIONS_VIEW, demo_settings

__all__ = ["Timeline", "prepare_data", "show_predictions", "show_skew"]


class Timeline:
    """Prints each finished step with its duration, and a summary at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = self.mark = time.perf_counter()

    def step(self, text: str) -> None:
        """A finished step."""
        now = time.perf_counter()
        self.console.print(f"[green]✓[/green] {text} ({now - self.mark:.1f} s)")
        self.mark = now

    def summary(self) -> None:
        """Total time."""
        self.console.print(f"\ndemo ready in {time.perf_counter() - self.started:.1f} s")


def _ensure_demo_signing_key(cli: CliContext) -> None:
    """On configured stores without a key, the demo signs with a generated one under TANDEM_HOME, as the
    embedded stack does (its API and scheduler run here, with the same home)."""
    from core.model.signing import SigningKeys  # lazy imports: only the demo on configured stores
    from core.stack.local import ensure_signing_key

    if not SigningKeys.from_settings(cli.settings).enabled and not cli.settings.allow_unsigned_models:
        path = ensure_signing_key(cli.settings)
        cli.console.print(f"model signing key: {path} (no TANDEM_MODEL_SIGNING_KEY is set; docs/security.md)")


def prepare_data(cli: CliContext, timeline: Timeline, *, customers: int, days: int, seed: int) -> Stores:
    """up, apply, seed, train + promote, materialize, batch-predict."""
    console, settings = cli.console, cli.settings
    if settings.uses_local_stack:
        from core.stack.local import start_local_stack  # lazy import: only for the embedded stack

        with console.status("starting the embedded PostgreSQL and Redis"):
            stack = start_local_stack(settings)
        timeline.step(f"local stack up: {stack.postgres.masked()}, {stack.redis.masked()}")
    else:
        _ensure_demo_signing_key(cli)
    stores = cli.stores()
    engine = create_db_engine(stores.postgres)
    try:
        with console.status("migrating and applying the feature repo"):
            upgrade_schema(engine)
            views = apply_feature_repo(settings, stores)
            service_specs(
                settings, stores, feature_service=DEMO_FEATURE_SERVICE, predictions_view=DEMO_PREDICTIONS_VIEW
            )  # as `tandem apply` does: the API starts without importing Feast
        timeline.step(f"apply: schema tandem at head, {len(views)} feature views")
        with (
            console.status(f"seeding {customers:,} customers x {days} days"),
            psycopg.connect(stores.postgres.url()) as conn,
        ):
            from tandem.demo.data import seed_demo_data  # lazy import: demo data only

            seeded = seed_demo_data(conn, customers=customers, days=days, seed=seed, end=datetime.now(UTC))
        timeline.step(
            f"seed: {seeded.profile_rows + seeded.txn_rows:,} feature rows, {seeded.label_rows:,} labels"
        )
        with console.status("training"):
            trained, info = train_and_promote(
                open_feature_store(settings, stores), demo_settings(settings), engine=engine
            )
        timeline.step(
            f"train: model {info.version} promoted, holdout ROC AUC {trained.metrics['roc_auc']:.3f}"
        )
    finally:
        engine.dispose()
    with console.status("materializing features to Redis"):
        # The offline tables were just replaced: rebuild the project's online rows from them.
        online = OnlineStore.connect(stores.redis, project=settings.feast_project)
        try:
            online.purge()
        finally:
            online.close()
        materialized = run_materialize(settings, stores, start=seeded.start)
    timeline.step(f"materialize: {materialized.rows or 0:,} entities online")
    with console.status("batch-predicting every customer"):
        run = run_batch_predict(settings, stores, model_name=DEMO_MODEL)
    timeline.step(f"batch-predict: {run.rows:,} scores stored and published (run {str(run.run_id)[:8]})")
    return stores


def show_predictions(console: Console, url: str, customer_ids: list[int]) -> None:
    """Ask the API and print who was served from batch and who was re-scored live, and why."""
    body = {"entities": [{"customer_id": i} for i in customer_ids]}
    answers = httpx.post(f"{url}/v1/predict", json=body, timeout=10).json()["predictions"]
    table = Table(title="predictions from the API (pushed customers first)")
    for column in ("customer", "score", "source", "reason", "staleness", "model"):
        table.add_column(column)
    for item in answers:
        staleness = item["staleness_s"]
        table.add_row(
            str(item["entity"]["customer_id"]),
            f"{item['score']:.4f}",
            item["source"],
            item["reason"],
            f"{staleness:,.0f} s" if staleness is not None else "-",
            item["model_version"],
        )
    console.print(table)


def show_skew(cli: CliContext, stores: Stores, timeline: Timeline) -> None:
    """Run the consistency check on a sample and print its verdict."""
    from consistency.checker import run_skew_check  # lazy import: the checker pulls in Feast

    with cli.console.status("checking batch/online consistency"):
        report = run_skew_check(cli.settings, stores, model_name=DEMO_MODEL, sample=2_000)
    parity = report.parity
    timeline.step(
        f"skew check: report {report.id} status {report.status.upper()}, {report.entities_checked:,} entities; "
        f"parity {parity.get('status', parity.get('summary', 'n/a'))}"
    )
