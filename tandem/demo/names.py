"""The demo's names, in one place: its model and the feature service the model reads (feature_repo/)."""

from __future__ import annotations

__all__ = ["DEMO_FEATURE_SERVICE", "DEMO_MODEL", "DEMO_PREDICTIONS_VIEW"]

DEMO_MODEL = "customer_risk"
DEMO_FEATURE_SERVICE = "customer_risk_v1"
DEMO_PREDICTIONS_VIEW = "customer_risk_predictions"  # core.naming.predictions_view_name(DEMO_MODEL)
