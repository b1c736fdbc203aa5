"""Open what the service holds for its lifetime, warm it up, keep the model current, close it all.

Redis is reached through the lean asyncio pool (`core.online.resp_pool`, coalesced reads) with an explicit
timeout and one retry; PostgreSQL through a small pool that checks connections. Feature specs come from
Tandem's snapshot (no Feast import at start-up); the promoted model is loaded, warmed with a few scores,
and swapped without dropping a request when another version is promoted. Services handed to `create_app`
(tests) are used as they are: nothing is opened, watched or closed for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from anyio import to_thread
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.errors import NotFoundError, StoreUnavailableError
from core.features.snapshots import service_specs
from core.model.registry import LoadedModel, load_model
from core.offline.append import PgAppender
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool
from core.online.store import AsyncOnlineStore
from core.online.wire import ReadLayout
from core.push.service import PushService
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_reports import get_report, list_reports
from core.records.tables import ModelVersion
from core.serving.answer import answer_rows
from core.serving.blend import Mode
from core.serving.service import PredictionService
from core.serving.stored import PgStoredScores
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from service.health import check_stores
from service.metrics import MODEL_VERSION
from service.state import Services

__all__ = ["lifespan", "open_services"]

logger = logging.getLogger(__name__)


def _limit_threads() -> None:
    """One OpenMP/BLAS thread per worker: tree models otherwise fight over 2 cores and p99 explodes."""
    from threadpoolctl import threadpool_limits  # lazy import: only the API process needs it

    threadpool_limits(1)


class _Probe:
    """Pings Redis through the online store and PostgreSQL through the pool."""

    def __init__(self, online: AsyncOnlineStore, pool: AsyncConnectionPool, *, timeout_s: float) -> None:
        self.online, self.pool, self.timeout_s = online, pool, timeout_s

    async def online_ok(self) -> bool:
        return await self.online.ping()

    async def offline_ok(self) -> bool:
        try:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                await conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False
        return True


def _promoted_version(engine: Engine, model_name: str) -> str | None:
    with Session(engine) as session:
        query = select(ModelVersion.version).where(
            ModelVersion.model_name == model_name, ModelVersion.promoted
        )
        return session.scalars(query).first()


def _record_latest_skew(services: Services, engine: Engine) -> None:
    """Show the newest skew report's gauges on this worker's /metrics (the checker runs elsewhere)."""
    with Session(engine) as session:
        latest = list_reports(session, limit=1)
        if latest and latest[0].id != services.skew_report_id:
            record_skew_metrics(get_report(session, report_id=latest[0].id))
            services.skew_report_id = latest[0].id


def _load(engine: Engine, model_name: str, version: str | None = None) -> LoadedModel | None:
    with Session(engine) as session:
        try:
            return load_model(session, model_name=model_name, version=version)
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


def _swap(prediction: PredictionService, model: LoadedModel | None) -> None:
    if prediction.model is not None:
        MODEL_VERSION.labels(prediction.model.version).set(0)
    prediction.model = model
    if model is not None:
        MODEL_VERSION.labels(model.version).set(1)


async def _warm_up(services: Services) -> None:
    prediction = services.prediction
    if prediction.model is not None:
        await to_thread.run_sync(_warm, prediction.model)
    with contextlib.suppress(StoreUnavailableError):  # the read path warms too; a down store is not fatal
        rows = await prediction.online.read(prediction.layout, [0, 1, 2])
        for mode in (Mode.AUTO, Mode.LIVE):  # the blend, the live scorer and the answer, without metrics
            answer_rows(
                rows,
                service=prediction.service,
                model=prediction.model,
                now=prediction.clock(),
                max_staleness_s=prediction.max_staleness_s,
                mode=mode,
            )
    services.warmed_up = True


async def _watch_model(services: Services, engine: Engine) -> None:
    """Poll for a newly promoted version; load and warm it off the event loop, then swap in one step."""
    settings, prediction = services.settings, services.prediction
    while True:
        await asyncio.sleep(settings.model_poll_s)
        try:
            version = await to_thread.run_sync(_promoted_version, engine, settings.model_name)
            current = prediction.model.version if prediction.model is not None else None
            if version is not None and version != current:
                model = await to_thread.run_sync(_load, engine, settings.model_name, version)
                if model is not None:
                    await to_thread.run_sync(_warm, model)
                    _swap(prediction, model)
                    _freeze_heap()  # the new model's objects join the frozen heap
                    logger.info("now serving model %s (was %s)", version, current)
            await to_thread.run_sync(_record_latest_skew, services, engine)
            await prediction.refresh()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep serving the loaded model
            prediction.health.mark(offline=False)
            logger.warning("model check failed: %s", exc)


async def open_services(settings: Settings, stores: Stores) -> Services:
    """Connect to both stores, read the specs, load the promoted model."""
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
    resp = RespPool(stores.redis, timeout_s=settings.redis_timeout_s)
    online = AsyncOnlineStore(Coalescer(resp), project=settings.feast_project)
    service, predictions = await to_thread.run_sync(service_specs, settings, stores)

    prediction = PredictionService(
        online=online,
        stored=PgStoredScores(pool, feature_service=service.name, timeout_s=settings.postgres_timeout_s),
        layout=ReadLayout(project=settings.feast_project, service=service, predictions=predictions),
        max_staleness_s=settings.max_staleness_s,
    )
    services = Services(
        settings=settings,
        prediction=prediction,
        push=PushService(
            service=service, offline=PgAppender(pool, timeout_s=settings.postgres_timeout_s), online=online
        ),
        probe=_Probe(online, pool, timeout_s=settings.postgres_timeout_s),
        engine=engine,
    )

    async def dispose() -> None:
        engine.dispose()

    services.closers += [pool.close, resp.close, dispose]
    with contextlib.suppress(StoreUnavailableError):  # PostgreSQL answered the spec read just now
        await prediction.refresh()
    _swap(prediction, await to_thread.run_sync(_load, engine, settings.model_name))
    return services


def _freeze_heap() -> None:
    """Move everything alive now (modules, the model's trees) out of the collector's sight.

    A full collection over the ~250k start-up objects takes ~95 ms and, under load, ran every few seconds:
    that was the API's p99. Frozen objects are never scanned again.
    """
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan: services in, warm-up, model watcher; everything closed on the way out."""
    given: Services | None = app.state.get("tandem")
    if given is not None:  # built by the caller (tests): theirs to close
        await check_stores(given)
        given.warmed_up = True
        yield
        return
    gc.disable()  # no collections while start-up allocates: frozen once at the end
    try:
        _limit_threads()
        settings: Settings = app.state.settings
        services = await open_services(settings, resolve_stores(settings))
        app.state.tandem = services
        await _warm_up(services)
        await check_stores(services)
    finally:
        _freeze_heap()
        gc.enable()
    watcher = asyncio.create_task(_watch_model(services, services.engine)) if services.engine else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await services.close()
