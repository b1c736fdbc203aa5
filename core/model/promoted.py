"""Which models a deployment serves: every model with a promoted version, with its feature service.

One deployment serves every promoted model (DESIGN.md); jobs, the API and the checker ask here instead of
reading one model name from settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.naming import predictions_view_name
from core.records.tables import ModelVersion

__all__ = ["PromotedModel", "promoted_models"]


@dataclass(frozen=True, slots=True)
class PromotedModel:
    """A served model: its name, promoted version, feature service, task and stored-scores view."""

    name: str
    version: str
    feature_service: str
    task: str

    @property
    def predictions_view(self) -> str:
        """The Feast view of its published scores."""
        return predictions_view_name(self.name)


def promoted_models(session: Session, names: Sequence[str] | None = None) -> list[PromotedModel]:
    """The promoted models (those in `names` only, NotFoundError naming any without a promoted version),
    by name."""
    query = select(
        ModelVersion.model_name, ModelVersion.version, ModelVersion.feature_service, ModelVersion.task
    ).where(ModelVersion.promoted)
    if names is not None:
        query = query.where(ModelVersion.model_name.in_(list(names)))
    found = [PromotedModel(*row) for row in session.execute(query.order_by(ModelVersion.model_name)).all()]
    if names is not None:
        missing = sorted(set(names) - {model.name for model in found})
        if missing:
            raise NotFoundError(f"no promoted version of model(s) {', '.join(missing)}")
    return found
