"""The newer-wins online write for many entities per script call: the same rule, fewer round trips in Redis.

`core.online.newer_wins` runs one script per entity: Redis parses, looks up and starts a script for every
row, which is most of the write's cost on a stream of events. Here one `EVALSHA` carries up to `per_call`
entities (KEYS) and runs, for each in order, exactly the single-entity script's check and write: the
stored `_ts:<view>` against the new one (the same Lua timestamp decoder, taken from that script), then
`_ts` and the features in Feast's order, then `EXPIRE`. Each entity's check and write are atomic, as there;
the whole call is too (Redis runs one script at a time), so keep `per_call` in the hundreds: a call holds
Redis for its duration. One HSET argument table serves every entity of a call (fields fixed, values
replaced): a table per entity cost Redis ~10% more, mostly in Lua's garbage collector. The reply is one 0/1 per entity, in row order.

ARGV: `_ts:<view>`, key TTL (0: none), the number of features F, the F feature fields, then per entity its
Timestamp bytes and its F values. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from itertools import chain

import numpy as np

from core.online.encoding import (
    encode_timestamps,
    encode_values,
    feature_field,
    row_bytes,
    timestamp_field,
)
from core.online.keys import encode_keys
from core.online.newer_wins import NEWER_WINS_SCRIPT
from core.online.rows import FeatureRows

__all__ = [
    "NEWER_OR_EQUAL_MANY_SCRIPT",
    "NEWER_OR_EQUAL_MANY_SHA",
    "NEWER_WINS_MANY_SCRIPT",
    "NEWER_WINS_MANY_SHA",
    "many_script_of",
    "pack_newer_writes_many",
]

_STAMP = NEWER_WINS_SCRIPT[: NEWER_WINS_SCRIPT.index(b"local stored")]  # the `stamp(data)` decoder

NEWER_WINS_MANY_SCRIPT = (
    _STAMP
    + b"""
local ts_field, ttl, width = ARGV[1], ARGV[2], tonumber(ARGV[3])
local fields = {}
for i = 1, width do fields[i] = ARGV[3 + i] end
local written = {}
local args = {ts_field, ''}  -- one HSET argument table for every entity: its fields fixed, values replaced
for i = 1, width do args[2 * i + 1] = fields[i] end
for k = 1, #KEYS do
  local at = 3 + width + (k - 1) * (1 + width)
  local new_stamp = ARGV[at + 1]
  local keep = false
  local stored = redis.call('HGET', KEYS[k], ts_field)
  if stored then
    local seconds, nanos = stamp(stored)
    if seconds < 0 then seconds, nanos = 0, 0 end
    if seconds > 0 or nanos > 0 then
      local new_seconds, new_nanos = stamp(new_stamp)
      if new_seconds < seconds or (new_seconds == seconds and new_nanos <= nanos) then keep = true end
    end
  end
  if keep then
    written[k] = 0
  else
    args[2] = new_stamp
    for i = 1, width do args[2 * i + 2] = ARGV[at + 1 + i] end
    redis.call('HSET', KEYS[k], unpack(args))
    if ttl ~= '0' then redis.call('EXPIRE', KEYS[k], ttl) end
    written[k] = 1
  end
end
return written
"""
)

NEWER_WINS_MANY_SHA = hashlib.sha1(NEWER_WINS_MANY_SCRIPT, usedforsecurity=False).hexdigest().encode()

NEWER_OR_EQUAL_MANY_SCRIPT = NEWER_WINS_MANY_SCRIPT.replace(
    b"(new_seconds == seconds and new_nanos <= nanos)", b"(new_seconds == seconds and new_nanos < nanos)"
)
"""The same calls where a row as new as the stored one replaces it (`ties_win`: publishing stored scores)."""
NEWER_OR_EQUAL_MANY_SHA = hashlib.sha1(NEWER_OR_EQUAL_MANY_SCRIPT, usedforsecurity=False).hexdigest().encode()
if NEWER_OR_EQUAL_MANY_SCRIPT == NEWER_WINS_MANY_SCRIPT:  # pragma: no cover - guards the replace above
    raise RuntimeError("the newer-or-equal script must differ from the newer-wins one")


def many_script_of(*, ties_win: bool) -> tuple[bytes, bytes]:
    """(script, sha) of the many-entities write, or of its newer-or-equal variant with `ties_win`."""
    if ties_win:
        return NEWER_OR_EQUAL_MANY_SCRIPT, NEWER_OR_EQUAL_MANY_SHA
    return NEWER_WINS_MANY_SCRIPT, NEWER_WINS_MANY_SHA


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _bulks(parts: Sequence[bytes]) -> list[bytes]:
    """Each part as a RESP bulk string; parts of one length (keys, doubles, timestamps mostly) framed by
    numpy in one go, others one by one."""
    sizes = set(map(len, parts))
    if len(sizes) != 1 or len(parts) < 16:
        return [b"$%d\r\n%b\r\n" % (len(part), part) for part in parts]
    size = sizes.pop()
    head = b"$%d\r\n" % size
    rows = np.empty((len(parts), len(head) + size + 2), dtype=np.uint8)
    rows[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    rows[:, len(head) : len(head) + size] = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, size)
    rows[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
    return row_bytes(rows)


def pack_newer_writes_many(
    project: str, rows: FeatureRows, *, per_call: int = 256, by_body: bool = False, ties_win: bool = False
) -> tuple[bytes, int]:
    """`EVALSHA` (or `EVAL` with `by_body`) calls of up to `per_call` rows each, in row order; returns the
    bytes and how many calls (replies) they hold. `ties_win`: the newer-or-equal variant."""
    count = len(rows)
    if count == 0:
        return b"", 0
    if per_call < 1:
        raise ValueError("per_call must be positive")
    keys = _bulks(encode_keys(rows.key, rows.entity_ids, project=project))
    stamps = _bulks(encode_timestamps(rows.event_timestamps, count))
    columns = [_bulks(encode_values(column.kind, column.values)) for column in rows.columns]
    width = len(columns)
    script, sha = many_script_of(ties_win=ties_win)
    head = _bulk(b"EVAL") + _bulk(script) if by_body else _bulk(b"EVALSHA") + _bulk(sha)
    tail = (
        _bulk(timestamp_field(rows.view))
        + _bulk(b"%d" % (rows.key_ttl_s or 0))
        + _bulk(b"%d" % width)
        + b"".join(_bulk(feature_field(rows.view, column.name)) for column in rows.columns)
    )

    def calls() -> Iterator[bytes]:
        for start in range(0, count, per_call):
            stop = min(start + per_call, count)
            entities = stop - start
            arguments = 2 + 1 + entities + 3 + width + entities * (1 + width)
            yield b"*%d\r\n" % arguments + head + _bulk(b"%d" % entities)
            yield from keys[start:stop]
            yield tail
            yield from chain.from_iterable(
                zip(stamps[start:stop], *(c[start:stop] for c in columns), strict=True)
            )

    return b"".join(calls()), -(-count // per_call)
