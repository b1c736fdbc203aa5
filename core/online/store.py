"""The online store: Feast's Redis layout for one project, read and written by every part of Tandem.

One interface, two colours: `OnlineStore` here (synchronous, for the batch publish, the checker, the stream
and the command line) and `core.online.async_store.AsyncOnlineStore` (asyncio, for the API's reads and
pushes). Both do the same operations with the same bytes, produced in `core.online.wire`:

- `read(layout, ids)`: a feature service's values, their event times and the stored score, one round trip
  per `batch` entities (a contract test compares every transport with Feast's own reader);
- `write(rows)`: rows of one view, always overwriting (a batch run is the newest publication);
- `write_newer(rows)`: Feast's rule, a row replaces the online one only with a newer event time, checked
  and written atomically per entity by a Lua script (`core.online.newer_wins`), pipelined; with
  `ties_win` an equally new row replaces it too (publishing stored scores, streamed in batches);
- `restore_owned(rows, owner)` / `delete_owned(view, ids, owner)`: set or delete a view's row only where its
  `run_id` still holds `owner` (undoing a failed publish without touching newer rows, `core.online.owned`);
- `delete(view, ids)` / `purge()`: a view's fields of some entities / every key of the project.

Any failure to talk to Redis (connection, timeout, protocol, error reply) raises StoreUnavailableError
naming Redis (`core.online.failures`), with the library's error chained: callers map that one error (the API to 503 or a degraded
answer, the command line to one line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from core.endpoints import RedisEndpoint
from core.features.keys import EntityId, EntityKey
from core.features.specs import ViewSpec
from core.online.encoding import feature_field
from core.online.failures import decoded_rows, mapped, no_script
from core.online.keys import entity_id_of_redis_key, parse_project_key
from core.online.newer_wins import pack_newer_writes, written_count
from core.online.newer_wins_many import many_script_of, pack_newer_writes_many
from core.online.owned import owner_value, pack_owned_deletes, pack_owned_writes
from core.online.rows import FeatureRows, OnlineRow
from core.online.transport import SyncTransport
from core.online.wire import (
    ReadLayout,
    command,
    pack_hdels,
    pack_hsets,
    view_fields,
)

__all__ = ["OnlineStore"]

_MANY_PER_CALL = 256  # entities per newer-wins script call when publishing in batches


def _glob_escape(pattern: bytes) -> bytes:
    """`pattern` with Redis glob characters escaped (a project name may hold any of them)."""
    for char in (b"\\", b"*", b"?", b"[", b"]"):
        pattern = pattern.replace(char, b"\\" + char)
    return pattern


class OnlineStore:
    """The online store over redis-py's synchronous client (see the module docstring)."""

    def __init__(self, client: redis.Redis, *, project: str) -> None:
        self.transport = SyncTransport(client)
        self.project = project

    @classmethod
    def connect(cls, endpoint: RedisEndpoint, *, project: str, timeout_s: float = 60.0) -> OnlineStore:
        """A store on its own client for `endpoint` (close it with `close()`)."""
        client = redis.Redis.from_url(endpoint.url(), socket_timeout=timeout_s, socket_connect_timeout=5)
        return cls(client, project=project)

    def read(
        self, layout: ReadLayout, entity_ids: Sequence[EntityId], *, batch: int = 1_000
    ) -> list[OnlineRow]:
        """Rows for `entity_ids`, in order, `batch` entities per round trip."""
        rows: list[OnlineRow] = []
        with mapped():
            for start in range(0, len(entity_ids), batch):
                ids = entity_ids[start : start + batch]
                rows.extend(decoded_rows(layout, ids, self.transport.request(layout.request(ids), len(ids))))
        return rows

    def write(
        self, rows: FeatureRows, *, batch_rows: int = 5_000, progress: Callable[[int], None] | None = None
    ) -> int:
        """Write every row, overwriting; returns how many. `progress(rows)` after each acknowledged batch.

        Batches are independent: on an error the batches before the failing one are written.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")

        def batches() -> Iterator[tuple[bytes, int, int]]:
            for start in range(0, len(rows), batch_rows):
                part = rows.part(start, min(start + batch_rows, len(rows)))
                payload, commands = pack_hsets(self.project, part)
                yield payload, commands, len(part)

        with mapped():
            self.transport.stream(batches(), progress)
        return len(rows)

    def write_newer(
        self,
        rows: FeatureRows,
        *,
        ties_win: bool = False,
        batch_rows: int | None = None,
        per_call: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the rows whose event time is newer than the online one (or as new, with `ties_win`); returns
        how many were written.

        With `batch_rows`, rows go in pipelined batches like `write` (`progress(rows)` after each
        acknowledged one; on an error the batches before the failing one are written); else in one request,
        of one script call per entity, or of up to `per_call` entities per call when `per_call` > 1
        (`core.online.newer_wins_many`: far less work in Redis per row).
        """
        if len(rows) == 0:
            return 0
        if batch_rows is not None:
            return self._stream_newer(rows, ties_win=ties_win, batch_rows=batch_rows, progress=progress)

        def send(by_body: bool) -> int:
            if per_call > 1:
                payload, calls = pack_newer_writes_many(
                    self.project, rows, per_call=per_call, by_body=by_body, ties_win=ties_win
                )
                return sum(written_count(reply) for reply in self.transport.request(payload, calls))
            payload = pack_newer_writes(self.project, rows, by_body=by_body, ties_win=ties_win)
            return written_count(self.transport.request(payload, len(rows)))

        with mapped():
            try:
                written = send(by_body=False)
            except redis.ResponseError as exc:
                if not no_script(exc):
                    raise
                written = send(by_body=True)
        if progress is not None:
            progress(len(rows))
        return written

    def write_newer_mask(self, rows: FeatureRows, *, per_call: int = 1) -> npt.NDArray[np.bool_]:
        """`write_newer`, saying which rows were written (True) and which kept an as-new online row.

        `per_call` > 1: up to that many entities per script call (`core.online.newer_wins_many`), the same
        rule with far less work in Redis per row; 1: one call per entity (`core.online.newer_wins`).
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=bool)

        def send(by_body: bool) -> list[Any]:
            if per_call > 1:
                payload, calls = pack_newer_writes_many(
                    self.project, rows, per_call=per_call, by_body=by_body
                )
                return [flag for reply in self.transport.request(payload, calls) for flag in reply]
            return self.transport.request(pack_newer_writes(self.project, rows, by_body=by_body), len(rows))

        with mapped():
            try:
                replies = send(by_body=False)
            except redis.ResponseError as exc:
                if not no_script(exc):
                    raise
                replies = send(by_body=True)
        return np.fromiter((reply == 1 for reply in replies), dtype=bool, count=len(replies))

    def _stream_newer(
        self, rows: FeatureRows, *, ties_win: bool, batch_rows: int, progress: Callable[[int], None] | None
    ) -> int:
        """Pipelined batches of `_MANY_PER_CALL` entities per script call (`core.online.newer_wins_many`)."""
        if batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        written = 0

        def count(replies: list[Any]) -> None:
            nonlocal written
            written += sum(written_count(reply) for reply in replies)

        def batches() -> Iterator[tuple[bytes, int, int]]:
            for start in range(0, len(rows), batch_rows):
                part = rows.part(start, min(start + batch_rows, len(rows)))
                payload, calls = pack_newer_writes_many(
                    self.project, part, per_call=_MANY_PER_CALL, ties_win=ties_win
                )
                yield payload, calls, len(part)

        with mapped():
            script, _ = many_script_of(ties_win=ties_win)
            self.transport.request(command(b"SCRIPT", b"LOAD", script), 1)  # then EVALSHA finds it
            self.transport.stream(batches(), progress, count)
        return written

    def restore_owned(self, rows: FeatureRows, *, owner_run_id: str) -> int:
        """Write each row only where the view's `run_id` field still holds `owner_run_id`; returns how many."""
        if len(rows) == 0:
            return 0
        payload = pack_owned_writes(
            self.project,
            rows,
            owner_field=feature_field(rows.view, "run_id"),
            owner=owner_value(owner_run_id),
        )
        with mapped():
            return written_count(self.transport.request(payload, len(rows)))

    def delete_owned(self, view: ViewSpec, entity_ids: npt.NDArray[Any], *, owner_run_id: str) -> int:
        """Remove `view`'s fields of the entities whose `run_id` field still holds `owner_run_id`."""
        if len(entity_ids) == 0:
            return 0
        payload = pack_owned_deletes(
            self.project,
            key=view.key,
            entity_ids=entity_ids,
            fields=view_fields(view),
            owner_field=feature_field(view.name, "run_id"),
            owner=owner_value(owner_run_id),
        )
        with mapped():
            return written_count(self.transport.request(payload, len(entity_ids)))

    def delete(self, view: ViewSpec, entity_ids: npt.NDArray[Any]) -> int:
        """Remove `view`'s fields (values and `_ts`) from the entities' hashes; returns the entities."""
        if len(entity_ids) == 0:
            return 0
        with mapped():
            payload = pack_hdels(self.project, view.key, entity_ids, view_fields(view))
            self.transport.request(payload, len(entity_ids))
        return len(entity_ids)

    def _project_keys(self, *, batch: int, limit: int | None = None) -> Iterator[list[bytes]]:
        """The project's keys, a SCAN batch at a time (at most about `limit` keys looked at): Feast's keys end
        with the project name, and only keys that are a whole entity key before it count (so project `abc`
        never takes `xabc`'s keys)."""
        cursor, seen = b"0", 0
        pattern = b"*" + _glob_escape(self.project.encode("utf-8"))
        while True:
            scan = command(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"%d" % batch)
            cursor, keys = self.transport.request(scan, 1)[0]
            mine = [key for key in keys if parse_project_key(bytes(key), project=self.project) is not None]
            seen += len(keys)
            if mine:
                yield mine
            if cursor in (b"0", 0) or (limit is not None and seen >= limit):
                return

    def purge(self, *, batch: int = 1_000) -> int:
        """Delete every key of the project; returns how many.

        Used when the offline data was replaced wholesale (re-seeding): Feast's online write never replaces
        a row with an older or equal event time, so stale rows would otherwise survive materialization.
        """
        deleted = 0
        with mapped():
            for keys in self._project_keys(batch=batch):
                deleted += int(self.transport.request(command(b"DEL", *keys), 1)[0])
        return deleted

    def entity_ids(self, key: EntityKey, *, limit: int, batch: int = 1_000) -> list[EntityId]:
        """Ids of the project's entities of `key` that have any key online (SCAN; at most about `limit`
        keys looked at, in Redis's hash order)."""
        found: list[EntityId] = []
        with mapped():
            for keys in self._project_keys(batch=batch, limit=limit):
                for redis_key in keys:
                    entity_id = entity_id_of_redis_key(key, bytes(redis_key), project=self.project)
                    if entity_id is not None:
                        found.append(entity_id)
        return found

    def close(self) -> None:
        """Close the client."""
        self.transport.close()
