"""The stream consumer's Prometheus metrics (served by `tandem stream` on its own loopback port).

Events by outcome (`stored`, `replayed`, `deferred`, `dead`: the rate is events/s), dead letters by reason,
micro-batch latency (read to acknowledged), and how far the consumer group is behind: `lag` (events not
yet delivered to the group: XINFO GROUPS `lag`, JetStream `num_pending`) and `pending` (delivered, not
acknowledged yet).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from streaming.writer import BatchOutcome

__all__ = ["BATCH_SECONDS", "DEAD_LETTERS", "EVENTS", "LAG", "PENDING", "record_batch"]

EVENTS = Counter(
    "tandem_stream_events_total",
    "Stream events by outcome: stored (appended offline, then online), replayed (seen before: nothing "
    "appended), deferred (online write left to the push outbox), dead (dead-letter stream).",
    ["broker", "outcome"],
)
DEAD_LETTERS = Counter(
    "tandem_stream_dead_letters_total",
    "Events sent to the dead-letter stream, by reason (bad_event, unknown_source, invalid_row, not_appendable, offline_rejected).",
    ["broker", "reason"],
)
BATCH_SECONDS = Histogram(
    "tandem_stream_batch_seconds",
    "Wall time of a micro-batch, from read to acknowledged.",
    ["broker"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "tandem_stream_lag",
    "Events in the stream not yet delivered to the consumer group (NaN: the broker does not say).",
    ["broker"],
)
PENDING = Gauge(
    "tandem_stream_pending",
    "Events delivered to the consumer group and not acknowledged yet.",
    ["broker"],
)


def record_batch(broker: str, outcome: BatchOutcome, seconds: float) -> None:
    """Count one acknowledged micro-batch."""
    for name, count in (
        ("stored", outcome.stored),
        ("replayed", outcome.replayed),
        ("deferred", outcome.deferred),
        ("dead", len(outcome.dead)),
    ):
        if count:
            EVENTS.labels(broker, name).inc(count)
    for letter in outcome.dead:
        DEAD_LETTERS.labels(broker, letter.kind).inc()
    BATCH_SECONDS.labels(broker).observe(seconds)
