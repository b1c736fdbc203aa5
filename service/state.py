"""What the handlers use, one per worker: the served models, the push service, a store probe, Tandem's tables.

`service.lifespan.open_services` builds it from the configured stores; a test may build it from fakes and
hand it to `create_app(services=...)`. Handlers receive its parts through Litestar's dependency injection
(service/app.py), never by reaching into `app.state`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine

from core.push.service import PushService
from core.settings import Settings
from service.metrics import Coverage
from service.models import ServedModels

__all__ = ["Services", "StoreProbe"]


class StoreProbe(Protocol):
    """Asks each store whether it answers (short timeouts, never raises)."""

    async def online_ok(self) -> bool:
        """True when Redis answers."""
        ...

    async def offline_ok(self) -> bool:
        """True when PostgreSQL answers."""
        ...


@dataclass(slots=True)
class Services:
    """One worker's services and what they hold open."""

    settings: Settings
    models: ServedModels
    push: PushService
    probe: StoreProbe
    engine: Engine | None = None  # Tandem's tables (jobs, skew reports, models); None: not configured
    warmed_up: bool = False
    skew_report_ids: dict[str, int] = field(default_factory=dict)  # per model: the report /metrics shows
    coverage: Coverage = field(default_factory=Coverage)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        """Close everything the services hold, newest first."""
        while self.closers:
            await self.closers.pop()()
