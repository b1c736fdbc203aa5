"""Open what the service holds for its lifetime, warm it up, keep the model current, close it all.

Redis is reached through the lean asyncio pool (`core.online.resp_pool`, coalesced reads) with an explicit
timeout and one retry; PostgreSQL through a small pool that checks connections. Feature specs come from
Tandem's snapshot (no Feast import at start-up); the promoted model is loaded, warmed with a few scores,
and swapped without dropping a request when another version is promoted; every promoted model is served,
and a changed Feast registry (`tandem apply`) makes the watcher re-read every model's specs. Services
handed to `create_app`
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
import psycopg
from anyio import to_thread
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import NotFoundError, StoreUnavailableError, TandemError
from core.features.registry import registry_schema
from core.features.snapshots import registry_fingerprint, service_specs
from core.features.specs import ServiceSpec
from core.model.promoted import PromotedModel, promoted_models
from core.model.registry import LoadedModel, load_model
from core.online.breaker import BreakerTransport
from core.online.coalesce import Coalescer
from core.online.resp_pool import RespPool
from core.online.store import AsyncOnlineStore
from core.online.wire import ReadLayout
from core.push.outbox import PgPushStore
from core.push.service import PushPolicy, PushService
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_reports import get_report, list_reports
from core.serving.answer import answer_rows
from core.serving.blend import Mode
from core.serving.service import PredictionService
from core.serving.stored import PgStoredScores
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores, resolve_stores
from service.health import check_stores
from service.metrics import MODEL_VERSION
from service.models import ServedModels
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


def _promoted(engine: Engine) -> list[PromotedModel]:
    with Session(engine) as session:
        return promoted_models(session)


def _fingerprint(settings: Settings, stores: Stores) -> str | None:
    """The Feast registry's fingerprint: a change means someone ran `tandem apply` (or `feast apply`)."""
    schema = registry_schema(settings, stores)
    with psycopg.connect(stores.postgres.url(), autocommit=True, connect_timeout=5) as conn:
        return registry_fingerprint(conn, project=settings.feast_project, schema=schema)


def _record_latest_skew(services: Services, engine: Engine) -> None:
    """Show each served model's newest skew report on this worker's /metrics (the checker runs elsewhere)."""
    with Session(engine) as session:
        for name in services.models.names():
            latest = list_reports(session, limit=1, model_name=name)
            if latest and latest[0].id != services.skew_report_ids.get(name):
                record_skew_metrics(get_report(session, report_id=latest[0].id))
                services.skew_report_ids[name] = latest[0].id


def _load(engine: Engine, model_name: str, version: str | None = None) -> LoadedModel | None:
    with Session(engine) as session:
        try:
            return load_model(session, model_name=model_name, version=version)
        except NotFoundError as exc:
            logger.warning("%s", exc)
            return None


def _warm(model: LoadedModel) -> None:
    """A few scores so the first request does not pay for lazy initialisation (zeros: every pipeline takes
    them; one that cannot take NaN then fails on a live row with missing features, not at load)."""
    rows = np.zeros((4, len(model.feature_refs)), dtype=np.float64)
    for _ in range(3):
        model.predict_scores(rows[:1])
        model.predict_scores(rows)


def _gauge(name: str, old: LoadedModel | None, new: LoadedModel | None) -> None:
    if old is not None:
        MODEL_VERSION.labels(name, old.version).set(0)
    if new is not None:
        MODEL_VERSION.labels(name, new.version).set(1)


class _Builder:
    """Builds a model's prediction service on the worker's shared stores (specs and model off the loop)."""

    def __init__(self, settings: Settings, stores: Stores, online: AsyncOnlineStore, pool: AsyncConnectionPool,
                 engine: Engine) -> None:  # fmt: skip
        self.settings, self.stores, self.online, self.pool = settings, stores, online, pool
        self.engine = engine
        self.refused: set[tuple[str, str]] = set()  # (model, version) that could not be served: not retried

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
            return None
        model = await to_thread.run_sync(_load, self.engine, promoted.name, promoted.version)
        if model is not None:
            missing = [ref for ref in model.feature_refs if ref not in service.refs]
            if missing:  # never a silent mix of features: refuse the version, say why in one line
                logger.error(
                    "model %s version %s is not served: it reads %s, which feature service %s does not serve",
                    promoted.name, promoted.version, missing, service.name,
                )  # fmt: skip
                return None
            await to_thread.run_sync(_warm, model)
        prediction = PredictionService(
            name=promoted.name,
            online=self.online,
            stored=PgStoredScores(self.pool, model_name=promoted.name, timeout_s=settings.postgres_timeout_s),
            layout=ReadLayout(project=settings.feast_project, service=service, predictions=predictions),
            max_staleness_s=settings.max_staleness_s,
            model=model,
        )
        with contextlib.suppress(StoreUnavailableError):  # PostgreSQL answered the spec read just now
            await prediction.refresh()
        return prediction


