"""`tandem train` and `tandem models list|register|promote|sign`: train from the offline store, bring your own
model, manage registered versions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy.orm import Session

from core.errors import ConfigurationError, TamperedArtifactError
from core.model.artifacts import read_model_file
from core.model.lifecycle import register_estimator, register_trained
from core.model.registry import list_versions, promote, version_info
from core.model.signing import SigningKeys, sign_versions
from core.model.tasks import TASKS, Task, parse_task
from core.model.training import LABEL, train_model
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

_task_option = click.option(
    "--task",
    type=click.Choice(TASKS),
    default="classification",
    show_default=True,
    help="classification: score = probability of the greater of two classes; regression: predict().",
)


def _metric(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "n/a"


def _holdout_summary(task: str, metrics: Mapping[str, Any]) -> str:
    """The headline holdout metric of a version, for `models list`."""
    if task == "regression":
        return f"R2 {_metric(metrics.get('r2'))}" if "r2" in metrics else "n/a"
    return f"ROC AUC {_metric(metrics.get('roc_auc'))}" if "roc_auc" in metrics else "n/a"


def _metrics_table(title: str, task: Task, metrics: Mapping[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if task == "regression":
        table.add_row("MAE", _metric(metrics["mae"]))
        table.add_row("RMSE", _metric(metrics["rmse"]))
        table.add_row("R2", _metric(metrics["r2"]))
    else:
        table.add_row("ROC AUC", _metric(metrics["roc_auc"]))
        table.add_row("PR AUC", _metric(metrics["pr_auc"]))
        table.add_row("Brier", _metric(metrics["brier"]))
    table.add_row("rows (train / holdout)", f"{metrics['train_rows']:,} / {metrics['holdout_rows']:,}")
    if task == "classification":
        table.add_row(
            "positives (train / holdout)",
            f"{metrics['train_positives']:,} / {metrics['holdout_positives']:,}",
        )
    return table


@click.command("train")
@click.option("--name", "model_name", help="Model name (default: TANDEM_MODEL_NAME).")
@click.option(
    "--feature-service", help="Feast feature service of the inputs (default: TANDEM_FEATURE_SERVICE)."
)
@click.option(
    "--labels",
    "--label-table",
    "labels",
    default=None,
    help="[schema.]table or SELECT query with the join keys, an event timestamp and the label "
    "(default: TANDEM_LABELS).",
)
@click.option(
    "--label-column", default=LABEL, show_default=True, help="Column of the labels holding the target."
)
@click.option(
    "--timestamp-column",
    default="event_timestamp",
    show_default=True,
    help="Column of the labels holding each label's time (timestamptz, or naive timestamp = UTC).",
)
@_task_option
@click.option(
    "--promote", "promote_it", is_flag=True, help="Promote the new version: the service will load it."
)
@click.option(
    "--holdout",
    type=click.FloatRange(min=0.01, max=0.9),
    default=0.2,
    show_default=True,
    help="Fraction of the newest labels held out for evaluation.",
)
@pass_cli
def train_cmd(
    cli: CliContext,
    model_name: str | None,
    feature_service: str | None,
    labels: str | None,
    label_column: str,
    timestamp_column: str,
    task: str,
    promote_it: bool,
    holdout: float,
) -> None:
    """Train on point-in-time features from the offline store, evaluate, and register a model version."""
    from core.features.feast_repo import open_feature_store

    settings = cli.settings
    name = model_name or settings.model_name
    if name is None:
        raise click.UsageError("name the model: --name NAME (or TANDEM_MODEL_NAME)")
    if (feature_service or settings.feature_service) is None:
        raise click.UsageError("name its inputs: --feature-service FS (or TANDEM_FEATURE_SERVICE)")
    if (labels or settings.labels) is None:
        raise click.UsageError("name the labels: --labels TABLE_OR_QUERY (or TANDEM_LABELS)")
    stores = cli.stores()
    with disposing_engine(stores.postgres) as engine:
        store = open_feature_store(settings, stores)
        with cli.console.status("joining labels to point-in-time features (Feast)") as status:
            result = train_model(
                store,
                settings,
                engine=engine,
                label_table=labels,
                feature_service=feature_service,
                label_column=label_column,
                timestamp_column=timestamp_column,
                task=parse_task(task),
                holdout_fraction=holdout,
                progress=lambda stage: status.update(_NEXT_STAGE.get(stage, stage)),
            )
        with Session(engine) as session, session.begin():
            info = register_trained(session, model_name=name, result=result, promote_it=promote_it)
    metrics = result.metrics
    title = f"holdout metrics: {name} ({result.task}, {result.feature_service})"
    cli.console.print(_metrics_table(title, result.task, metrics))
    cli.console.print(
        f"registered {name} version {info.version} "
        f"(labels {result.training_start:%Y-%m-%d %H:%M} to {result.training_end:%Y-%m-%d %H:%M} UTC, "
        f"{metrics['seconds']['total']:.1f} s)" + (": promoted" if info.promoted else "")
    )


@click.group("models")
def models_group() -> None:
    """Registered model versions: list them, register one trained elsewhere, promote one."""


@models_group.command("list")
@click.option("--model", "model_name", help="Only this model's versions (default: every model).")
@pass_cli
def list_cmd(cli: CliContext, model_name: str | None) -> None:
    """Versions of every model (or one), newest first."""
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session:
        versions = list_versions(session, model_name=model_name)
    if not versions:
        which = f"of model {model_name!r} " if model_name else ""
        cli.console.print(f"no versions {which}yet: run `tandem train` or `tandem models register`")
        return
    table = Table(title=f"model {model_name}" if model_name else "models")
    table.add_column("model", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("task")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("holdout", justify="right")
    table.add_column("promoted")
    table.add_column("signed")
    for version in versions:
        table.add_row(
            version.model_name,
            version.version,
            version.task,
            f"{version.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            _holdout_summary(version.task, version.metrics),
            "yes" if version.promoted else "",
            "yes" if version.signed else "no",
        )
    cli.console.print(table)


@models_group.command("register")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", "model_name", required=True, help="Model name to register a version of.")
@click.option(
    "--feature-service", required=True, help="Feast feature service whose features the model reads."
)
@_task_option
@click.option(
    "--promote", "promote_it", is_flag=True, help="Promote the new version: the service will load it."
)
@click.option(
    "--trust",
    multiple=True,
    metavar="TYPE",
    help="A type a .skops file may hold beyond those skops trusts (repeat for each).",
)
@pass_cli
def register_cmd(
    cli: CliContext,
    path: Path,
    model_name: str,
    feature_service: str,
    task: str,
    promote_it: bool,
    trust: tuple[str, ...],
) -> None:
    """Register a fitted scikit-learn estimator or pipeline saved with joblib (.joblib/.pkl) or skops (.skops)."""
    from core.features.feast_repo import feature_service_refs, open_feature_store

    estimator = read_model_file(path, trusted=trust)
    stores = cli.stores()
    service_refs = feature_service_refs(open_feature_store(cli.settings, stores), feature_service)
    with disposing_engine(stores.postgres) as engine, Session(engine) as session, session.begin():
        info = register_estimator(
            session,
            model_name=model_name,
            estimator=estimator,
            feature_service=feature_service,
            service_refs=service_refs,
            task=parse_task(task),
            params={"file": path.name},
            promote_it=promote_it,
        )
    inputs = ", ".join(ref.rsplit(":", 1)[-1] for ref in info.feature_refs)
    cli.console.print(
        f"registered {model_name} version {info.version} ({info.task}, {feature_service}: {inputs})"
        + ("" if info.signed else ", unsigned")
        + (": promoted" if info.promoted else "")
    )


@models_group.command("promote")
@click.argument("version")
@click.option("--model", "model_name", help="The model VERSION belongs to (default: the one that has it).")
@pass_cli
def promote_cmd(cli: CliContext, version: str, model_name: str | None) -> None:
    """Make VERSION the version the service and batch predictions use."""
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session, session.begin():
        name = model_name or version_info(session, version=version).model_name
        info = promote(session, model_name=name, version=version)
    cli.console.print(f"promoted {name} version {info.version}")


@models_group.command("sign")
@click.option("--all", "every_model", is_flag=True, help="Sign the versions of every model.")
@click.option("--model", "model_name", help="Sign the versions of this model only.")
@click.option(
    "--adopt-unsigned",
    is_flag=True,
    help="Also sign versions that have no signature yet: only if you trust whoever could write them.",
)
@pass_cli
def sign_cmd(cli: CliContext, every_model: bool, model_name: str | None, adopt_unsigned: bool) -> None:
    """Sign stored versions with the first TANDEM_MODEL_SIGNING_KEY: after a key rotation, or to adopt old ones.

    A version signed by another configured key is re-signed; a wrong signature is never re-signed.
    """
    if every_model == (model_name is not None):
        raise click.UsageError("pass either --all or --model NAME")
    keys = SigningKeys.from_settings(cli.settings)
    if not keys.enabled:
        raise ConfigurationError("set TANDEM_MODEL_SIGNING_KEY (comma-separated: the first signs) to sign")
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session, session.begin():
        outcome = sign_versions(session, keys=keys, model_name=model_name, adopt_unsigned=adopt_unsigned)
    cli.console.print(
        f"signed {len(outcome['signed'])}, already current {len(outcome['current'])}, "
        f"refused {len(outcome['refused'])} (key {keys.signing_key_id})"
    )
    if outcome["refused"]:
        hint = "" if adopt_unsigned else " (unsigned ones need --adopt-unsigned)"
        raise TamperedArtifactError(
            f"not signed: {', '.join(outcome['refused'])}: wrong signature or hash{hint}"
        )
