"""Open what the service holds for its lifetime, warm it up, keep the model current, close it all.

Redis is reached through the lean asyncio pool (`core.online.resp_pool`, coalesced reads) with an explicit
timeout and one retry; PostgreSQL through a small pool that checks connections. Feature specs come from
Tandem's snapshot (no Feast import at start-up); the promoted model is loaded, warmed with a few scores,
and swapped without dropping a request when another version is promoted; every promoted model is served,
and a changed Feast registry (`tandem apply`) makes the watcher re-read every model's specs
(`service.model_sync`). Services handed to `create_app` (tests) are used as they are: nothing is opened,
watched or closed for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from anyio import to_thread
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import StoreUnavailableError
from core.features.registry import registry_schema
from core.features.snapshots import registry_fingerprint
from core.online.async_store import AsyncOnlineStore
from core.online.breaker import BreakerTransport
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool
from core.push.outbox import PgPushStore
from core.push.service import PushPolicy, PushService
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_reports import get_report, list_reports
from core.serving.answer import answer_rows
from core.serving.blend import Mode
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from service.health import check_stores
from service.model_sync import ModelBuilder, push_views, sync_models
from service.models import ServedModels
from service.state import Services
from service.steering_sync import SteeringSync

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


def _fingerprint(stores: Stores, project: str, schema: str) -> str | None:
    """The Feast registry's fingerprint: a change means someone ran `tandem apply` (or `feast apply`)."""
    with psycopg.connect(stores.postgres.url(), autocommit=True, connect_timeout=5) as conn:
        return registry_fingerprint(conn, project=project, schema=schema)


def _record_latest_skew(services: Services, engine: Engine) -> None:
    """Show each served model's newest skew report on this worker's /metrics (the checker runs elsewhere)."""
    with Session(engine) as session:
        for name in services.models.names():
            latest = list_reports(session, limit=1, model_name=name)
            if latest and latest[0].id != services.skew_report_ids.get(name):
                record_skew_metrics(get_report(session, report_id=latest[0].id))
                services.skew_report_ids[name] = latest[0].id


async def _warm_up(services: Services) -> None:
    for _, prediction in services.models:
        with contextlib.suppress(StoreUnavailableError):  # the read path warms too; a down store is not fatal
            key = prediction.service.key
            ids = [key.compose([n if kind != "string" else str(n) for kind in key.kinds]) for n in range(3)]
            rows = await prediction.online.read(prediction.layout, ids)
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


async def _watch(services: Services, builder: ModelBuilder, steering: SteeringSync) -> None:
    """Poll for promotions and for a changed Feast registry; load and warm off the event loop, then swap
    each model in one step; refresh each model's skew steering (its own failures logged once)."""
    settings, stores = services.settings, builder.stores
    schema: str | None = None  # the repo's registry schema, read from its feature_store.yaml once
    fingerprint: str | None = None  # unknown until PostgreSQL first answers: then every model is re-read
    with contextlib.suppress(Exception):  # a store down at start-up: the polls below retry
        schema = found = await to_thread.run_sync(registry_schema, settings, stores)
        fingerprint = await to_thread.run_sync(_fingerprint, stores, settings.feast_project, found)
    while True:
        await asyncio.sleep(settings.model_poll_s)
        try:
            if schema is None:
                schema = await to_thread.run_sync(registry_schema, settings, stores)
            now = await to_thread.run_sync(_fingerprint, stores, settings.feast_project, schema)
            await sync_models(services, builder, rebuild=now != fingerprint)
            fingerprint = now
            await to_thread.run_sync(_record_latest_skew, services, builder.engine)
            for _, prediction in services.models:
                await prediction.refresh()
            _freeze_heap()  # new models' objects join the frozen heap
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep serving the loaded models
            services.models.health.mark(offline=False)
            logger.warning("model check failed: %s", exc)
        await steering.refresh(services.models)


def _pg_pool(stores: Stores, settings: Settings, *, size: int) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        stores.postgres.url(),
        min_size=1,
        max_size=size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": max(1, int(settings.postgres_timeout_s))},
    )


async def open_services(settings: Settings, stores: Stores) -> tuple[Services, ModelBuilder, SteeringSync]:
    """Connect to both stores, read the specs, load every promoted model.

    Reads (stored scores, the degraded fallback, pings) and pushes get PostgreSQL pools of their own: a burst
    of pushes never takes the connections a degraded answer needs.
    """
    pool, push_pool = _pg_pool(stores, settings, size=4), _pg_pool(stores, settings, size=2)
    await pool.open(wait=False)
    await push_pool.open(wait=False)
    engine = create_db_engine(stores.postgres, pool_size=2)
    resp = RespPool(stores.redis, timeout_s=settings.redis_timeout_s)
    breaker = BreakerTransport(Coalescer(resp), backoff_s=settings.redis_backoff_s)
    online = AsyncOnlineStore(breaker, project=settings.feast_project)
    models = ServedModels()
    models.synced = False  # until sync_models reads the promoted models: unknown names are 503, not 404
    services = Services(
        settings=settings,
        models=models,
        push=PushService(
            service=push_views(models),
            offline=PgPushStore.connect(
                push_pool, timeout_s=settings.postgres_timeout_s, lease_s=settings.push_outbox_lease_s
            ),
            online=online,
            policy=PushPolicy.from_settings(settings),
        ),
        probe=_Probe(online, pool, timeout_s=settings.postgres_timeout_s),
        engine=engine,
    )

    async def dispose() -> None:
        engine.dispose()

    services.closers += [pool.close, push_pool.close, resp.close, dispose]
    builder = ModelBuilder(settings, stores, online, pool, engine)
    try:
        await sync_models(services, builder, rebuild=True)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: the watcher retries
        logger.warning("could not load the promoted models: %s", exc)
    steering = SteeringSync(engine, default_breach=settings.mismatch_rate_breach)
    await steering.refresh(models)
    return services, builder, steering


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
        services, builder, steering = await open_services(settings, resolve_stores(settings))
        app.state.tandem = services
        await _warm_up(services)
        await check_stores(services)
    finally:
        _freeze_heap()
        gc.enable()
    watcher = asyncio.create_task(_watch(services, builder, steering))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await services.close()
        app.state.pop("tandem", None)  # a restarted lifespan opens fresh services, never these closed ones
