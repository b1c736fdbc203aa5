"""The push use case: fresh rows for a push source, validated, appended offline, then written online.

Every row is validated before anything is written. The offline append and the online newer-wins write
happen in that order inside one PostgreSQL transaction: a failed online write rolls the offline rows back.
Stores are passed in (`OfflineAppends`, `OnlineWrites`), so the use case runs on fakes in handler tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from core.features.specs import ServiceSpec, ViewSpec
from core.offline.append import OfflineRows
from core.online.rows import FeatureRows
from core.push.rows import find_push_view, offline_rows, online_rows, validate_rows

__all__ = ["OfflineAppends", "OnlineWrites", "PushResult", "PushService"]

T = TypeVar("T")


class OfflineAppends(Protocol):
    """Appends rows offline in a transaction that `then()` runs inside (core.offline.append.PgAppender)."""

    async def append(self, rows: OfflineRows, then: Callable[[], Awaitable[T]]) -> T:
        """Insert `rows`, run `then()`, commit; returns what `then()` returned."""
        ...


class OnlineWrites(Protocol):
    """The newer-wins write of the online store (core.online.store.AsyncOnlineStore)."""

    async def write_newer(self, rows: FeatureRows) -> int:
        """Write the rows newer than the online ones; returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one push did."""

    push_source: str
    view: ViewSpec
    rows: int
    written_online: int


class PushService:
    """Pushes for the views of one feature service."""

    def __init__(
        self,
        *,
        service: ServiceSpec,
        offline: OfflineAppends,
        online: OnlineWrites,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.offline = offline
        self.online = online
        self.clock = clock

    async def push(self, push_source: str, rows: Sequence[Mapping[str, Any]]) -> PushResult:
        """Validate (PushError naming the row and field; NotFoundError for an unknown source), then write."""
        view = find_push_view(self.service, push_source)
        valid = validate_rows(view, rows, now=self.clock())
        fresh = online_rows(valid)
        written = await self.offline.append(offline_rows(valid), lambda: self.online.write_newer(fresh))
        return PushResult(push_source=push_source, view=view, rows=len(rows), written_online=written)
