"""`tandem scheduler` (lead or stand by, schedule the jobs) and `tandem runs` (job history, deadline)."""

from __future__ import annotations

import threading
from datetime import datetime

import click
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from core.errors import ConfigurationError
from core.records.deadline import DeadlineForecast
from core.records.job_runs import JOB_NAMES, JobRunInfo, forecast_batch_deadline, list_job_runs
from core.stores.database import create_db_engine
from tandem.context import CliContext

__all__ = ["runs_cmd", "scheduler_cmd"]

pass_cli = click.make_pass_decorator(CliContext)

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "yellow",
    "requested": "cyan",
    "skipped": "dim",
}


@click.command("scheduler")
@click.option(
    "--jobs",
    "job_names",
    default=None,
    envvar="TANDEM_SCHEDULER_JOBS",
    help="Comma-separated jobs to schedule (default: all: materialize, batch_predict, check_skew).",
)
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics here."
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics server.")
@pass_cli
def scheduler_cmd(
    cli: CliContext, job_names: str | None, metrics_port: int | None, metrics_host: str
) -> None:
    """Run the job scheduler: lead (one process per database) or wait as a standby; stop with Ctrl-C/SIGTERM."""
    from scheduler.jobs import default_jobs
    from scheduler.runner import LEADERSHIP_LOST, exit_now, install_stop_signals, run_scheduler

    registry = default_jobs(cli.settings).select(job_names)
    stores = cli.stores()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
        cli.console.print(f"metrics on http://{metrics_host}:{metrics_port}/metrics")
    stop = threading.Event()
    install_stop_signals(stop)
    code = run_scheduler(cli.settings, stores, registry=registry, stop=stop, notify=cli.console.print)
    if code == LEADERSHIP_LOST:
        cli.console.print("[red]leader lease lost: exiting so that only one scheduler runs jobs[/red]")
        exit_now(code)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _short(error: str | None, limit: int = 60) -> str:
    if not error:
        return ""
    return error if len(error) <= limit else error[: limit - 1] + "…"


def runs_table(runs: list[JobRunInfo]) -> Table:
    """Job runs, newest first, as a rich table."""
    table = Table(title="job runs (UTC)", title_justify="left")
    for column in (
        "id",
        "job",
        "models",
        "trigger",
        "status",
        "started",
        "duration",
        "rows",
        "attempt",
        "error",
    ):
        table.add_column(
            column, justify="right" if column in {"id", "duration", "rows", "attempt"} else "left"
        )
    for run in runs:
        table.add_row(
            str(run.id),
            run.job,
            run.model_name or ", ".join(run.details.get("models", {})) or "-",
            run.trigger,
            Text(run.status, style=_STATUS_STYLE.get(run.status, "")),
            _when(run.started_at or run.requested_at),
            "-" if run.duration_s is None else f"{run.duration_s:.1f} s",
            "-" if run.rows is None else f"{run.rows:,}",
            str(run.attempt),
            _short(run.error),
        )
    return table


def forecast_line(forecast: DeadlineForecast) -> Text:
    """The forecast sentence, with LATE in red."""
    line = Text(forecast.describe().removesuffix(", LATE"))
    if forecast.late:
        line.append(", ")
        line.append("LATE", style="bold red")
    return line


@click.command("runs")
@click.option("--job", type=click.Choice(JOB_NAMES), default=None, help="Only this job's runs.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--model", "model", default=None, help="Only the runs for this model.")
@pass_cli
def runs_cmd(cli: CliContext, job: str | None, limit: int, model: str | None) -> None:
    """Job run history (status, duration, rows, models, errors) and the batch deadline forecast."""
    engine = create_db_engine(cli.stores().postgres, pool_size=1)
    try:
        with Session(engine) as session:
            runs = list_job_runs(session, job=job, model_name=model, limit=limit)
            forecast = forecast_batch_deadline(session, settings=cli.settings)
    except ProgrammingError as exc:
        if "job_runs" not in str(exc.orig):
            raise
        raise ConfigurationError("table tandem.job_runs is missing: run `tandem apply` first") from None
    finally:
        engine.dispose()
    if runs:
        cli.console.print(runs_table(runs))
    else:
        cli.console.print(f"no job runs yet{f' for {job}' if job else ''}")
    cli.console.print(forecast_line(forecast))
