"""`tandem check-skew` and `tandem skew list|show|ack`: run the consistency checker, read and acknowledge its
reports."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from consistency.checker import run_skew_check
from core.records.skew_models import CLASSES, SkewReportInfo
from core.records.skew_reports import ack_report, get_report, list_reports
from core.serving.blend import SkewPolicy
from core.serving.steering import steering_overview
from core.stores.database import disposing_engine
from core.stores.resolve import check_postgres
from tandem.context import CliContext

__all__ = ["check_skew_cmd", "render_report", "skew_group"]

pass_cli = click.make_pass_decorator(CliContext)

_STYLE = {"ok": "green", "warn": "yellow", "breach": "bold red", "skipped": "dim"}
_SHORT = {
    "match": "match",
    "value_mismatch": "value",
    "missing_online": "missing",
    "stale_online": "stale",
    "fresher_online": "fresher",
    "expired_online": "expired",
    "online_only_fresh": "online-only",
}


def _status(status: str | None) -> Text:
    return Text(status or "-", style=_STYLE.get(status or "", ""))


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _features_table(report: SkewReportInfo) -> Table:
    table = Table(
        title=f"skew report {report.id} ({report.model_name or '-'}): {report.entities_checked:,} entities",
        title_justify="left",
    )
    table.add_column("view")
    table.add_column("feature")
    for name in CLASSES:
        table.add_column(_SHORT[name], justify="right")
    table.add_column("mismatch", justify="right")
    table.add_column("PSI", justify="right")
    table.add_column("JS", justify="right")
    table.add_column("status")
    for finding in report.findings:
        table.add_row(
            finding.feature_view,
            finding.feature,
            *(f"{finding.counts.get(name, 0):,}" for name in CLASSES),
            f"{finding.mismatch_rate:.2%}",
            _number(finding.psi),
            _number(finding.js_distance),
            _status(finding.status),
        )
    return table


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    if parity.get("status") == "skipped":
        return [f"parity: skipped ({parity.get('reason')})"]
    counts = parity.get("counts", {})
    unchanged, changed = parity.get("unchanged", {}), parity.get("changed", {})
    lines = [
        f"parity ({parity.get('model_version')}): "
        + ", ".join(f"{name} {count:,}" for name, count in counts.items()),
        f"  unchanged since the batch run: {unchanged.get('agree', 0):,} agree, "
        f"{unchanged.get('disagree', 0):,} disagree (tolerance {parity.get('tolerance')})",
    ]
    if changed.get("count"):
        lines.append(
            f"  changed since the batch run: {changed['count']:,} entities, score difference mean "
            f"{changed['mean']:+.4f}, |diff| p50 {changed['p50_abs']:.4f}, p95 {changed['p95_abs']:.4f}, "
            f"max {changed['max_abs']:.4f}"
        )
    for item in parity.get("flagged", []):
        names = ", ".join(f["feature"] for f in item.get("features", [])) or "no input differs"
        lines.append(
            f"  flagged entity {item['entity_id']}: stored {item['stored_score']:.6f}, "
            f"live {item['live_score']:.6f} ({names})"
        )
    return lines


def render_report(report: SkewReportInfo) -> RenderableType:
    """The per-feature table, the parity summary and the report's status line."""
    parity_status = str(report.parity.get("status", "skipped"))
    head = Text.assemble(
        f"report {report.id}  ",
        _status(report.status),
        f"  service {report.feature_service}, watermark {report.watermark:%Y-%m-%d %H:%M:%S} UTC, "
        f"mismatch rate {report.mismatch_rate:.3%}, parity ",
        _status(parity_status),
    )
    parts: list[RenderableType] = [_features_table(report), *_parity_lines(report.parity), head]
    if report.acked_at is not None:
        parts.append(
            f"acknowledged by {report.acked_by} at {report.acked_at:%Y-%m-%d %H:%M} UTC: {report.ack_comment}"
        )
    return Group(*parts)


