"""`tandem up`, `down`, `env`: the embedded local stack, or the configured stores."""

from __future__ import annotations

import shlex

import click

from core.features.feast_repo import feast_env
from tandem.context import CliContext

__all__ = ["down_cmd", "env_cmd", "up_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


@click.command("up")
@pass_cli
def up_cmd(cli: CliContext) -> None:
    """Start the embedded PostgreSQL and Redis under .tandem/ (reuses them if they run)."""
    settings = cli.settings
    if not settings.uses_local_stack:
        stores = cli.stores()
        cli.console.print(f"using configured stores: {stores.postgres.masked()} and {stores.redis.masked()}")
        return
    from core.stack.local import start_local_stack

    with cli.console.status("starting the local stack"):
        stack = start_local_stack(settings)
    cli.console.print(f"PostgreSQL  {stack.postgres.masked()}  (pid {stack.postgres_pid})")
    cli.console.print(f"Redis       {stack.redis.masked()}  (pid {stack.redis_pid})")
    if stack.signing_key is not None:
        cli.console.print(f"model signing key in {stack.signing_key} (mode 0600; docs/security.md)")
    cli.console.print(f'data in {settings.home}; `eval "$(tandem env)"` to use feast, psql and redis-cli')


@click.command("down")
@pass_cli
def down_cmd(cli: CliContext) -> None:
    """Stop the embedded PostgreSQL and Redis (their data stays under .tandem/)."""
    from core.stack.local import stop_local_stack

    stopped = stop_local_stack(cli.settings)
    for line in stopped or ["the local stack was not running"]:
        cli.console.print(line)


@click.command("env")
@pass_cli
def env_cmd(cli: CliContext) -> None:
    """Print `export` lines so that feast, psql and redis-cli use the same stores: eval "$(tandem env)"."""
    stores = cli.stores(check=False)
    variables = feast_env(cli.settings, stores)
    if stores.local:
        from core.stack.local import env_lines, local_stack_status

        stack = local_stack_status(cli.settings)
        if stack is not None:
            for line in env_lines(stack, variables):
                click.echo(line)
            return
    variables = {
        "TANDEM_POSTGRES_URL": stores.postgres.url(),
        "TANDEM_REDIS_URL": stores.redis.url(),
        "PGHOST": stores.postgres.host,
        "PGPORT": str(stores.postgres.port),
        "PGUSER": stores.postgres.user,
        "PGDATABASE": stores.postgres.database,
        **variables,
    }
    for name, value in variables.items():
        click.echo(f"export {name}={shlex.quote(value)}")
