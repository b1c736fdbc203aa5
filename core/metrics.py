"""Prometheus metrics shared by Tandem's processes (service, scheduler, command line).

Each process registers them once, on import, in prometheus_client's default registry; whichever process
exposes `/metrics` (the service, or `tandem scheduler --metrics-port`) reports its own values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BATCH_DEADLINE_SLACK", "JOB_DURATION", "JOB_RUNS"]

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
