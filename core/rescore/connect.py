"""A StreamRescorer on real stores: the promoted models loaded, their re-scores bound to PostgreSQL and Redis.

`connect_rescorer(settings, stores)` is what a stream process builds once at start-up; its hook is the
rescorer's `on_committed`, and `close()` flushes and releases the stores. Promoted versions are checked every
`model_poll_s`: a newly promoted version is re-scored with from its next flush.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.features.keys import EntityId
from core.online.store import OnlineStore
from core.rescore.rescorer import StreamRescorer
from core.rescore.run import RescoreResult, rescore_entities
from core.rescore.targets import RescoreTarget, load_targets, promoted_versions
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores

__all__ = ["connect_rescorer"]


def connect_rescorer(
    settings: Settings,
    stores: Stores,
    *,
    model_names: Sequence[str] | None = None,
    online: OnlineStore | None = None,
) -> StreamRescorer:
    """A rescorer of every promoted model (or of `model_names`), publishing to `online` (default: its own
    client on `stores.redis`, closed by `close()`)."""
    engine = create_db_engine(stores.postgres, pool_size=2)
    own_store = online is None
    store = online or OnlineStore.connect(stores.redis, project=settings.feast_project, timeout_s=10.0)

    def rescore(target: RescoreTarget, ids: list[EntityId]) -> RescoreResult:
        return rescore_entities(engine, store, target, ids, max_staleness_s=settings.max_staleness_s)

    seen: set[tuple[str, str]] = set()  # the promoted versions last loaded (a refused one is not retried)

    def reload(_current: Sequence[RescoreTarget]) -> list[RescoreTarget] | None:
        promoted = {(model.name, model.version) for model in promoted_versions(engine, model_names)}
        if promoted == seen:
            return None
        seen.clear()
        seen.update(promoted)
        return load_targets(settings, stores, engine, model_names)

    def close() -> None:
        engine.dispose()
        if own_store:
            store.close()

    try:
        seen.update((model.name, model.version) for model in promoted_versions(engine, model_names))
        targets = load_targets(settings, stores, engine, model_names)
    except BaseException:
        close()
        raise
    return StreamRescorer(
        targets,
        rescore,
        max_delay_s=settings.stream_rescore_max_delay_ms / 1000,
        max_entities=settings.stream_rescore_max_entities,
        on_close=close,
        reload=reload,
        reload_s=settings.model_poll_s,
    )
