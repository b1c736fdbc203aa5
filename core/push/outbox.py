"""The push outbox: pushed rows committed offline whose online write is not confirmed yet.

A push commits its offline rows and one outbox row (its online rows as JSON) in one PostgreSQL transaction,
then writes Redis. Written: the outbox row is deleted. Not written (Redis down, slow, anything): the row
stays, and a drain writes it later: the next push (`PgPushStore.settle` claims a few) or the scheduler's
`push_outbox` job (`drain_outbox`). A crash between the commit and the online write leaves the row too, so
a pushed row is never online without being offline, and never offline for long without being online.

A drain holds a row by a lease (`lease_until`), so two drains rarely write the same rows; when they do
(a lease ran out), the newer-wins write makes the second a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from core.errors import StoreUnavailableError
from core.features.keys import EntityKey, KeyKind
from core.offline.append import OfflineRows, PgAppender
from core.online.encoding import ValueKind
from core.online.rows import FeatureColumn, FeatureRows

__all__ = [
    "OutboxItem",
    "PgPushStore",
    "claim_outbox",
    "finish_outbox",
    "outbox_payload",
    "rows_from_payload",
]

_INSERT = (
    "INSERT INTO tandem.push_outbox (view, rows, payload, attempts, lease_until) "
    "VALUES (%(view)s, %(rows)s, %(payload)s, 1, now() + make_interval(secs => %(lease_s)s)) RETURNING id"
)
_CLAIM = (
    "UPDATE tandem.push_outbox SET attempts = attempts + 1, "
    "lease_until = now() + make_interval(secs => %(lease_s)s) "
    "WHERE id IN (SELECT id FROM tandem.push_outbox WHERE lease_until IS NULL OR lease_until < now() "
    "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id, payload"
)
_DELETE = "DELETE FROM tandem.push_outbox WHERE id = ANY(%(ids)s)"
_RELEASE = "UPDATE tandem.push_outbox SET lease_until = NULL, last_error = %(error)s WHERE id = ANY(%(ids)s)"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One claimed outbox row: its id and the online rows it holds."""

    id: int
    rows: FeatureRows


def _plain(value: object) -> object:
    """A JSON value for one feature value: numpy scalars as Python ones, NaN (Feast's null) as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None
        raise ValueError("an infinite value cannot be kept in the push outbox")
    return value


def outbox_payload(rows: FeatureRows) -> dict[str, Any]:
    """The online rows as JSON for the outbox (`rows_from_payload` gives them back)."""
    stamps = rows.event_timestamps
    if isinstance(stamps, np.ndarray):
        micros = stamps.astype("datetime64[us]").astype(np.int64).tolist()
    else:
        micros = [int(np.datetime64(stamps.replace(tzinfo=None), "us").astype(np.int64))] * len(rows)
    return {
        "view": rows.view,
        "join_keys": list(rows.key.join_keys),
        "key_kinds": list(rows.key.kinds),
        "key_ttl_s": rows.key_ttl_s,
        "entity_ids": rows.entity_ids.tolist(),
        "event_us": micros,
        "columns": [
            {"name": column.name, "kind": column.kind, "values": [_plain(v) for v in column.values]}
            for column in rows.columns
        ],
    }


def rows_from_payload(payload: dict[str, Any]) -> FeatureRows:
    """The online rows an outbox payload holds."""
    key = _payload_key(payload)
    return FeatureRows(
        view=payload["view"],
        key=key,
        entity_ids=key.array(payload["entity_ids"]),
        columns=tuple(
            FeatureColumn(c["name"], cast("ValueKind", c["kind"]), np.array(c["values"], dtype=object))
            for c in payload["columns"]
        ),
        event_timestamps=np.array(payload["event_us"], dtype=np.int64).astype("datetime64[us]"),
        key_ttl_s=payload["key_ttl_s"],
    )


def _payload_key(payload: dict[str, Any]) -> EntityKey:
    """The entity key of a payload; payloads written before composite keys hold one `join_key`/`key_kind`."""
    if "join_keys" in payload:
        kinds = [cast("KeyKind", kind) for kind in payload["key_kinds"]]
        return EntityKey(tuple(payload["join_keys"]), tuple(kinds))
    return EntityKey.single(payload["join_key"], cast("KeyKind", payload["key_kind"]))


def _items(claimed: Sequence[tuple[int, dict[str, Any]]]) -> list[OutboxItem]:
    return [OutboxItem(id=row_id, rows=rows_from_payload(payload)) for row_id, payload in sorted(claimed)]


class PgPushStore:
    """The push's PostgreSQL side on the API's asyncio pool: offline rows with their outbox row, then the
    outbox row settled or released. Every PostgreSQL failure raises StoreUnavailableError."""

    def __init__(self, appender: PgAppender, *, lease_s: float = 30.0) -> None:
        self.appender = appender
        self.lease_s = lease_s

    @classmethod
    def connect(cls, pool: AsyncConnectionPool, *, timeout_s: float, lease_s: float) -> PgPushStore:
        """A store on `pool`."""
        return cls(PgAppender(pool, timeout_s=timeout_s), lease_s=lease_s)

    async def append(self, rows: OfflineRows, online: FeatureRows) -> int:
        """Commit the offline rows and an outbox row holding `online` (leased to this push); its id."""
        params = {
            "view": online.view,
            "rows": len(online),
            "payload": Jsonb(outbox_payload(online)),
            "lease_s": self.lease_s,
        }

        async def outbox(conn: AsyncConnection[Any]) -> int:
            cursor = await conn.cursor(row_factory=tuple_row).execute(_INSERT, params)
            row = await cursor.fetchone()
            assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
            return int(row[0])

        return await self.appender.append(rows, outbox)

    async def settle(self, done: Sequence[int], *, claim: int = 0) -> list[OutboxItem]:
        """Delete the outbox rows written online; claim up to `claim` others that no drain holds."""
        ids, params = list(done), {"lease_s": self.lease_s, "limit": claim}

        async def work(conn: AsyncConnection[Any]) -> list[tuple[int, dict[str, Any]]]:
            if ids:
                await conn.execute(_DELETE, {"ids": ids})
            if claim <= 0:
                return []
            cursor = await conn.cursor(row_factory=tuple_row).execute(_CLAIM, params)
            return [(int(row[0]), row[1]) for row in await cursor.fetchall()]

        return _items(await self.appender.transaction(work))

    async def release(self, ids: Sequence[int], *, error: str) -> None:
        """Give the rows back to any drain (the online write failed), noting the error."""

        async def work(conn: AsyncConnection[Any]) -> None:
            await conn.execute(_RELEASE, {"ids": list(ids), "error": error[:500]})

        await self.appender.transaction(work)


def claim_outbox(conn: psycopg.Connection[Any], *, limit: int, lease_s: float) -> list[OutboxItem]:
    """Claim up to `limit` outbox rows that no drain holds, oldest first (commits: autocommit or not)."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(_CLAIM, {"lease_s": lease_s, "limit": limit})
        return _items([(int(row[0]), row[1]) for row in cursor.fetchall()])


def finish_outbox(
    conn: psycopg.Connection[Any], *, done: Sequence[int], failed: Sequence[int], error: str
) -> None:
    """Delete the rows written online, release the others with `error`."""
    with conn.transaction():
        if done:
            conn.execute(_DELETE, {"ids": list(done)})
        if failed:
            conn.execute(_RELEASE, {"ids": list(failed), "error": error[:500]})


def unavailable(exc: BaseException) -> str:
    """One line for `last_error`."""
    if isinstance(exc, StoreUnavailableError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
