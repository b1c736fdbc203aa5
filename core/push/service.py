"""The push use case: fresh rows for a push source, validated, committed offline, then written online.

Every row is validated before anything is written (PushError names the row and field). Then, in order:

1. the offline rows and an outbox row holding the online rows commit in one PostgreSQL transaction
   (a PostgreSQL failure: StoreUnavailableError, nothing written anywhere);
2. the newer-wins online write, tried `online_attempts` times;
3. written: the outbox row is deleted, and (when this worker left rows behind, or every `drain_every_s`)
   a few rows other pushes left are claimed and written too. Not written: the outbox row is released for
   the scheduler's `push_outbox` job and the answer says `online="pending"`.

So a push never leaves an online-only row, and its rows reach Redis once Redis answers again. The answer is
200 either way once the offline commit happened: the rows are durable and will be online, and a 503 would
invite a retry that appends them offline a second time.
Stores are passed in (`PushStore`, `OnlineWrites`), so the use case runs on fakes in handler tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from core.features.specs import ServiceSpec, ViewSpec
from core.offline.append import OfflineRows, PgAppender
from core.online.rows import FeatureRows
from core.push.outbox import OutboxItem, PgPushStore, unavailable
from core.push.rows import (
    DEFAULT_CLOCK_SKEW_S,
    DEFAULT_MAX_AGE_S,
    find_push_view,
    offline_rows,
    online_rows,
    validate_rows,
)
from core.settings import Settings

__all__ = ["OnlineState", "OnlineWrites", "PushPolicy", "PushResult", "PushService", "PushStore"]

logger = logging.getLogger(__name__)

OnlineState = Literal["written", "pending"]


class PushStore(Protocol):
    """The push's PostgreSQL side (core.push.outbox.PgPushStore)."""

    async def append(self, rows: OfflineRows, online: FeatureRows) -> int:
        """Commit the offline rows and an outbox row holding `online`; returns the outbox row's id."""
        ...

    async def settle(self, done: Sequence[int], *, claim: int = 0) -> list[OutboxItem]:
        """Delete the outbox rows written online; claim up to `claim` others."""
        ...

    async def release(self, ids: Sequence[int], *, error: str) -> None:
        """Leave the outbox rows for a later drain."""
        ...


class OnlineWrites(Protocol):
    """The newer-wins write of the online store (core.online.store.AsyncOnlineStore)."""

    async def write_newer(self, rows: FeatureRows) -> int:
        """Write the rows newer than the online ones; returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class PushPolicy:
    """The accepted event-time window, the online write's tries, and how often a push drains the outbox."""

    max_age_s: float = DEFAULT_MAX_AGE_S
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    online_attempts: int = 2
    online_retry_s: float = 0.05
    drain_every_s: float = 10.0
    drain_batch: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> PushPolicy:
        """The policy of the `push_*` settings."""
        return cls(
            max_age_s=settings.push_max_age_s,
            clock_skew_s=settings.push_clock_skew_s,
            online_attempts=settings.push_online_attempts,
            online_retry_s=settings.push_online_retry_s,
            drain_every_s=settings.push_outbox_interval_s,
        )


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one push did: rows committed offline, rows written online, and whether the online write is
    done (`written`) or left in the outbox (`pending`)."""

    push_source: str
    view: ViewSpec
    rows: int
    written_online: int
    online: OnlineState = "written"


class PushService:
    """Pushes for the views of one feature service."""

    def __init__(
        self,
        *,
        service: ServiceSpec,
        offline: PushStore | PgAppender,
        online: OnlineWrites,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy: PushPolicy | None = None,
    ) -> None:
        self.service = service
        self.offline: PushStore = PgPushStore(offline) if isinstance(offline, PgAppender) else offline
        self.online = online
        self.clock = clock
        self.policy = policy or PushPolicy()
        self._left_rows = False  # this worker released outbox rows: drain at the next successful push
        self._next_drain = 0.0

    async def push(self, push_source: str, rows: Sequence[Mapping[str, Any]]) -> PushResult:
        """Validate (PushError naming the row and field; NotFoundError for an unknown source), commit
        offline with an outbox row, then write online (StoreUnavailableError only before the commit)."""
        view = find_push_view(self.service, push_source)
        policy = self.policy
        valid = validate_rows(
            view, rows, now=self.clock(), max_age_s=policy.max_age_s, clock_skew_s=policy.clock_skew_s
        )
        fresh = online_rows(valid)
        outbox_id = await self.offline.append(offline_rows(valid), fresh)
        result = PushResult(push_source=push_source, view=view, rows=len(rows), written_online=0)
        try:
            written = await self._write(fresh)
        except Exception as exc:  # noqa: BLE001 - committed: any failure leaves the rows to the outbox
            logger.warning("push to %s: online write left to the outbox: %s", view.name, exc)
            await self._release([outbox_id], exc)
            return replace(result, online="pending")
        await self._settle(outbox_id)
        return replace(result, written_online=written)

    async def _write(self, rows: FeatureRows) -> int:
        for attempt in range(1, self.policy.online_attempts + 1):
            try:
                return await self.online.write_newer(rows)
            except Exception:
                if attempt == self.policy.online_attempts:
                    raise
                await asyncio.sleep(self.policy.online_retry_s * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _release(self, ids: Sequence[int], exc: BaseException) -> None:
        self._left_rows = True
        try:
            await self.offline.release(ids, error=unavailable(exc))
        except Exception as release_exc:  # noqa: BLE001 - the lease runs out: the scheduler drains them
            logger.warning("push outbox: could not release rows %s: %s", list(ids), release_exc)

    async def _settle(self, outbox_id: int) -> None:
        """Delete this push's outbox row; drain a few others when due. Failures are logged, never raised:
        a row left behind is written again later, a no-op under newer-wins."""
        due = self._left_rows or time.monotonic() >= self._next_drain
        claim = self.policy.drain_batch if due else 0
        try:
            items = await self.offline.settle([outbox_id], claim=claim)
        except Exception as exc:  # noqa: BLE001 - the push itself is done
            logger.warning("push outbox: could not settle row %s: %s", outbox_id, exc)
            return
        if due:
            self._next_drain = time.monotonic() + self.policy.drain_every_s
            self._left_rows = len(items) == claim
        done: list[int] = []
        for position, item in enumerate(items):
            try:
                await self.online.write_newer(item.rows)
            except Exception as exc:  # noqa: BLE001 - still down: back to the outbox
                await self._release([i.id for i in items[position:]], exc)
                break
            done.append(item.id)
        if done:
            try:
                await self.offline.settle(done)
            except Exception as exc:  # noqa: BLE001 - written again later, a no-op
                logger.warning("push outbox: could not delete drained rows: %s", exc)
