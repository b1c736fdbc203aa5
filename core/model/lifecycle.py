"""Train -> register -> promote, the sequence the CLI, the demo, benchmarks and tests all walk."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.model.registry import ModelVersionInfo, promote, register_model
from core.model.training import TrainingResult, train_model
from core.settings import Settings

__all__ = ["register_trained", "train_and_promote"]


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
    )
    return promote(session, model_name=model_name, version=info.version) if promote_it else info


def train_and_promote(
    store: Any, settings: Settings, *, engine: Engine, **training: Any
) -> tuple[TrainingResult, ModelVersionInfo]:
    """Train on settings' feature service (extra keyword arguments go to train_model), register, promote."""
    result = train_model(store, settings, engine=engine, **training)
    with Session(engine) as session, session.begin():
        info = register_trained(session, model_name=settings.model_name, result=result, promote_it=True)
    return result, info
