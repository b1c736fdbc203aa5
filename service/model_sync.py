"""Keeping one worker's served models in step with the registry: a prediction service per promoted model.

`sync_models` adds a model when a version is promoted, swaps in a new version (loaded and warmed off the
event loop, then replaced in one step), drops a model without a promoted version, and with `rebuild` (the
Feast registry changed) re-reads every model's specs. A version that cannot be served (no predictions view,
features the service lacks, an artifact that fails to load) is said once and left out until the next apply.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import sqlalchemy.exc
from anyio import to_thread
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import (
    ConfigurationError,
    NotFoundError,
    StoreUnavailableError,
    TamperedArtifactError,
    TandemError,
)
from core.features.snapshots import service_specs
from core.features.specs import ServiceSpec
from core.model.promoted import PromotedModel, promoted_models
from core.model.registry import LoadedModel, load_model
from core.model.signing import SigningKeys
from core.online.async_store import AsyncOnlineStore
from core.online.wire import ReadLayout
from core.serving.blend import SkewPolicy
from core.serving.service import PredictionService
from core.serving.stored import PgStoredScores
from core.settings import Settings
from core.stores.resolve import Stores
from service.metrics import MODEL_VERSION
from service.models import ServedModels
from service.state import Services

__all__ = ["ModelBuilder", "push_views", "sync_models", "warm_model"]

logger = logging.getLogger(__name__)


def _promoted(engine: Engine) -> list[PromotedModel]:
    with Session(engine) as session:
        return promoted_models(session)


def _load(engine: Engine, settings: Settings, model_name: str, version: str) -> LoadedModel | str:
    """The loaded version, or one line saying why it cannot be served (logged once here)."""
    with Session(engine) as session:
        try:
            keys = SigningKeys.from_settings(settings)  # the API's own settings, not the environment's
            return load_model(session, model_name=model_name, version=version, keys=keys)
        except NotFoundError as exc:
            logger.warning("%s", exc)
            return str(exc)
        except (TamperedArtifactError, ConfigurationError) as exc:  # unverifiable or edited: never unpickled
            logger.error("model %s version %s is not served: %s", model_name, version, exc)
            return str(exc)


def warm_model(model: LoadedModel, service: ServiceSpec | None = None) -> None:
    """A few scores so the first request does not pay for lazy initialisation: zeros for numbers, "" for
    String features (the kinds come from `service`). Warming is best effort: a pipeline that refuses these
    rows (an encoder with `handle_unknown="error"`) is still served, and fails or not on real rows."""
    kinds = service.kinds_of(model.feature_refs) if service else ["float64"] * len(model.feature_refs)
    strings = [kind == "string" for kind in kinds]
    rows: npt.NDArray[Any] = np.zeros(
        (4, len(model.feature_refs)), dtype=object if any(strings) else np.float64
    )
    for column, is_string in enumerate(strings):
        if is_string:
            rows[:, column] = ""
    try:
        for _ in range(3):
            model.predict_scores(rows[:1])
            model.predict_scores(rows)
    except Exception as exc:  # noqa: BLE001 - any model error: warming is optional
        logger.info(
            "model %s: warm-up on placeholder rows failed (%s); serving it unwarmed", model.version, exc
        )


def _gauge(name: str, old: LoadedModel | None, new: LoadedModel | None) -> None:
    if old is not None:
        MODEL_VERSION.labels(name, old.version).set(0)
    if new is not None:
        MODEL_VERSION.labels(name, new.version).set(1)


class ModelBuilder:
    """Builds a model's prediction service on the worker's shared stores (specs and model off the loop)."""

    def __init__(self, settings: Settings, stores: Stores, online: AsyncOnlineStore, pool: AsyncConnectionPool,
                 engine: Engine) -> None:  # fmt: skip
        self.settings, self.stores, self.online, self.pool = settings, stores, online, pool
        self.engine = engine
        self.refused: set[tuple[str, str]] = set()  # (model, version) that could not be served: not retried
        self.reasons: dict[str, str] = {}  # model name -> why its promoted version was refused (readiness)

    async def build(self, promoted: PromotedModel) -> PredictionService | None:
        """The model's service with its promoted version loaded and warmed (None: it failed to load)."""
        settings = self.settings
        try:
            service, predictions = await to_thread.run_sync(
                lambda: service_specs(
                    settings,
                    self.stores,
                    feature_service=promoted.feature_service,
                    predictions_view=promoted.predictions_view,
                )
            )
        except TandemError as exc:  # a repo without the model's views: say so, serve the others
            logger.warning("model %s is not served: %s", promoted.name, exc)
            self.reasons[promoted.name] = str(exc)
            return None
        loaded = await to_thread.run_sync(_load, self.engine, settings, promoted.name, promoted.version)
        model = loaded if isinstance(loaded, LoadedModel) else None
        if isinstance(loaded, str):
            self.reasons[promoted.name] = loaded
        if model is not None:
            missing = [ref for ref in model.feature_refs if ref not in service.refs]
            if missing:  # never a silent mix of features: refuse the version, say why in one line
                logger.error(
                    "model %s version %s is not served: it reads %s, which feature service %s does not serve",
                    promoted.name, promoted.version, missing, service.name,
                )  # fmt: skip
                self.reasons[promoted.name] = f"it reads {missing}, which {service.name} does not serve"
                return None
            await to_thread.run_sync(warm_model, model, service)
        prediction = PredictionService(
            name=promoted.name,
            online=self.online,
            stored=PgStoredScores(self.pool, model_name=promoted.name, timeout_s=settings.postgres_timeout_s),
            layout=ReadLayout(project=settings.feast_project, service=service, predictions=predictions),
            max_staleness_s=settings.max_staleness_s,
            model=model,
            skew_policy=SkewPolicy(settings.skew_policy),
            ack_stops_steering=settings.skew_ack_stops_steering,
        )
        with contextlib.suppress(StoreUnavailableError):  # PostgreSQL answered the spec read just now
            await prediction.refresh()
        return prediction


