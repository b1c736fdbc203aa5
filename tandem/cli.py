"""The `tandem` command line: one group, commands in small modules, one place that turns errors into lines.

A user mistake or an unreachable store ends with one readable line on stderr and a non-zero exit: 2 for
usage errors (bad option values), 1 for everything else. Never a stack trace for those.
"""

from __future__ import annotations

import logging
import sys

import click

from core.errors import TandemError
from tandem.context import CliContext
from tandem.lazy_group import LazyGroup

__all__ = ["cli", "main"]

COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("tandem.commands.stack", "up_cmd", "Start the embedded PostgreSQL and Redis under .tandem/."),
    "down": ("tandem.commands.stack", "down_cmd", "Stop the embedded PostgreSQL and Redis (data stays)."),
    "env": ("tandem.commands.stack", "env_cmd", "Print export lines for feast, psql, redis-cli, alembic."),
    "seed": ("tandem.commands.data", "seed_cmd", "Write the demo's offline tables and labels (COPY)."),
    "apply": ("tandem.commands.data", "apply_cmd", "Migrate schema tandem (Alembic), then feast apply."),
    "train": ("tandem.commands.models", "train_cmd", "Train on point-in-time features; register a model."),
    "models": ("tandem.commands.models", "models_group", "List registered model versions, promote one."),
    "materialize": ("tandem.commands.data", "materialize_cmd", "Feast materialization of the model's views."),
    "batch-predict": ("tandem.commands.batch", "batch_predict_cmd", "Score every entity, store and publish."),
    "serve": ("tandem.commands.serve", "serve_cmd", "Run the prediction API (uvicorn)."),
    "check-skew": ("tandem.commands.skew", "check_skew_cmd", "Compare offline and online; exit 1 on breach."),
    "skew": ("tandem.commands.skew", "skew_group", "Review skew reports: list, show."),
    "scheduler": ("tandem.commands.scheduler", "scheduler_cmd", "Run the job scheduler (one leader per DB)."),
    "stream": (
        "tandem.commands.stream",
        "stream_cmd",
        "Write events from Redis Streams or NATS like pushes.",
    ),
    "runs": ("tandem.commands.scheduler", "runs_cmd", "Job run history and the batch deadline forecast."),
    "demo": ("tandem.demo.journey", "demo_cmd", "The whole journey on the embedded stack (or set stores)."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens underneath (Feast, SQL, timings).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Tandem: batch and live predictions from one Feast feature definition, kept consistent."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliContext()


def _fail(message: str, code: int) -> None:
    click.echo(f"tandem: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group and map every known failure to one line and an exit code."""
    from core.stores.failures import describe_failure

    try:
        code = cli.main(args=argv, prog_name="tandem", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.UsageError as exc:
        where = f"tandem {exc.ctx.info_name}: " if exc.ctx and exc.ctx.parent else ""
        _fail(f"{where}{exc.format_message()}", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except TandemError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        message = describe_failure(exc)
        if message is None:
            raise
        _fail(message, 1)
    if isinstance(code, int) and code:  # click.exceptions.Exit(N): e.g. check-skew on a breach
        sys.exit(code)
