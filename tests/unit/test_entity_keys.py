"""Entity keys of any Feast key type are byte-identical to Feast's own serializer and Redis key (no I/O)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.key_encoding_utils import serialize_entity_key as feast_serialize
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from core.features.keys import EntityKey as TandemKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.keys import KeyKind, encode_entity_keys, encode_redis_keys, redis_key, serialize_entity_key
from core.online.wire import ReadLayout

_FIELDS: dict[str, str] = {"int64": "int64_val", "int32": "int32_val", "string": "string_val"}
_INT64 = [0, 1, -1, 255, 256, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63), 1_234_567_890_123]
_INT32 = [0, 1, -1, 127, 128, 65_535, 2**31 - 1, -(2**31)]
_STRINGS = ["", "a", "driver_1001", "Ünïcødé", "日本語", "🙂" * 40, "x" * 300, "with space\x00nul"]


def _feast_key(join_keys: list[str], values: list[Any], kinds: list[KeyKind]) -> EntityKey:
    return EntityKey(
        join_keys=join_keys,
        entity_values=[Value(**{_FIELDS[kind]: value}) for value, kind in zip(values, kinds, strict=True)],
    )


def _random_value(rnd: random.Random, kind: KeyKind) -> Any:
    if kind == "int64":
        return rnd.choice([*_INT64, rnd.randrange(-(2**63), 2**63)])
    if kind == "int32":
        return rnd.choice([*_INT32, rnd.randrange(-(2**31), 2**31)])
    return rnd.choice([*_STRINGS, "".join(rnd.choice("aZé日🙂_9") for _ in range(rnd.randrange(20)))])


@pytest.mark.parametrize(("kind", "values"), [("int64", _INT64), ("int32", _INT32), ("string", _STRINGS)])
def test_single_keys_match_feast(kind: KeyKind, values: list[Any]) -> None:
    """One join key of each type: `serialize_entity_key(v3)` and `_redis_key` byte for byte, extremes,
    negatives and unicode included; Feast reads our bytes back as the same key."""
    for join_key in ("driver_id", "k", "日本"):
        for value in values:
            proto = _feast_key([join_key], [value], [kind])
            ours = serialize_entity_key([join_key], [value], [kind])
            assert ours == feast_serialize(proto, entity_key_serialization_version=3)
            assert deserialize_entity_key(ours, entity_key_serialization_version=3) == proto
            assert redis_key([join_key], [value], [kind], project="p-ü") == _redis_key(
                "p-ü", proto, entity_key_serialization_version=3
            )


@pytest.mark.parametrize("size", [2, 3])
def test_composite_keys_match_feast(size: int) -> None:
    """Composite keys of 2 and 3 join keys, mixed types, given in any order: Feast sorts the pairs by join
    key name, and so do we (the Redis key does not depend on the order the caller names the keys)."""
    rnd = random.Random(size)
    names = ["user_id", "merchant", "Zone", "driver_id", "é_key", "a"]
    for _ in range(400):
        join_keys = rnd.sample(names, size)
        kinds: list[KeyKind] = [rnd.choice(["int64", "int32", "string"]) for _ in join_keys]
        values = [_random_value(rnd, kind) for kind in kinds]
        proto = _feast_key(join_keys, values, kinds)
        expected = _redis_key("proj", proto, entity_key_serialization_version=3)
        assert redis_key(join_keys, values, kinds, project="proj") == expected
        order = list(reversed(range(size)))
        assert (
            redis_key(
                [join_keys[i] for i in order],
                [values[i] for i in order],
                [kinds[i] for i in order],
                project="proj",
            )
            == expected
        )


def test_vectorised_keys_equal_the_generic_function() -> None:
    """`encode_redis_keys` over columns (numpy or lists) equals `redis_key` per entity, for single keys of
    each type and for composites; the int64 fast path `encode_entity_keys` equals it too."""
    rng = np.random.default_rng(4)
    ids = np.concatenate([np.array(_INT64, dtype=np.int64), rng.integers(-(2**63), 2**63 - 1, 500)])
    generic = [redis_key(["driver_id"], [int(i)], ["int64"], project="t") for i in ids.tolist()]
    assert encode_entity_keys(join_key="driver_id", entity_ids=ids, project="t") == generic
    assert encode_redis_keys(["driver_id"], [ids], ["int64"], project="t") == generic
    assert encode_redis_keys(["driver_id"], [ids.tolist()], ["int64"], project="t") == generic
    small = np.array(_INT32, dtype=np.int32)
    assert encode_redis_keys(["k"], [small], ["int32"], project="t") == [
        redis_key(["k"], [int(v)], ["int32"], project="t") for v in small.tolist()
    ]
    users = [f"user-{n}-é" for n in range(300)]
    merchants = rng.integers(-(2**31), 2**31 - 1, 300, dtype=np.int64)
    zones = rng.integers(0, 2**40, 300)
    got = encode_redis_keys(
        ["user_id", "merchant", "zone"], [users, merchants, zones], ["string", "int32", "int64"], project="t"
    )
    assert got == [
        redis_key(
            ["user_id", "merchant", "zone"], [u, int(m), int(z)], ["string", "int32", "int64"], project="t"
        )
        for u, m, z in zip(users, merchants.tolist(), zones.tolist(), strict=True)
    ]
    assert (
        encode_redis_keys(["a", "b"], [[], np.array([], dtype=np.int64)], ["string", "int64"], project="t")
        == []
    )


def test_bad_keys_name_the_join_key() -> None:
    """Out-of-range ints, wrong types, bools, mismatched lengths and repeated join keys raise ValueError; a
    value error names the join key at fault."""
    cases: list[tuple[list[Any], list[KeyKind], str]] = [
        ([2**63], ["int64"], r"'driver_id'.*int64 range"),
        ([-(2**63) - 1], ["int64"], r"'driver_id'.*int64 range"),
        ([2**31], ["int32"], r"'driver_id'.*int32 range"),
        ([-(2**31) - 1], ["int32"], r"'driver_id'.*int32 range"),
        (["42"], ["int64"], r"'driver_id'.*expected an integer"),
        ([True], ["int32"], r"'driver_id'.*expected an integer"),
        ([1.0], ["int64"], r"'driver_id'.*expected an integer"),
        ([42], ["string"], r"'driver_id'.*expected a string"),
    ]
    for values, kinds, message in cases:
        with pytest.raises(ValueError, match=message):
            serialize_entity_key(["driver_id"], values, kinds)
    with pytest.raises(ValueError, match=r"'driver_id'.*int32 range"):
        encode_redis_keys(["driver_id"], [np.array([2**31])], ["int32"], project="p")
    with pytest.raises(ValueError, match=r"'driver_id'.*int64 range"):
        encode_redis_keys(["driver_id"], [np.array([2**63], dtype=np.uint64)], ["int64"], project="p")
    with pytest.raises(ValueError, match=r"'b'.*int32 range"):
        encode_redis_keys(["a", "b"], [["x"], [2**40]], ["string", "int32"], project="p")
    with pytest.raises(ValueError, match="same length"):
        serialize_entity_key(["a", "b"], [1], ["int64", "int64"])
    with pytest.raises(ValueError, match="repeat"):
        serialize_entity_key(["a", "a"], [1, 2], ["int64", "int64"])
    with pytest.raises(ValueError, match="one value per entity"):
        encode_redis_keys(["a", "b"], [[1, 2], [3]], ["int64", "int64"], project="p")


@pytest.mark.parametrize(("kind", "values"), [("int64", _INT64), ("int32", _INT32)])
def test_int_key_fast_paths_equal_feasts_redis_keys(kind: Any, values: list[int]) -> None:
    """The vectorised int64 and int32 paths the stores use give Feast's `_redis_key` for every id, and the
    read layout of an int32-keyed service asks for exactly those keys."""
    ids = np.array(values, dtype=np.int64)
    ours = encode_entity_keys(join_key="station_id", entity_ids=ids, project="p", kind=kind)
    theirs = [
        _redis_key("p", _feast_key(["station_id"], [v], [kind]), entity_key_serialization_version=3)
        for v in values
    ]
    assert ours == theirs
    view = ViewSpec(
        "s", "t", TandemKey.single("station_id", kind), "ts", None, 0, (FeatureSpec("x", "float64"),)
    )
    scores = ViewSpec(
        "m_predictions", "(q)", TandemKey.single("station_id", kind), "scored_at", None, 0,
        (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"),
         FeatureSpec("run_id", "string"), FeatureSpec("feature_snapshot_ts", "string")),
    )  # fmt: skip
    layout = ReadLayout(project="p", service=ServiceSpec("svc", (view,), ("s:x",)), predictions=scores)
    assert [layout.key(v) for v in values] == theirs


def test_an_int32_key_out_of_range_is_refused() -> None:
    """An id beyond int32 never wraps into another station's key."""
    with pytest.raises(ValueError, match="station_id"):
        encode_entity_keys(join_key="station_id", entity_ids=np.array([2**31]), project="p", kind="int32")