def push_views(models: ServedModels) -> ServiceSpec:
    """Every view of every served model's feature service (push sources are found among them)."""
    views = {view.name: view for _, prediction in models for view in prediction.service.views}
    return ServiceSpec(name="served feature services", views=tuple(views.values()), refs=())


async def sync_models(services: Services, builder: ModelBuilder, *, rebuild: bool) -> None:
    """Serve exactly the promoted models: add new ones, swap new versions, drop demoted ones; with
    `rebuild`, re-read every model's specs (the registry changed: someone ran `tandem apply`)."""
    promoted = {model.name: model for model in await to_thread.run_sync(_promoted, builder.engine)}
    services.models.synced = True
    models = services.models
    if rebuild:
        builder.refused.clear()  # the repo changed: a refused version may be servable now
    for name in list(models.refused):
        if name not in promoted:
            del models.refused[name]
    for name in models.names():
        if name not in promoted:
            _gauge(name, models.get(name).model, None)
            models.remove(name)
            logger.info("no longer serving model %s (no promoted version)", name)
    for name, model in promoted.items():
        current = models.get(name) if name in models.names() else None
        loaded = current.model.version if current is not None and current.model is not None else None
        if (current is not None and loaded == model.version and not rebuild) or (
            (name, model.version) in builder.refused
        ):
            continue
        try:
            fresh = await builder.build(model)
        except (StoreUnavailableError, psycopg.OperationalError, sqlalchemy.exc.OperationalError):
            raise  # a store is down (even half-way through a load): the watcher retries everything later
        except Exception:  # one model that cannot load never keeps the others from being served
            logger.exception("model %s version %s could not be loaded", name, model.version)
            fresh = None
        if fresh is None or fresh.model is None:
            builder.refused.add((name, model.version))  # said once; retried after the next apply
            reason = builder.reasons.pop(name, "it could not be loaded (see the API's log)")
            models.refused[name] = f"version {model.version}: {reason}"
            continue
        models.refused.pop(name, None)
        _gauge(name, current.model if current is not None else None, fresh.model)
        models.put(name, fresh)
        logger.info("now serving model %s version %s (was %s)", name, model.version, loaded)
    services.push.service = push_views(models)
