"""A served world for API tests: seeded, materialized, a promoted model and a published batch run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pydantic import SecretStr
from sqlalchemy import Engine

from core.batch.predict import BatchRunResult, run_batch_predict
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.model.lifecycle import train_and_promote
from core.model.registry import ModelVersionInfo
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_MODEL
from tests.servers import purge_feast_project

__all__ = ["API_KEY", "World", "build_world", "register_and_promote"]

API_KEY = "test-key-0123456789"


@dataclass(frozen=True)
class World:
    """What API tests need to know about the data behind the service."""

    settings: Settings
    store: Any
    run: BatchRunResult
    customers: int


def register_and_promote(engine: Engine, settings: Settings, store: Any) -> ModelVersionInfo:
    """Train on the seeded labels, register and promote the model."""
    return train_and_promote(store, settings, engine=engine)[1]


def build_world(settings: Settings, stores: Stores, engine: Engine, *, customers: int = 300) -> World:
    """Reseed (other modules share the database and Redis project), materialize, train + promote, batch-predict.

    Other modules' online rows may be newer than ours, and Feast's online write never replaces a newer row:
    the project's Redis keys are purged before materializing.
    """
    apply_feature_repo(settings, stores)
    purge_feast_project(stores.redis, settings.feast_project)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=customers, days=4, seed=17, end=end)
    store = open_feature_store(settings, stores)
    store.materialize(
        start_date=end - timedelta(days=10), end_date=datetime.now(UTC)
    )  # full: keys were purged
    register_and_promote(engine, settings, store)
    run = run_batch_predict(settings, stores, model_name=DEMO_MODEL)
    served = settings.model_copy(update={"api_keys": SecretStr(API_KEY), "model_poll_s": 0.2})
    return World(settings=served, store=store, run=run, customers=customers)
