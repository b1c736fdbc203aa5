"""Prometheus metrics shared by Tandem's processes (service, scheduler, command line).

Each process registers them once, on import, in prometheus_client's default registry; whichever process
exposes `/metrics` (the service, or `tandem scheduler --metrics-port`) reports its own values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BATCH_DEADLINE_SLACK", "JOB_DURATION", "JOB_RUNS", "STREAM_RESCORED", "STREAM_RESCORE_SECONDS"]

BATCH_DEADLINE_SLACK = Gauge(
    "tandem_batch_deadline_slack_seconds",
    "Forecast seconds between the next batch run's expected finish and its deadline (negative: late; "
    "NaN: no history yet).",
)

JOB_RUNS = Counter(
    "tandem_job_runs_total",
    "Job run attempts by job and final status (succeeded, failed).",
    ["job", "status"],
)

JOB_DURATION = Histogram(
    "tandem_job_duration_seconds",
    "Wall time of job run attempts.",
    ["job"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
)

STREAM_RESCORED = Counter(
    "tandem_stream_rescored_total",
    "Entities touched by fresh events, by model and outcome (rescored, unchanged, failed).",
    ["model", "outcome"],
)

STREAM_RESCORE_SECONDS = Histogram(
    "tandem_stream_rescore_seconds",
    "Wall time of one stream re-score of one model (read, select, score, copy, publish).",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
