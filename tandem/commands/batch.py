"""`tandem batch-predict`: score every entity, store the run, publish it online."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from core.batch.predict import BatchRunResult, run_batch_predict
from core.records.prediction_runs import fail_orphaned_runs, record_owner
from core.records.tracked_run import tracked_run
from core.stores.database import create_db_engine
from core.stores.resolve import Stores
from tandem.context import CliContext, cli_user

__all__ = ["batch_predict_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


class _Reporter:
    """A progress bar on a terminal, a plain line per stage change otherwise."""

    def __init__(self, cli: CliContext) -> None:
        self.console = cli.console
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.last_stage = ""
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn("{task.description:<8}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.bar is None:
            if stage != self.last_stage:
                self.console.print(f"batch-predict: {stage} ...")
                self.last_stage = stage
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


def _summary(model: str, result: BatchRunResult) -> Table:
    table = Table(
        title=f"{model}: run {result.run_id}, {result.rows:,} entities, version {result.model_version}"
    )
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("rows/s", justify="right")
    for stage, seconds in result.stage_seconds.items():
        rate = f"{result.rows / seconds:,.0f}" if seconds > 0 else "-"
        table.add_row(stage, f"{seconds:.2f}", rate)
    total = sum(result.stage_seconds.values())
    table.add_row("total", f"{total:.2f}", f"{result.rows / total:,.0f}" if total > 0 else "-")
    return table


@click.command("batch-predict")
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Score as of this UTC time (default: now). Features dated after it are never used.",
)
@click.option("--run-id", type=click.UUID, default=None, help="Rerun this run id (replaces its rows).")
@click.option("--model", "model", default=None, help="Only this model (default: every promoted model).")
@click.option("--model-version", default=None, help="Score with this version instead of the promoted one.")
@pass_cli
def batch_predict_cmd(
    cli: CliContext,
    as_of: datetime | None,
    run_id: uuid.UUID | None,
    model: str | None,
    model_version: str | None,
) -> None:
    """Score every entity as of a time, store the run in PostgreSQL and publish it to the online store,
    for every promoted model (or `--model`)."""
    stores = cli.stores()
    names = cli.models(stores, model) if model_version is None or model is not None else []
    if not names:
        raise click.UsageError("--model-version needs --model")
    if len(names) > 1 and run_id is not None:
        raise click.UsageError("--run-id needs --model when several models are promoted")
    moment = as_of.replace(tzinfo=UTC) if as_of is not None else None
    engine = create_db_engine(stores.postgres, pool_size=1)
    try:
        # One job run, as the scheduler's batch_predict job: it owns each prediction run it starts, so a
        # process killed mid-run leaves runs that the next repair (scheduler or this command) marks failed.
        with tracked_run(
            engine, job="batch_predict", trigger="manual", requested_by=cli_user(),
            liveness_s=cli.settings.run_liveness_s,
        ) as job_run:  # fmt: skip
            with Session(engine) as session, session.begin():
                repaired = fail_orphaned_runs(session)
            if repaired:
                cli.console.print(f"marked failed, their processes dead: prediction runs {repaired}")
            for name in names:
                this_run = run_id or uuid.uuid4()
                with Session(engine) as session, session.begin():
                    record_owner(session, job_run_id=job_run.run_id, run_id=this_run)
                result = _run_one(
                    cli, stores, name, run_id=this_run, as_of=moment, model_version=model_version
                )
                job_run.rows = (job_run.rows or 0) + result.rows
                job_run.details.setdefault("models", {})[name] = {"run_id": str(result.run_id)}
    finally:
        engine.dispose()


def _run_one(
    cli: CliContext,
    stores: Stores,
    name: str,
    *,
    run_id: uuid.UUID,
    as_of: datetime | None,
    model_version: str | None,
) -> BatchRunResult:
    reporter = _Reporter(cli)
    run = functools.partial(
        run_batch_predict, cli.settings, stores, model_name=name, as_of=as_of, run_id=run_id,
        model_version=model_version, progress=reporter,
    )  # fmt: skip
    if reporter.bar is not None:
        with reporter.bar:
            result = run()
    else:
        result = run()
    cli.console.print(_summary(name, result))
    cli.console.print(f"{name}: published run {result.run_id} (as of {result.as_of:%Y-%m-%d %H:%M:%S} UTC)")
    return result
