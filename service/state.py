"""The service's long-lived state: store clients, the feature specs, the reader and the live model.

Everything is opened in the lifespan (service/lifespan.py) and reached by handlers through `app.state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from redis import Redis
from sqlalchemy import Engine

from core.features.specs import ServiceSpec, ViewSpec
from core.model.registry import LoadedModel
from core.online.coalesce import Coalescer
from core.online.reader import OnlineReader
from core.serving.published import PublishedRuns
from core.settings import Settings
from service.metrics import Coverage

__all__ = ["Health", "ServiceState"]


@dataclass(slots=True)
class Health:
    """What readiness reports: whether each store answered last time we asked."""

    redis_ok: bool = False
    postgres_ok: bool = False
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True)
class ServiceState:
    """One per worker process."""

    settings: Settings
    service: ServiceSpec
    predictions: ViewSpec
    reader: OnlineReader
    redis: aioredis.Redis  # pings and anything but the hot read
    reads: Coalescer  # the hot read: pre-packed HMGETs, concurrent requests share a round trip
    redis_sync: Redis  # pushes go through the byte-identical Feast writer, which is synchronous
    pg: AsyncConnectionPool
    engine: Engine  # SQLAlchemy, for the registry and job history (run in threads)
    published: PublishedRuns  # run ids whose stored scores may be served
    model: LoadedModel | None = None
    health: Health = field(default_factory=Health)
    warmed_up: bool = False
    skew_report_id: int | None = None  # the report whose gauges /metrics shows
    coverage: Coverage = field(default_factory=Coverage)