def _positive(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive number of entities, got {value}")
    return value


@click.command("check-skew")
@click.option(
    "--sample", type=int, default=None, callback=_positive, help="Entities to sample [default: 10000]."
)
@click.option("--all", "all_entities", is_flag=True, help="Check every entity instead of a sample.")
@click.option("--seed", type=int, default=None, help="Random seed of the sample (repeatable checks).")
@click.option("--model", "model", default=None, help="Only this model (default: every promoted model).")
@pass_cli
def check_skew_cmd(
    cli: CliContext, sample: int | None, all_entities: bool, seed: int | None, model: str | None
) -> None:
    """Compare online values with the offline store as of the last materialization, per promoted model (or
    `--model`); exit 1 when any report is a breach."""
    if sample is not None and all_entities:
        raise click.UsageError("--sample and --all exclude each other")
    stores = cli.stores()
    breach = False
    for name in cli.models(stores, model):
        with cli.console.status(f"checking skew of {name} ...", spinner="dots"):
            report = run_skew_check(
                cli.settings,
                stores,
                model_name=name,
                sample=10_000 if sample is None else sample,
                all_entities=all_entities,
                seed=seed,
            )
        cli.console.print(render_report(report))
        breach = breach or report.status == "breach"
    if breach:
        raise click.exceptions.Exit(1)


@click.group("skew")
def skew_group() -> None:
    """Read and acknowledge skew reports."""


@skew_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many reports.")
@click.option("--model", "model", default=None, help="Only this model's reports (default: every model's).")
@pass_cli
def list_cmd(cli: CliContext, limit: int, model: str | None) -> None:
    """The newest skew reports: model, status, mismatch rates, parity, acknowledgement."""
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session:
        reports = list_reports(session, limit=limit, model_name=model)
    if not reports:
        cli.console.print("no skew reports yet: run `tandem check-skew`")
        return
    table = Table(title="skew reports, newest first", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("created (UTC)")
    table.add_column("model")
    table.add_column("status")
    for name in ("entities", "mismatch", "worst feature"):
        table.add_column(name, justify="right")
    table.add_column("parity")
    table.add_column("acknowledged")
    for item in reports:
        table.add_row(
            str(item.id),
            f"{item.created_at:%Y-%m-%d %H:%M:%S}",
            item.model_name or "-",
            _status(item.status),
            f"{item.entities_checked:,}",
            f"{item.mismatch_rate:.3%}",
            f"{item.max_feature_mismatch_rate:.3%}",
            _status(item.parity_status),
            f"{item.acked_by} {item.acked_at:%Y-%m-%d %H:%M}" if item.acked_at else "-",
        )
    cli.console.print(table)


@skew_group.command("show")
@click.argument("report_id", type=click.IntRange(min=1))
@pass_cli
def show_cmd(cli: CliContext, report_id: int) -> None:
    """One skew report: the per-feature table, the parity section, and what the skew policy does to its
    model now."""
    settings = cli.settings
    with disposing_engine(cli.stores().postgres) as engine, Session(engine) as session:
        report = get_report(session, report_id=report_id)
        steering = next(
            (
                item
                for item in steering_overview(
                    session,
                    policy=SkewPolicy(settings.skew_policy),
                    ack_stops=settings.skew_ack_stops_steering,
                    default_breach=settings.mismatch_rate_breach,
                )
                if item.model == report.model_name
            ),
            None,
        )
    cli.console.print(render_report(report))
    if steering is not None and steering.report is not None:
        where = "" if steering.report.report_id == report.id else " (only the model's latest report steers)"
        cli.console.print(
            f"skew policy {settings.skew_policy}, model {steering.model}: {steering.describe()}{where}",
            highlight=False,
        )


@skew_group.command("ack")
@click.argument("report_id", type=click.IntRange(min=1, max=2**63 - 1))
@click.option("--by", "by", required=True, help="Who acknowledges the report.")
@click.option("--comment", default="", help="Why (e.g. 'known push lag, fixed in #123').")
@click.option("--replace", is_flag=True, help="Replace an existing acknowledgement instead of refusing.")
@pass_cli
def ack_cmd(cli: CliContext, report_id: int, by: str, comment: str, replace: bool) -> None:
    """Acknowledge a skew report (the same record as POST /v1/skew/reports/{id}/ack). An acknowledged report
    stops steering answers (TANDEM_SKEW_ACK_STOPS_STEERING) once the API's watcher reads it."""
    stores = cli.stores(check=False)
    check_postgres(stores.postgres)  # Redis plays no part in an acknowledgement
    try:
        with (
            disposing_engine(stores.postgres) as engine,
            Session(engine) as session,
            session.begin(),
        ):
            report = ack_report(session, report_id=report_id, by=by, comment=comment, replace=replace)
    except ValueError as exc:  # bad text: a usage mistake, named as the option
        message = str(exc).replace("field 'by'", "--by").replace("field 'comment'", "--comment")
        raise click.UsageError(message) from None
    stops = cli.settings.skew_ack_stops_steering
    cli.console.print(
        f"skew report {report.id} ({report.model_name or '-'}) acknowledged by {report.acked_by}"
        + (
            f"; it no longer steers answers (within {cli.settings.model_poll_s:g} s on each API worker)"
            if stops
            else "; it keeps steering answers (TANDEM_SKEW_ACK_STOPS_STEERING is false)"
        ),
        highlight=False,
    )
