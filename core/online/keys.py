"""Feast's entity keys and Redis keys, computed without protobuf objects.

`serialize_entity_key(EntityKey, entity_key_serialization_version=3)`: `<u32 n>`, then per join key (sorted
by name when n > 1) `<u32 STRING=2><u32 len><name>`, then per value in the same order
`<u32 type><u32 len><bytes>`: int64 `4, 8, <i64>`, int32 `3, 4, <i32>`, string `2, len, <utf-8>` (all
little-endian). Feast's Redis key is that, then the project name in UTF-8. `serialize_entity_key` /
`encode_redis_keys` take int64, int32 and string keys, composite ones too; `encode_entity_keys` is the
vectorised path for one int64 or int32 key. Pure (no I/O); tests compare every form with Feast's own.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.keys import EntityId, EntityKey, IntKeyKind, KeyKind
from core.online.encoding import INT_BOUNDS, row_bytes

__all__ = [
    "IntKeyKind",
    "KeyKind",
    "encode_entity_keys",
    "encode_keys",
    "encode_redis_keys",
    "entity_id_of_redis_key",
    "entity_key_prefix",
    "parse_entity_key",
    "parse_project_key",
    "redis_key",
    "serialize_entity_key",
]

_VALUE_TYPE_STRING = 2  # feast.types.ValueType.STRING
_VALUE_TYPE_INT32 = 3  # feast.types.ValueType.INT32
_VALUE_TYPE_INT64 = 4  # feast.types.ValueType.INT64

_INT_KEYS: dict[str, tuple[int, str]] = {
    "int64": (_VALUE_TYPE_INT64, "<i8"),
    "int32": (_VALUE_TYPE_INT32, "<i4"),
}


def entity_key_prefix(join_key: str, kind: IntKeyKind = "int64") -> bytes:
    """The bytes of a v3 serialized entity key with one int join key, up to (excluding) the id itself."""
    value_type, dtype = _INT_KEYS[kind]
    name = join_key.encode("utf-8")
    return (
        struct.pack("<III", 1, _VALUE_TYPE_STRING, len(name))
        + name
        + struct.pack("<II", value_type, np.dtype(dtype).itemsize)
    )


def _int_values(join_key: str, ids: npt.NDArray[Any], kind: IntKeyKind) -> npt.NDArray[np.uint8]:
    """`<u32 type><u32 width><int>` of each id, one row each, packed by numpy; ValueError out of range."""
    value_type, dtype = _INT_KEYS[kind]
    _check_int_range(join_key, ids, kind)
    ints = np.ascontiguousarray(ids, dtype=dtype)
    width = ints.itemsize
    rows = np.empty((len(ints), 8 + width), dtype=np.uint8)
    rows[:, :8] = np.frombuffer(struct.pack("<II", value_type, width), dtype=np.uint8)
    rows[:, 8:] = ints.view(np.uint8).reshape(-1, width)
    return rows


def encode_entity_keys(
    *, join_key: str, entity_ids: npt.NDArray[np.int64], project: str, kind: IntKeyKind = "int64"
) -> list[bytes]:
    """Feast's Redis key (`_redis_key`, serialization v3) for each id of a single int64 or int32 join key;
    an id outside the kind's range raises ValueError naming the join key."""
    head = np.frombuffer(_key_header([join_key], [0]), dtype=np.uint8)
    suffix = np.frombuffer(project.encode("utf-8"), dtype=np.uint8)
    values = _int_values(join_key, np.asarray(entity_ids), kind)
    rows = np.empty((len(values), len(head) + values.shape[1] + len(suffix)), dtype=np.uint8)
    rows[:, : len(head)] = head
    rows[:, len(head) : len(head) + values.shape[1]] = values
    rows[:, len(head) + values.shape[1] :] = suffix
    return row_bytes(rows)


