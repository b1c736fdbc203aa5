"""Keeping each served model's skew steering current: its latest skew report, read off the request path.

The lifespan's watcher calls `SteeringSync.refresh` every `TANDEM_MODEL_POLL_S` (and once at start-up): one
query for the newest report of every served model, handed to each prediction service, whose `steering`
then says what the skew policy does to its answers (`core.serving.steering`). A failed read keeps the last
known state and is logged once until a read succeeds again. The gauges `tandem_skew_steering_active` and
`tandem_skew_steering_advised` follow every refresh.
"""

from __future__ import annotations

import logging

from anyio import to_thread
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.skew_steering import SteeringReport, latest_steering_reports
from core.serving.blend import STEERING_REASONS
from core.serving.steering import ModelSteering
from service.metrics import SKEW_STEERING_ACTIVE, SKEW_STEERING_ADVISED
from service.models import ServedModels

__all__ = ["SteeringSync", "record_steering"]

logger = logging.getLogger(__name__)


def record_steering(steering: ModelSteering) -> None:
    """Set the model's steering gauges (1 for the reason that steers or would steer, 0 for the others)."""
    for reason in STEERING_REASONS:
        on = steering.reason is reason
        SKEW_STEERING_ACTIVE.labels(steering.model, reason.value).set(int(on and steering.active))
        SKEW_STEERING_ADVISED.labels(steering.model, reason.value).set(int(on and steering.advised))


class SteeringSync:
    """Reads the served models' latest skew reports into their prediction services."""

    def __init__(self, engine: Engine, *, default_breach: float) -> None:
        self.engine = engine
        self.default_breach = default_breach
        self.failing = False  # the last read failed (said once)

    def _read(self, names: list[str]) -> dict[str, SteeringReport]:
        with Session(self.engine) as session:
            return latest_steering_reports(session, default_breach=self.default_breach, model_names=names)

    async def refresh(self, models: ServedModels) -> None:
        """Hand every served model its newest report; on failure keep the last ones (never raises)."""
        names = models.names()
        if not names:
            return
        try:
            reports = await to_thread.run_sync(self._read, names)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down or slow: the last known state stays
            if not self.failing:
                logger.warning("skew steering not refreshed (keeping the last known state): %s", exc)
            self.failing = True
            return
        if self.failing:
            logger.info("skew steering refreshed again")
        self.failing = False
        for name, prediction in models:
            report = reports.get(name)
            current = prediction.skew_report
            if report != current:  # a new report, or its ack changed
                prediction.skew_report = report
                steering = prediction.steering
                if steering.report is not None:
                    logger.info("model %s: %s", name, steering.describe())
            record_steering(prediction.steering)
