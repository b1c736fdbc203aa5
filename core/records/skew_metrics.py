"""Prometheus metrics of the skew checker, set by the process that ran the check (scheduler or command line).

- `tandem_feature_skew_ratio{view,feature}`: the feature's mismatch rate in the latest report;
- `tandem_skew_report_status`: the latest report's status, 0 ok, 1 warn, 2 breach;
- `tandem_skew_report_timestamp_seconds`: when the latest report finished (Unix time).
"""

from __future__ import annotations

from prometheus_client import Gauge

from core.records.skew_models import SkewReportInfo

__all__ = [
    "FEATURE_SKEW_RATIO",
    "SKEW_REPORT_STATUS",
    "SKEW_REPORT_TIMESTAMP",
    "STATUS_VALUES",
    "record_skew_metrics",
]

STATUS_VALUES: dict[str, int] = {"ok": 0, "warn": 1, "breach": 2}

FEATURE_SKEW_RATIO = Gauge(
    "tandem_feature_skew_ratio",
    "Share of sampled entities whose online value of the feature is skewed (latest skew report of the model).",
    ["model", "view", "feature"],
)

SKEW_REPORT_STATUS = Gauge(
    "tandem_skew_report_status",
    "Status of the model's latest skew report: 0 ok, 1 warn, 2 breach.",
    ["model"],
)

SKEW_REPORT_TIMESTAMP = Gauge(
    "tandem_skew_report_timestamp_seconds",
    "Unix time at which the model's latest skew report finished.",
    ["model"],
)


def record_skew_metrics(report: SkewReportInfo) -> None:
    """Set the gauges of the report's model from a saved report."""
    model = report.model_name or ""
    for finding in report.findings:
        FEATURE_SKEW_RATIO.labels(model=model, view=finding.feature_view, feature=finding.feature).set(
            finding.mismatch_rate
        )
    SKEW_REPORT_STATUS.labels(model=model).set(STATUS_VALUES.get(report.status, 2))
    finished = report.finished_at or report.created_at
    SKEW_REPORT_TIMESTAMP.labels(model=model).set(finished.timestamp())
