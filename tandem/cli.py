"""The `tandem` command line: one group, commands in small modules, one place that turns errors into lines.

A user mistake or an unreachable store ends with one readable line on stderr and a non-zero exit: 2 for
usage errors (bad option values), 1 for everything else. Never a stack trace for those.
"""

from __future__ import annotations

import logging
import sys

import click

from core.errors import TandemError
from tandem.commands_batch import batch_predict_cmd
from tandem.commands_data import apply_cmd, materialize_cmd, seed_cmd
from tandem.commands_models import models_group, train_cmd
from tandem.commands_scheduler import runs_cmd, scheduler_cmd
from tandem.commands_serve import serve_cmd
from tandem.commands_skew import check_skew_cmd, skew_group
from tandem.commands_stack import down_cmd, env_cmd, up_cmd
from tandem.context import CliContext
from tandem.demo import demo_cmd

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens underneath (Feast, SQL, timings).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Tandem: batch and live predictions from one Feast feature definition, kept consistent."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliContext()


for command in (
    up_cmd,
    down_cmd,
    env_cmd,
    seed_cmd,
    apply_cmd,
    train_cmd,
    models_group,
    materialize_cmd,
    batch_predict_cmd,
    serve_cmd,
    check_skew_cmd,
    skew_group,
    scheduler_cmd,
    runs_cmd,
    demo_cmd,
):
    cli.add_command(command)


def _fail(message: str, code: int) -> None:
    click.echo(f"tandem: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group and map every known failure to one line and an exit code."""
    from core.failures import describe_failure

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
