"""The newer-wins online write as one atomic compare-and-set per entity: a Lua script and its RESP bytes.

Feast's own rule (`RedisOnlineStore.online_write_batch`): a row replaces the online one only when its
event time is newer than the stored `_ts:<view>` (a serialized `google.protobuf.Timestamp`); an older or
equal one is skipped; a missing, epoch or pre-epoch stored time counts as nothing stored. Feast reads the
stored times first and writes afterwards, so two concurrent writers can both pass the check and the older
row can land last. Here Redis runs the check and the write as one script per entity: nothing can come
between them. Rows of one batch run in order, so a repeated entity compares with the batch's earlier row.

The script decodes both timestamps' varints itself (field 1 seconds, field 2 nanos; a 10-byte varint is a
negative number) and writes exactly what `pack_hsets` writes: `_ts` first, then the features in Feast's
order, then `EXPIRE` when a key TTL is set. Sent as `EVALSHA` (`pack_newer_writes`); a server that has not
cached the script answers NOSCRIPT and the caller resends with `by_body=True` (`EVAL`, which caches it).

A publish of stored scores uses the variant `NEWER_OR_EQUAL_SCRIPT` (`ties_win=True`): a row with the same
event time replaces the online one (a rerun of a run, or two runs as of the same moment: the later
publication wins, as before), an older one never does.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from core.online.encoding import encode_timestamps, encode_values, feature_field, timestamp_field
from core.online.keys import encode_keys
from core.online.rows import FeatureRows

__all__ = [
    "NEWER_OR_EQUAL_SCRIPT",
    "NEWER_OR_EQUAL_SHA",
    "NEWER_WINS_SCRIPT",
    "NEWER_WINS_SHA",
    "pack_newer_writes",
    "script_of",
    "written_count",
]

NEWER_WINS_SCRIPT = b"""
local function stamp(data)
  local seconds, nanos, pos = 0, 0, 1
  while pos <= #data do
    local tag = string.byte(data, pos)
    pos = pos + 1
    local value, scale, count, byte = 0, 1, 0, 128
    while byte >= 128 do
      byte = string.byte(data, pos)
      if byte == nil then error('tandem: truncated protobuf Timestamp') end
      pos, count = pos + 1, count + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    if count >= 10 then value = -1 end
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value
    else error('tandem: not a protobuf Timestamp') end
  end
  return seconds, nanos
end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local seconds, nanos = stamp(stored)
  if seconds < 0 then seconds, nanos = 0, 0 end
  if seconds > 0 or nanos > 0 then
    local new_seconds, new_nanos = stamp(ARGV[2])
    if new_seconds < seconds or (new_seconds == seconds and new_nanos <= nanos) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
"""KEYS[1] the entity's key; ARGV: `_ts:<view>`, the new Timestamp bytes, key TTL (0: none), then
(field, value) pairs. Returns 1 when written, 0 when the stored row is as new or newer."""

NEWER_WINS_SHA = hashlib.sha1(NEWER_WINS_SCRIPT, usedforsecurity=False).hexdigest().encode()

_OLDER_OR_EQUAL = b"(new_seconds == seconds and new_nanos <= nanos)"
NEWER_OR_EQUAL_SCRIPT = NEWER_WINS_SCRIPT.replace(
    _OLDER_OR_EQUAL, b"(new_seconds == seconds and new_nanos < nanos)"
)
"""The same script where a row as new as the stored one replaces it (only an older one is skipped)."""
NEWER_OR_EQUAL_SHA = hashlib.sha1(NEWER_OR_EQUAL_SCRIPT, usedforsecurity=False).hexdigest().encode()
if NEWER_OR_EQUAL_SCRIPT == NEWER_WINS_SCRIPT:  # pragma: no cover - guards the replace above
    raise RuntimeError("the newer-or-equal script must differ from the newer-wins one")


def script_of(*, ties_win: bool) -> tuple[bytes, bytes]:
    """(script, sha) of the newer-wins write, or of its newer-or-equal variant with `ties_win`."""
    return (NEWER_OR_EQUAL_SCRIPT, NEWER_OR_EQUAL_SHA) if ties_win else (NEWER_WINS_SCRIPT, NEWER_WINS_SHA)


def pack_newer_writes(
    project: str, rows: FeatureRows, *, by_body: bool = False, ties_win: bool = False
) -> bytes:
    """One `EVALSHA` (or `EVAL` with `by_body`) of the newer-wins script (the newer-or-equal one with
    `ties_win`) per row, in row order."""
    count = len(rows)
    if count == 0:
        return b""
    keys = encode_keys(rows.key, rows.entity_ids, project=project)
    stamps = encode_timestamps(rows.event_timestamps, count)
    fields = [feature_field(rows.view, column.name) for column in rows.columns]
    values = [encode_values(column.kind, column.values) for column in rows.columns]
    script, sha = script_of(ties_win=ties_win)
    head = (b"EVAL", script) if by_body else (b"EVALSHA", sha)
    ts_field, ttl = timestamp_field(rows.view), b"%d" % (rows.key_ttl_s or 0)
    # Every command has the same shape: its constant parts go into one template (with `%` escaped), filled
    # per row with the bulk strings of the key, the timestamp and each value: one formatting per row.
    count_args = len(head) + 5 + 2 * len(fields)  # head, numkeys, key, _ts field, stamp, TTL, pairs
    lead = b"*%d\r\n" % count_args + b"".join(_bulk(part) for part in (*head, b"1"))
    template = (
        _escape(lead)
        + b"%b"
        + _escape(_bulk(ts_field))
        + b"%b"
        + _escape(_bulk(ttl))
        + b"".join(_escape(_bulk(field)) + b"%b" for field in fields)
    )
    columns = [_bulks(column) for column in values]
    return b"".join(template % parts for parts in zip(_bulks(keys), _bulks(stamps), *columns, strict=True))


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _bulks(parts: Sequence[bytes]) -> list[bytes]:
    return [b"$%d\r\n%b\r\n" % (len(part), part) for part in parts]


def _escape(data: bytes) -> bytes:
    return data.replace(b"%", b"%%")


def written_count(replies: Sequence[Any]) -> int:
    """How many rows the scripts wrote (each replies 1 when it wrote, 0 when it kept the stored row)."""
    return sum(1 for reply in replies if reply == 1)
