"""`tandem train` and `tandem models list|promote`: train from the offline store, manage registered versions."""

from __future__ import annotations

from datetime import UTC

import click
from rich.table import Table
from sqlalchemy.orm import Session

from core.model.lifecycle import register_trained
from core.model.registry import list_versions, promote
from core.model.training import LABEL_TABLE, train_model
from core.stores.database import disposing_engine
from tandem.context import CliContext

__all__ = ["models_group", "train_cmd"]

pass_cli = click.make_pass_decorator(CliContext)

# What runs after each stage train_model reports, for the status line.
_NEXT_STAGE = {
    "features": "fitting on the older labels",
    "fit": "evaluating on the holdout",
    "evaluate": "refitting on every label",
}


def _metric(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "n/a"


@click.command("train")
@click.option(
    "--promote", "promote_it", is_flag=True, help="Promote the new version: the service will load it."
)
@click.option(
    "--label-table",
    default=LABEL_TABLE,
    show_default=True,
    help="[schema.]table of entity keys, event_timestamp, label.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(min=0.01, max=0.9),
    default=0.2,
    show_default=True,
    help="Fraction of the newest labels held out for evaluation.",
)
@pass_cli
def train_cmd(cli: CliContext, promote_it: bool, label_table: str, holdout: float) -> None:
    """Train on point-in-time features from the offline store, evaluate, and register a model version."""
    from core.features.feast_repo import open_feature_store

    settings = cli.settings
    stores = cli.stores()
    with disposing_engine(stores.postgres) as engine:
        store = open_feature_store(settings, stores)
        with cli.console.status("joining labels to point-in-time features (Feast)") as status:
            result = train_model(
                store,
                settings,
                engine=engine,
                label_table=label_table,
                holdout_fraction=holdout,
                progress=lambda stage: status.update(_NEXT_STAGE.get(stage, stage)),
            )
        with Session(engine) as session, session.begin():
            info = register_trained(
                session, model_name=settings.model_name, result=result, promote_it=promote_it
            )
    metrics = result.metrics
    table = Table(title=f"holdout metrics: {settings.model_name} ({result.feature_service})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("ROC AUC", _metric(metrics["roc_auc"]))
    table.add_row("PR AUC", _metric(metrics["pr_auc"]))
    table.add_row("Brier", _metric(metrics["brier"]))
    table.add_row("rows (train / holdout)", f"{metrics['train_rows']:,} / {metrics['holdout_rows']:,}")
    table.add_row(
        "positives (train / holdout)", f"{metrics['train_positives']:,} / {metrics['holdout_positives']:,}"
    )
    cli.console.print(table)
    cli.console.print(
        f"registered {settings.model_name} version {info.version} "
        f"(labels {result.training_start:%Y-%m-%d %H:%M} to {result.training_end:%Y-%m-%d %H:%M} UTC, "
        f"{metrics['seconds']['total']:.1f} s)" + (": promoted" if info.promoted else "")
    )


@click.group("models")
def models_group() -> None:
    """Registered model versions: list them, promote one."""


@models_group.command("list")
@pass_cli
def list_cmd(cli: CliContext) -> None:
    """Versions of the configured model, newest first."""
    name = cli.settings.model_name
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session:
        versions = list_versions(session, model_name=name)
    if not versions:
        cli.console.print(f"no versions of model {name!r} yet: run `tandem train`")
        return
    table = Table(title=f"model {name}")
    table.add_column("version", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("ROC AUC", justify="right")
    table.add_column("promoted")
    for version in versions:
        table.add_row(
            version.version,
            f"{version.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            _metric(version.metrics.get("roc_auc")),
            "yes" if version.promoted else "",
        )
    cli.console.print(table)


@models_group.command("promote")
@click.argument("version")
@pass_cli
def promote_cmd(cli: CliContext, version: str) -> None:
    """Make VERSION the version the service and batch predictions use."""
    name = cli.settings.model_name
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session, session.begin():
        info = promote(session, model_name=name, version=version)
    cli.console.print(f"promoted {name} version {info.version}")
