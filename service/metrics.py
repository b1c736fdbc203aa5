"""The API's Prometheus metrics (HTTP latency comes from Litestar's Prometheus middleware)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_COVERAGE",
    "DEGRADED",
    "FEATURE_AGE",
    "MODEL_VERSION",
    "PREDICTIONS",
    "PREDICT_LATENCY",
    "PREDICT_ROUTES",
    "SKEW_STEERING_ACTIVE",
    "SKEW_STEERING_ADVISED",
    "Coverage",
]

# The prediction routes are timed in their handlers with pre-bound children (cheaper than the generic HTTP
# middleware, which skips them; every other route is timed by Litestar's Prometheus middleware).
PREDICT_LATENCY = Histogram(
    "tandem_predict_latency_seconds",
    "Latency of the prediction routes, measured in the handler",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PREDICT_ROUTES = ("/v1/predict",)
PREDICTIONS = Counter(
    "tandem_predictions_total", "Answers served, by model, source and reason", ["model", "source", "reason"]
)
DEGRADED = Counter("tandem_degraded_total", "Answers served in a degraded mode")
FEATURE_AGE = Histogram(
    "tandem_feature_age_seconds",
    "Age of the data an answer was computed from (stored score age, or newest online feature age)",
    buckets=(1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 3 * 86_400, 7 * 86_400),
)
MODEL_VERSION = Gauge(
    "tandem_model_loaded", "1 for each model version this worker serves", ["model", "model_version"]
)
SKEW_STEERING_ACTIVE = Gauge(
    "tandem_skew_steering_active",
    "1 while the skew policy (enforce) steers the model's auto answers for the reason "
    "(online_skewed: stored scores preferred; parity_breached: live preferred), else 0",
    ["model", "reason"],
)
SKEW_STEERING_ADVISED = Gauge(
    "tandem_skew_steering_advised",
    "1 while the skew policy (annotate) would steer the model's auto answers for the reason, else 0",
    ["model", "reason"],
)
BATCH_COVERAGE = Gauge("tandem_batch_coverage_ratio", "Share of answers served from stored batch scores")


class Coverage:
    """Running share of batch-served answers in this worker."""

    __slots__ = ("batch", "total")

    def __init__(self) -> None:
        self.batch = 0
        self.total = 0

    def add(self, *, batch: int, total: int) -> None:
        """Count one request's answers and update the gauge."""
        self.batch += batch
        self.total += total
        if self.total:
            BATCH_COVERAGE.set(self.batch / self.total)
