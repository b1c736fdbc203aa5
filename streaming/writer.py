"""Writing a micro-batch the way `POST /v1/push` writes rows: offline committed first, then online.

For each push source of the batch (one transaction each): the event keys and the new rows commit together
(`streaming.offline.append_new`); then each source's newest row per entity is written online with the
atomic newer-wins check-and-write, one pipelined request per view (256 entities per script call). So an
online row never exists without its offline row, a replayed event changes nothing (its key is known; the
online write is a no-op by newer-wins), and only after both stores took the batch does the consumer
acknowledge it.

When Redis misses the online write (after the push policy's tries), the rows go to the push outbox and
the scheduler's `push_outbox` job writes them later, as for a push. When PostgreSQL fails, the batch
raises StoreUnavailableError and is not acknowledged: the broker delivers it again.

`on_committed(view_name, entity_ids)` runs after each source's rows are in both stores, with the entities
whose online rows were written (not those Redis already had as new): the seam for streaming inference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from core.errors import NotFoundError, StoreUnavailableError, first_line
from core.features.specs import ViewSpec
from core.online.rows import FeatureRows
from core.online.store import OnlineStore
from core.push.outbox import unavailable
from core.push.rows import online_rows
from core.push.service import PushPolicy
from streaming.batch import DeadLetter, ViewBatch, prepare_batch
from streaming.events import Event
from streaming.offline import append_new, defer_online, prune_seen

__all__ = ["BatchOutcome", "OnCommitted", "RowsRejectedError", "StreamWriter", "ignore_committed"]

logger = logging.getLogger(__name__)

OnCommitted = Callable[[str, list[Any]], None]
"""Called with a view's name and the entity ids whose online rows a micro-batch wrote."""

Views = Callable[[str], ViewSpec | None] | Mapping[str, ViewSpec]
"""Finds the view a push source feeds (None: no such push source)."""


class RowsRejectedError(ValueError):
    """The offline table refused a row that passed validation (a constraint, a narrower column type)."""


def ignore_committed(view_name: str, entity_ids: list[Any]) -> None:
    """The default `on_committed`: nothing to do."""


@dataclass(slots=True)
class BatchOutcome:
    """What one micro-batch did, per event: appended offline for the first time (`stored`), already seen
    (`replayed`), online write left to the outbox (`deferred`), or a dead letter."""

    stored: int = 0
    replayed: int = 0
    deferred: int = 0
    written_online: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


class StreamWriter:
    """Writes micro-batches of events to both stores (see the module docstring)."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        online: OnlineStore,
        views: Views,
        *,
        broker: str,
        stream: str,
        policy: PushPolicy | None = None,
        on_committed: OnCommitted = ignore_committed,
        seen_keep_s: float = 7 * 86_400,
        prune_every_s: float = 60.0,
        online_per_call: int = 256,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connect = connect
        self.online = online
        self.views = views
        self.broker = broker
        self.stream = stream
        self.policy = policy or PushPolicy()
        self.on_committed = on_committed
        self.seen_keep_s = seen_keep_s
        self.online_per_call = (
            online_per_call  # entities per newer-wins script call (core.online.newer_wins_many)
        )
        self.prune_every_s = prune_every_s
        self.clock = clock
        self._conn: psycopg.Connection[Any] | None = None
        self._next_prune = time.monotonic() + prune_every_s

    def write(self, events: Sequence[Event]) -> BatchOutcome:
        """Write the batch; its dead letters are returned for the consumer to publish.

        StoreUnavailableError (PostgreSQL, or Redis and then PostgreSQL for the outbox): do not acknowledge.
        """
        batch = prepare_batch(events, self.views, now=self.clock(), policy=self.policy)
        outcome = BatchOutcome(dead=list(batch.dead))
        committed: list[ViewBatch] = []
        for group in batch.groups:
            try:
                appended = self._append(group)
            except NotFoundError as exc:
                outcome.dead += [DeadLetter(event, "not_appendable", str(exc)) for event in group.events]
                continue
            except RowsRejectedError:
                # A row the table refuses (a constraint, a column type narrower than Feast's): find it
                # event by event (rare), so it alone becomes a dead letter and never blocks the stream.
                group, appended, rejected = self._append_each(group)
                outcome.dead += rejected
                if not group.events:
                    continue
            outcome.stored += appended
            outcome.replayed += len(group.events) - appended
            committed.append(group)
        for group in committed:
            rows = online_rows(group.valid)
            try:
                written = self._write_online(rows)
            except StoreUnavailableError as exc:
                logger.warning("stream: online write of %s left to the push outbox: %s", rows.view, exc)
                self._defer(rows, exc)
                outcome.deferred += len(group.events)
                continue
            outcome.written_online += int(written.sum())
            if written.any():
                self._notify(rows.view, rows.entity_ids[written].tolist())
        self._maybe_prune()
        return outcome

    def _append(self, group: ViewBatch) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                return len(append_new(conn, group, broker=self.broker, stream=self.stream))

        return int(self._pg(work))

    def _append_each(self, group: ViewBatch) -> tuple[ViewBatch, int, list[DeadLetter]]:
        """Append the group one event per transaction: the events kept, how many appended, the refused."""
        kept: list[int] = []
        appended = 0
        rejected: list[DeadLetter] = []
        for position, event in enumerate(group.events):
            try:
                appended += self._append(group.only([position]))
            except RowsRejectedError as exc:
                rejected.append(DeadLetter(event, "offline_rejected", str(exc)))
                continue
            kept.append(position)
        return group.only(kept), appended, rejected

    def _defer(self, rows: FeatureRows, exc: StoreUnavailableError) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            defer_online(conn, rows, error=unavailable(exc))

        self._pg(work)

    def _pg(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run `work` on the connection (opened on first use); a failure closes it: StoreUnavailableError."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self.connect()
            return work(self._conn)
        except NotFoundError:
            raise
        except psycopg.errors.InsufficientPrivilege as exc:
            raise NotFoundError(f"the offline table cannot be appended to: {first_line(exc)}") from exc
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            # The transaction was rolled back; the connection is fine. The rows, not the store, are at fault.
            raise RowsRejectedError(f"the offline table refused the row: {first_line(exc)}") from exc
        except Exception as exc:  # every failure here is PostgreSQL's: one error for the consumer
            self.close()
            raise StoreUnavailableError(f"PostgreSQL (stream append): {first_line(exc)}") from exc

    def _write_online(self, rows: FeatureRows) -> npt.NDArray[np.bool_]:
        policy = self.policy
        for attempt in range(1, policy.online_attempts + 1):
            try:
                return self.online.write_newer_mask(rows, per_call=self.online_per_call)
            except StoreUnavailableError:
                if attempt == policy.online_attempts:
                    raise
                time.sleep(policy.online_retry_s * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _notify(self, view_name: str, entity_ids: list[Any]) -> None:
        try:
            self.on_committed(view_name, entity_ids)
        except Exception:  # the rows are in both stores: a failing hook must not hold the stream back
            logger.exception("stream: on_committed hook failed for %s", view_name)

    def _maybe_prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.prune_every_s
        try:
            pruned = self._pg(lambda conn: prune_seen(conn, keep_s=self.seen_keep_s))
        except StoreUnavailableError as exc:
            logger.warning("stream: could not prune old event keys: %s", exc)
            return
        if pruned:
            logger.info("stream: forgot %d event keys older than %.0f s", pruned, self.seen_keep_s)

    def close(self) -> None:
        """Close the PostgreSQL connection (the online store belongs to the caller)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