def _key_bytes(join_key: str, value: object, kind: KeyKind) -> bytes:
    """`<u32 type><u32 len><bytes>` of one entity key value, or ValueError naming the join key."""
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"entity key {join_key!r}: expected a string, got {type(value).__name__}")
        data = value.encode("utf-8")
        return struct.pack("<II", _VALUE_TYPE_STRING, len(data)) + data
    if kind not in INT_BOUNDS:
        raise ValueError(f"entity key {join_key!r}: unsupported key kind {kind!r}")
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"entity key {join_key!r}: expected an integer, got {type(value).__name__}")
    low, high = INT_BOUNDS[kind]
    if not low <= int(value) <= high:
        raise ValueError(f"entity key {join_key!r}: {value} is out of {kind} range")
    if kind == "int64":
        return struct.pack("<IIq", _VALUE_TYPE_INT64, 8, int(value))
    return struct.pack("<IIi", _VALUE_TYPE_INT32, 4, int(value))


def _key_order(join_keys: Sequence[str], values: Sequence[object], kinds: Sequence[KeyKind]) -> list[int]:
    """Positions of the join keys in Feast's order (sorted by name when there are several)."""
    if not len(join_keys) == len(values) == len(kinds):
        raise ValueError("join_keys, values and kinds must have the same length")
    if not join_keys:
        raise ValueError("an entity key needs at least one join key")
    if len(set(join_keys)) != len(join_keys):
        raise ValueError(f"join keys repeat: {list(join_keys)}")
    return sorted(range(len(join_keys)), key=lambda i: join_keys[i])


def _key_header(join_keys: Sequence[str], order: Sequence[int]) -> bytes:
    names = [join_keys[i].encode("utf-8") for i in order]
    return struct.pack("<I", len(names)) + b"".join(
        struct.pack("<II", _VALUE_TYPE_STRING, len(name)) + name for name in names
    )


def serialize_entity_key(
    join_keys: Sequence[str], values: Sequence[object], kinds: Sequence[KeyKind]
) -> bytes:
    """Feast's `serialize_entity_key(EntityKey, 3)` for int64, int32 and string join keys, composite too.

    ValueError naming the join key for a value of the wrong type or out of its kind's range.
    """
    order = _key_order(join_keys, values, kinds)
    return _key_header(join_keys, order) + b"".join(
        _key_bytes(join_keys[i], values[i], kinds[i]) for i in order
    )


def redis_key(
    join_keys: Sequence[str], values: Sequence[object], kinds: Sequence[KeyKind], *, project: str
) -> bytes:
    """Feast's Redis key (`_redis_key`, serialization v3): the serialized entity key, then the project."""
    return serialize_entity_key(join_keys, values, kinds) + project.encode("utf-8")


def _check_int_range(join_key: str, values: npt.NDArray[Any], kind: KeyKind) -> None:
    low, high = INT_BOUNDS[kind]
    if len(values) and (int(values.min()) < low or int(values.max()) > high):
        raise ValueError(f"entity key {join_key!r}: a value is out of {kind} range")


def _key_column(join_key: str, values: npt.NDArray[Any] | Sequence[object], kind: KeyKind) -> list[bytes]:
    """`_key_bytes` for every value of one join key; numpy int columns are packed without a Python loop."""
    if kind != "string" and isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return row_bytes(_int_values(join_key, values, kind))
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return [_key_bytes(join_key, value, kind) for value in items]


def encode_redis_keys(
    join_keys: Sequence[str],
    columns: Sequence[npt.NDArray[Any] | Sequence[object]],
    kinds: Sequence[KeyKind],
    *,
    project: str,
) -> list[bytes]:
    """`redis_key` for many entities: one column of values per join key (numpy or list), equal lengths."""
    order = _key_order(join_keys, columns, kinds)
    if len({len(column) for column in columns}) > 1:
        raise ValueError("every join key needs one value per entity")
    first = columns[0]
    kind = kinds[0]
    if len(order) == 1 and kind != "string" and isinstance(first, np.ndarray) and first.dtype.kind in "iu":
        return encode_entity_keys(join_key=join_keys[0], entity_ids=first, project=project, kind=kind)
    head, tail = _key_header(join_keys, order), project.encode("utf-8")
    parts = [_key_column(join_keys[i], columns[i], kinds[i]) for i in order]
    return [head + b"".join(values) + tail for values in zip(*parts, strict=True)]


