"""Train -> register -> promote, the sequence the CLI, the demo, benchmarks and tests all walk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ConfigurationError
from core.model.inputs import model_feature_refs
from core.model.registry import ModelVersionInfo, promote, register_model
from core.model.tasks import Task, check_estimator
from core.model.training import TrainingResult, train_model
from core.settings import Settings

__all__ = ["register_estimator", "register_trained", "train_and_promote"]


def register_trained(
    session: Session, *, model_name: str, result: TrainingResult, promote_it: bool = False
) -> ModelVersionInfo:
    """Register a training result as a new version of `model_name`, promoted if asked."""
    info = register_model(
        session,
        model_name=model_name,
        estimator=result.estimator,
        feature_service=result.feature_service,
        feature_refs=result.feature_refs,
        training_start=result.training_start,
        training_end=result.training_end,
        metrics=result.metrics,
        params=result.params,
        task=result.task,
    )
    return promote(session, model_name=model_name, version=info.version) if promote_it else info


def _model_name(model_name: str | None, settings: Settings) -> str:
    name = model_name or settings.model_name
    if name is None:
        raise ConfigurationError("name the model: --name or TANDEM_MODEL_NAME")
    return name


def train_and_promote(
    store: Any, settings: Settings, *, engine: Engine, model_name: str | None = None, **training: Any
) -> tuple[TrainingResult, ModelVersionInfo]:
    """Train (extra keyword arguments go to train_model), register as `model_name` (default: settings'), promote."""
    result = train_model(store, settings, engine=engine, **training)
    with Session(engine) as session, session.begin():
        info = register_trained(
            session, model_name=_model_name(model_name, settings), result=result, promote_it=True
        )
    return result, info


def register_estimator(
    session: Session,
    *,
    model_name: str,
    estimator: Any,
    feature_service: str,
    service_refs: Sequence[str],
    task: Task = "classification",
    params: Mapping[str, Any] | None = None,
    promote_it: bool = False,
) -> ModelVersionInfo:
    """Register an estimator trained elsewhere as a version of `model_name` reading `feature_service`.

    InvalidModelError (one line) when it is unfitted, cannot score `task`, or its inputs do not match the
    service's features (`model_feature_refs`). Its refs follow its own column order; its training window,
    unknown, is the registration time.
    """
    import sklearn

    check_estimator(estimator, task)
    refs = model_feature_refs(estimator, service_refs, feature_service=feature_service)
    now = datetime.now(UTC)
    info = register_model(
        session,
        model_name=model_name,
        estimator=estimator,
        feature_service=feature_service,
        feature_refs=refs,
        training_start=now,
        training_end=now,
        metrics={},
        params={
            "estimator": type(estimator).__name__,
            "sklearn_version": sklearn.__version__,
            **(params or {}),
        },
        task=task,
    )
    return promote(session, model_name=model_name, version=info.version) if promote_it else info