def _push_views(models: ServedModels) -> ServiceSpec:
    """Every view of every served model's feature service (push sources are found among them)."""
    views = {view.name: view for _, prediction in models for view in prediction.service.views}
    return ServiceSpec(name="served feature services", views=tuple(views.values()), refs=())


async def _sync_models(services: Services, builder: _Builder, *, rebuild: bool) -> None:
    """Serve exactly the promoted models: add new ones, swap new versions, drop demoted ones; with
    `rebuild`, re-read every model's specs (the registry changed: someone ran `tandem apply`)."""
    promoted = {model.name: model for model in await to_thread.run_sync(_promoted, builder.engine)}
    models = services.models
    if rebuild:
        builder.refused.clear()  # the repo changed: a refused version may be servable now
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
        except StoreUnavailableError:
            raise  # a store is down: the watcher retries everything later
        except Exception:  # one model that cannot load never keeps the others from being served
            logger.exception("model %s version %s could not be loaded", name, model.version)
            fresh = None
        if fresh is None or fresh.model is None:
            builder.refused.add((name, model.version))  # said once; retried after the next apply
            continue
        if fresh is not None:
            _gauge(name, current.model if current is not None else None, fresh.model)
            models.put(name, fresh)
            logger.info("now serving model %s version %s (was %s)", name, model.version, loaded)
    services.push.service = _push_views(models)


async def _warm_up(services: Services) -> None:
    for _, prediction in services.models:
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


async def _watch(services: Services, builder: _Builder) -> None:
    """Poll for promotions and for a changed Feast registry; load and warm off the event loop, then swap
    each model in one step."""
    settings = services.settings
    fingerprint = await to_thread.run_sync(_fingerprint, settings, builder.stores)
    while True:
        await asyncio.sleep(settings.model_poll_s)
        try:
            now = await to_thread.run_sync(_fingerprint, settings, builder.stores)
            await _sync_models(services, builder, rebuild=now != fingerprint)
            fingerprint = now
            if builder.engine is not None:
                await to_thread.run_sync(_record_latest_skew, services, builder.engine)
            for _, prediction in services.models:
                await prediction.refresh()
            _freeze_heap()  # new models' objects join the frozen heap
        except Exception as exc:  # noqa: BLE001 - PostgreSQL down: keep serving the loaded models
            services.models.health.mark(offline=False)
            logger.warning("model check failed: %s", exc)


def _pg_pool(stores: Stores, settings: Settings, *, size: int) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        stores.postgres.url(),
        min_size=1,
        max_size=size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": max(1, int(settings.postgres_timeout_s))},
    )


async def open_services(settings: Settings, stores: Stores) -> tuple[Services, _Builder]:
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
    services = Services(
        settings=settings,
        models=models,
        push=PushService(
            service=_push_views(models),
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
    builder = _Builder(settings, stores, online, pool, engine)
    try:
        await _sync_models(services, builder, rebuild=True)
    except Exception as exc:  # noqa: BLE001 - PostgreSQL down at start: the watcher retries
        logger.warning("could not load the promoted models: %s", exc)
    return services, builder


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
        services, builder = await open_services(settings, resolve_stores(settings))
        app.state.tandem = services
        await _warm_up(services)
        await check_stores(services)
    finally:
        _freeze_heap()
        gc.enable()
    watcher = asyncio.create_task(_watch(services, builder))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await services.close()
        app.state.pop("tandem", None)  # a restarted lifespan opens fresh services, never these closed ones
