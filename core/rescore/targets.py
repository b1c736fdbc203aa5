"""What a stream re-score needs of each served model: its promoted version loaded, and its read layout.

The same pieces the API builds per model (service/model_sync.py): the feature service and predictions view
specs (from the spec snapshot, Feast only when the registry changed), the verified model, and the HMGET layout
that reads features, their event times and the stored score in one round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import TandemError
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec, ViewSpec
from core.model.promoted import PromotedModel, promoted_models
from core.model.registry import LoadedModel, load_model
from core.online.wire import ReadLayout
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = ["RescoreTarget", "load_targets", "promoted_versions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RescoreTarget:
    """A model to re-score: its loaded version, its feature service's name and its read layout."""

    model: LoadedModel
    feature_service: str
    layout: ReadLayout

    @property
    def name(self) -> str:
        """The model's name."""
        return self.model.model_name

    @property
    def service(self) -> ServiceSpec:
        """The feature service the model reads."""
        return self.layout.service

    @property
    def predictions(self) -> ViewSpec:
        """The view its stored scores are published as."""
        return self.layout.predictions

    def reads(self, view_name: str) -> bool:
        """Whether the model's feature service reads feature view `view_name`."""
        return any(view.name == view_name for view in self.service.views)


def promoted_versions(engine: Engine, names: Sequence[str] | None = None) -> list[PromotedModel]:
    """The promoted models (of `names`, when given)."""
    with Session(engine) as session:
        return promoted_models(session, names)


def _target(
    settings: Settings, stores: Stores, engine: Engine, promoted: PromotedModel
) -> RescoreTarget | None:
    try:
        service, predictions = service_specs(
            settings,
            stores,
            feature_service=promoted.feature_service,
            predictions_view=promoted.predictions_view,
        )
        with Session(engine) as session:
            model = load_model(session, model_name=promoted.name, version=promoted.version)
    except TandemError as exc:  # a repo without the model's views, an artifact that fails to verify
        logger.warning("model %s is not re-scored: %s", promoted.name, exc)
        return None
    missing = [ref for ref in model.feature_refs if ref not in service.refs]
    if missing:
        logger.error(
            "model %s version %s is not re-scored: it reads %s, which feature service %s does not serve",
            promoted.name, promoted.version, missing, service.name,
        )  # fmt: skip
        return None
    layout = ReadLayout(project=settings.feast_project, service=service, predictions=predictions)
    return RescoreTarget(model=model, feature_service=promoted.feature_service, layout=layout)


def load_targets(
    settings: Settings, stores: Stores, engine: Engine, names: Sequence[str] | None = None
) -> list[RescoreTarget]:
    """A target per promoted model (of `names`, when given) that can be served; the others are logged."""
    found = (_target(settings, stores, engine, promoted) for promoted in promoted_versions(engine, names))
    return [target for target in found if target is not None]