def encode_keys(key: EntityKey, entity_ids: npt.NDArray[Any] | Sequence[Any], *, project: str) -> list[bytes]:
    """Feast's Redis key of each entity id (see `core.features.keys`) of an entity key of any shape."""
    int_kind = key.int_kind
    if int_kind is not None:
        ids = np.asarray(entity_ids, dtype=np.int64) if not isinstance(entity_ids, np.ndarray) else entity_ids
        return encode_entity_keys(join_key=key.join_keys[0], entity_ids=ids, project=project, kind=int_kind)
    return encode_redis_keys(key.join_keys, key.columns(entity_ids), key.kinds, project=project)


def _read_u32(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(data):
        raise ValueError("truncated entity key")
    return struct.unpack_from("<I", data, pos)[0], pos + 4


def parse_entity_key(data: bytes) -> tuple[tuple[str, ...], tuple[int | str, ...]]:
    """The join keys (Feast's order) and values of a v3 serialized entity key: `serialize_entity_key`'s
    inverse for int64, int32 and string values; ValueError for anything else or trailing bytes."""
    count, pos = _read_u32(data, 0)
    if not 0 < count <= 64:
        raise ValueError(f"not an entity key: {count} join keys")
    names = []
    for _ in range(count):
        value_type, pos = _read_u32(data, pos)
        size, pos = _read_u32(data, pos)
        if value_type != _VALUE_TYPE_STRING or pos + size > len(data):
            raise ValueError("not an entity key: bad join key name")
        names.append(data[pos : pos + size].decode("utf-8"))
        pos += size
    values: list[int | str] = []
    for _ in range(count):
        value_type, pos = _read_u32(data, pos)
        size, pos = _read_u32(data, pos)
        if pos + size > len(data):
            raise ValueError("not an entity key: truncated value")
        raw = data[pos : pos + size]
        pos += size
        if value_type == _VALUE_TYPE_STRING:
            values.append(raw.decode("utf-8"))
        elif value_type == _VALUE_TYPE_INT64 and size == 8:
            values.append(struct.unpack("<q", raw)[0])
        elif value_type == _VALUE_TYPE_INT32 and size == 4:
            values.append(struct.unpack("<i", raw)[0])
        else:
            raise ValueError(f"not an entity key Tandem reads: value type {value_type}, {size} bytes")
    if pos != len(data):
        raise ValueError("not an entity key: trailing bytes")
    return tuple(names), tuple(values)


def parse_project_key(
    redis_key_bytes: bytes, *, project: str
) -> tuple[tuple[str, ...], tuple[int | str, ...]] | None:
    """The join keys and values of a Redis key of `project` (a whole entity key, then the project name); None
    for any other key: another project's (also one whose name ends with this one's) or not an entity key."""
    suffix = project.encode("utf-8")
    if not redis_key_bytes.endswith(suffix):
        return None
    try:
        return parse_entity_key(redis_key_bytes[: len(redis_key_bytes) - len(suffix)])
    except (ValueError, UnicodeDecodeError):
        return None


def entity_id_of_redis_key(key: EntityKey, redis_key_bytes: bytes, *, project: str) -> EntityId | None:
    """The entity id a Redis key of `project` names when its join keys are `key`'s; None for any other key
    (another project's, another entity's, or bytes that are not a Feast entity key)."""
    parsed = parse_project_key(redis_key_bytes, project=project)
    if parsed is None:
        return None
    names, values = parsed
    if names != key.join_keys or any(
        (kind == "string") != isinstance(value, str) for value, kind in zip(values, key.kinds, strict=True)
    ):
        return None
    entity_id = key.compose(values)
    try:  # the same kinds too (an int32 value under an int64 key names another Redis key)
        same = encode_keys(key, key.array([entity_id]), project=project)[0] == redis_key_bytes
    except ValueError:
        return None
    return entity_id if same else None
