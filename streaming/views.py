"""Which feature view each push source feeds: every push source of the Feast project, read from the registry.

Read once at start (Feast costs seconds to import), then again whenever the registry's fingerprint
changes (someone ran `tandem apply`), checked at most every `poll_s` seconds. A view Tandem cannot serve
(unsupported key or feature types) is left out with a warning: its events become dead letters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from core.errors import ConfigurationError
from core.features.feast_repo import open_feature_store
from core.features.registry import registry_schema
from core.features.snapshots import registry_fingerprint
from core.features.specs import ViewSpec, load_view_spec
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = ["RegistryPushViews", "load_push_views"]

logger = logging.getLogger(__name__)


def load_push_views(settings: Settings, stores: Stores) -> dict[str, ViewSpec]:
    """push source -> view, for every view of the project fed by a push source."""
    from feast.data_source import PushSource  # lazy import: Feast costs seconds to import

    store = open_feature_store(settings, stores)
    views: dict[str, ViewSpec] = {}
    for view in store.list_feature_views():
        source = getattr(view, "stream_source", None)
        if not isinstance(source, PushSource):
            continue
        try:
            views[str(source.name)] = load_view_spec(store, view.name)
        except ConfigurationError as exc:
            logger.warning("stream: push source %s is skipped: %s", source.name, exc)
    return views


class RegistryPushViews:
    """The push views of the registry, re-read when it changes (callable: push source -> view or None)."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        *,
        poll_s: float,
        load: Callable[[Settings, Stores], dict[str, ViewSpec]] = load_push_views,
    ) -> None:
        self.settings, self.stores, self.poll_s, self.load = settings, stores, poll_s, load
        self.schema = registry_schema(settings, stores)
        self.fingerprint = self._fingerprint()
        self.views = load(settings, stores)
        self._next_check = time.monotonic() + poll_s

    def _fingerprint(self) -> str | None:
        conn: psycopg.Connection[Any]
        with psycopg.connect(self.stores.postgres.url(), autocommit=True, connect_timeout=5) as conn:
            return registry_fingerprint(conn, project=self.settings.feast_project, schema=self.schema)

    def refresh(self) -> None:
        """Re-read the views if the registry changed since the last read (a failure keeps the old ones)."""
        self._next_check = time.monotonic() + self.poll_s
        try:
            now = self._fingerprint()
            if now != self.fingerprint:
                self.views = self.load(self.settings, self.stores)
                self.fingerprint = now
                logger.info("stream: Feast registry changed; push sources: %s", ", ".join(sorted(self.views)))
        except Exception as exc:  # noqa: BLE001 - a store down: keep the views we have, try again later
            logger.warning("stream: could not re-read the push sources: %s", exc)

    def __call__(self, push_source: str) -> ViewSpec | None:
        if time.monotonic() >= self._next_check:
            self.refresh()
        return self.views.get(push_source)
