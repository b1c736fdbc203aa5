"""`tandem stream`: consume feature events from Redis Streams or NATS JetStream until Ctrl-C/SIGTERM."""

from __future__ import annotations

import threading

import click

from tandem.context import CliContext

__all__ = ["stream_cmd"]

pass_cli = click.make_pass_decorator(CliContext)


@click.command("stream")
@click.option(
    "--broker",
    type=click.Choice(["redis", "nats"]),
    default=None,
    help="Where events come from (default: TANDEM_STREAM_BROKER, redis).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics here (default: TANDEM_STREAM_METRICS_PORT; 0: off).",
)
@pass_cli
def stream_cmd(cli: CliContext, broker: str | None, metrics_port: int | None) -> None:
    """Write feature events from a broker like pushes (offline, then online); stop with Ctrl-C/SIGTERM.

    Events: docs/streaming.md. Several processes share the stream (one consumer group); each batch is
    acknowledged once both stores have it, and a stop finishes the batch in hand first.
    """
    from streaming.runner import install_stop_signals, run_stream, start_metrics

    settings = cli.settings
    stores = cli.stores()
    server = start_metrics(settings, metrics_port)
    if server is not None:
        port = metrics_port if metrics_port is not None else settings.stream_metrics_port
        cli.console.print(f"metrics on http://{settings.stream_metrics_host}:{port}/metrics")
    stop = threading.Event()
    install_stop_signals(stop)
    run_stream(settings, stores, broker=broker, stop=stop, notify=cli.console.print)
