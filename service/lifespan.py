"""Open what the service holds for its lifetime, warm it up, keep the model current, close it all.

Redis gets explicit socket/connect timeouts and one retry (redis-py's defaults block for seconds when Redis
is down); PostgreSQL a small pool that checks connections. Feature specs come from Tandem's snapshot
(no Feast import at start-up); the promoted model is loaded, warmed with a few scores, and swapped
without dropping a request when another version is promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from anyio import to_thread
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool
from redis import Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.features.snapshots import service_specs
from core.model.registry import LoadedModel, load_model
from core.online.coalesce import Coalescer
from core.online.reader import OnlineReader
from core.online.resp_pool import RespPool
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_reports import get_report, list_reports
from core.records.tables import ModelVersion
from core.serving.answer import answer_rows
from core.serving.blend import Mode
from core.serving.published import PublishedRuns
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from service.health import check_stores
from service.metrics import MODEL_VERSION
from service.state import ServiceState

__all__ = ["lifespan"]

logger = logging.getLogger(__name__)


def _limit_threads() -> None:
    """One OpenMP/BLAS thread per worker: tree models otherwise fight over 2 cores and p99 explodes."""
    from threadpoolctl import threadpool_limits  # lazy import: only the API process needs it

    threadpool_limits(1)


def _promoted_version(state: ServiceState) -> str | None:
    with Session(state.engine) as session:
        query = select(ModelVersion.version).where(
            ModelVersion.model_name == state.settings.model_name, ModelVersion.promoted
        )
        return session.scalars(query).first()


def _record_latest_skew(state: ServiceState) -> None:
    """Show the newest skew report's gauges on this worker's /metrics (the checker runs elsewhere)."""
    with Session(state.engine) as session:
        latest = list_reports(session, limit=1)
        if latest and latest[0].id != state.skew_report_id:
            record_skew_metrics(get_report(session, report_id=latest[0].id))
            state.skew_report_id = latest[0].id


def _load(state: ServiceState, version: str | None = None) -> LoadedModel | None:
    with Session(state.engine) as session:
        try:
            return load_model(session, model_name=state.settings.model_name, version=version)
        except NotFoundError as exc:
            logger.warning("%s", exc)
            return None


def _warm(model: LoadedModel) -> None:
    """A few scores so the first request does not pay for lazy initialisation."""
    rows = np.zeros((4, len(model.feature_refs)), dtype=np.float64)
    rows[1:] = np.nan
    for _ in range(3):
        model.predict_scores(rows[:1])
        model.predict_scores(rows)


def _swap(state: ServiceState, model: LoadedModel | None) -> None:
    if state.model is not None:
        MODEL_VERSION.labels(state.model.version).set(0)
    state.model = model
    if model is not None:
        MODEL_VERSION.labels(model.version).set(1)


async def _warm_up(state: ServiceState) -> None:
    if state.model is not None:
        await to_thread.run_sync(_warm, state.model)
    with contextlib.suppress(Exception):  # the read path warms too; a down store is not fatal here
        rows = await state.reader.read_via(state.reads.request, [0, 1, 2])
        for mode in (Mode.AUTO, Mode.LIVE):  # the blend, the live scorer and the answer, without metrics
            answer_rows(
                rows,
                service=state.service,
                model=state.model,
                now=datetime.now(UTC),
                max_staleness_s=state.settings.max_staleness_s,
                mode=mode,
            )
    state.warmed_up = True


async def _watch_model(state: ServiceState) -> None:
    """Poll for a newly promoted version; load and warm it off the event loop, then swap in one step."""
    while True:
        await asyncio.sleep(state.settings.model_poll_s)
        try:
            version = await to_thread.run_sync(_promoted_version, state)
            current = state.model.version if state.model is not None else None
            if version is not None and version != current:
                model = await to_thread.run_sync(_load, state, version)
                if model is not None:
                    await to_thread.run_sync(_warm, model)
                    _swap(state, model)
                    _freeze_heap()  # the new model's objects join the frozen heap
                    logger.info("now serving model %s (was %s)", version, current)
            await to_thread.run_sync(_record_latest_skew, state)
            await state.published.refresh(state.pg, timeout_s=state.settings.postgres_timeout_s)
            state.health.postgres_ok = True
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep serving the loaded model
            state.health.postgres_ok = False
            logger.warning("model check failed: %s", exc)


async def open_state(settings: Settings, stores: Stores) -> ServiceState:
    """Connect to both stores, read the specs, load the promoted model."""
    timeout = settings.redis_timeout_s
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    redis_async = aioredis.Redis.from_url(stores.redis.url(), retry=AsyncRetry(NoBackoff(), 1), **options)
    redis_sync = Redis.from_url(stores.redis.url(), retry=Retry(NoBackoff(), 1), **options)
    pool = AsyncConnectionPool(
        stores.postgres.url(),
        min_size=1,
        max_size=4,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": max(1, int(settings.postgres_timeout_s))},
    )
    await pool.open(wait=False)
    engine = create_db_engine(stores.postgres, pool_size=2)
    service, predictions = await to_thread.run_sync(service_specs, settings, stores)
    state = ServiceState(
        settings=settings,
        service=service,
        predictions=predictions,
        reader=OnlineReader(project=settings.feast_project, service=service, predictions=predictions),
        redis=redis_async,
        reads=Coalescer(RespPool(stores.redis, timeout_s=settings.redis_timeout_s)),
        redis_sync=redis_sync,
        pg=pool,
        engine=engine,
        published=PublishedRuns(service.name),
    )
    with contextlib.suppress(Exception):  # PostgreSQL answered the spec read just now; a failure is retried
        await state.published.refresh(pool, timeout_s=settings.postgres_timeout_s)
    _swap(state, await to_thread.run_sync(_load, state))
    return state


async def close_state(state: ServiceState) -> None:
    """Close every client the state holds."""
    await state.reads.pool.close()
    await state.redis.aclose()
    state.redis_sync.close()
    await state.pg.close()
    state.engine.dispose()


def _freeze_heap() -> None:
    """Move everything alive now (modules, the model's trees) out of the collector's sight.

    A full collection over the ~250k start-up objects takes ~95 ms and, under load, ran every few seconds:
    that was the API's p99. Frozen objects are never scanned again.
    """
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan: state in, warm-up, model watcher; everything closed on the way out."""
    gc.disable()  # no collections while start-up allocates: frozen once at the end
    try:
        _limit_threads()
        settings: Settings = app.state.settings
        state = await open_state(settings, resolve_stores(settings))
        app.state.tandem = state
        await _warm_up(state)
        await check_stores(state)
    finally:
        _freeze_heap()
        gc.enable()
    watcher = asyncio.create_task(_watch_model(state))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await close_state(state)
