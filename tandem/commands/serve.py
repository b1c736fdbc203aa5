"""`tandem serve`: the prediction API under uvicorn (uvloop, httptools, no access log by default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from tandem.context import CliContext

__all__ = ["serve_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


def _prepare_environment(workers: int) -> Path | None:
    """One OpenMP thread per worker; a shared Prometheus directory when several workers serve."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    if workers <= 1:
        return None
    directory = Path(tempfile.mkdtemp(prefix="tandem-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # where prometheus_client keeps values
    os.environ["TANDEM_PROMETHEUS_DIR"] = str(directory)  # what /metrics aggregates (service.health)
    return directory


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@pass_cli
def serve_cmd(cli: CliContext, host: str, port: int, workers: int, access_log: bool) -> None:
    """Run the prediction API until Ctrl-C or SIGTERM."""
    cli.stores()  # one clear line now if a store is unreachable, rather than a failing worker later
    from service.auth import AccessPolicy  # lazy import: the key check, before any worker starts

    AccessPolicy.from_settings(  # a bad key entry is one line here, not a traceback in each worker
        cli.settings.api_keys.get_secret_value(), read_keys_required=cli.settings.read_keys_required
    )
    metrics_dir = _prepare_environment(workers)
    import uvicorn  # lazy import: only this command serves

    if cli.settings.uses_local_stack:
        stores = cli.stores(check=False)
        os.environ["TANDEM_POSTGRES_URL"] = (
            stores.postgres.url()
        )  # workers re-read settings from the environment
        os.environ["TANDEM_REDIS_URL"] = stores.redis.url()
    cli.console.print(f"serving on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    try:
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
