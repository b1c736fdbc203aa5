"""The demo's names, in one place: its model, the feature service it reads (feature_repo/), its labels."""

from __future__ import annotations

from core.settings import Settings

__all__ = ["DEMO_FEATURE_SERVICE", "DEMO_LABELS", "DEMO_MODEL", "DEMO_PREDICTIONS_VIEW", "demo_settings"]

DEMO_MODEL = "customer_risk"
DEMO_FEATURE_SERVICE = "customer_risk_v1"
DEMO_PREDICTIONS_VIEW = "customer_risk_predictions"  # core.naming.predictions_view_name(DEMO_MODEL)
DEMO_LABELS = "features.fraud_labels"


def demo_settings(settings: Settings) -> Settings:
    """`settings` with the demo's model, feature service and labels where none are set (`tandem train`'s
    defaults; serving, batch and checks take every promoted model)."""
    return settings.model_copy(
        update={
            "model_name": settings.model_name or DEMO_MODEL,
            "feature_service": settings.feature_service or DEMO_FEATURE_SERVICE,
            "labels": settings.labels or DEMO_LABELS,
        }
    )
