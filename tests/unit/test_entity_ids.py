"""Entity ids of every key shape (core/features/keys.py): parsing client input, the canonical composite form,
and Feast's Redis keys for them, compared with Feast's own serializer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as FeastKey
from feast.protos.feast.types.Value_pb2 import Value

from core.batch.copy import key_texts
from core.features.keys import EntityKey
from core.online.keys import encode_keys, entity_id_of_redis_key, parse_entity_key
from core.online.wire import command

COMPOSITE = EntityKey.of([("store_code", "string"), ("sku", "int64")])
STRING = EntityKey.single("user_id", "string")
INT32 = EntityKey.single("station_id", "int32")


def _feast(key: EntityKey, parts: tuple[Any, ...]) -> FeastKey:
    values = [
        Value(string_val=v)
        if kind == "string"
        else Value(int32_val=v)
        if kind == "int32"
        else Value(int64_val=v)
        for v, kind in zip(parts, key.kinds, strict=True)
    ]
    return FeastKey(join_keys=list(key.join_keys), entity_values=values)


def test_join_keys_are_kept_in_feasts_order() -> None:
    assert COMPOSITE.join_keys == ("sku", "store_code")
    assert COMPOSITE.kinds == ("int64", "string")
    assert COMPOSITE.composite
    assert COMPOSITE.int_kind is None
    assert COMPOSITE.label == "(sku, store_code)"
    assert INT32.int_kind == "int32"
    assert STRING.int_kind is None
    with pytest.raises(ValueError, match="sorted"):
        EntityKey(("b", "a"), ("int64", "int64"))


def test_parse_gives_one_canonical_id_whatever_the_object_order() -> None:
    first = COMPOSITE.parse({"store_code": "Zürich-1", "sku": 42}, "entities[0]")
    second = COMPOSITE.parse({"sku": 42, "store_code": "Zürich-1"}, "entities[0]")
    assert first == second == '[42,"Zürich-1"]'
    assert COMPOSITE.parts(first) == (42, "Zürich-1")
    assert COMPOSITE.to_object(first) == {"sku": 42, "store_code": "Zürich-1"}
    assert COMPOSITE.from_text(COMPOSITE.text(first)) == first
    assert STRING.parse({"user_id": "u-1"}, "e") == "u-1"
    assert INT32.parse({"station_id": -5}, "e") == -5
    assert INT32.from_text(INT32.text(-5)) == -5


@pytest.mark.parametrize(
    ("key", "entity", "message"),
    [
        (COMPOSITE, {"sku": 42}, r"entities\[3\]: expected exactly the key\(s\) 'sku', 'store_code'"),
        (COMPOSITE, {"sku": 42, "store_code": "a", "x": 1}, "expected exactly"),
        (COMPOSITE, {"sku": "42", "store_code": "a"}, r"entities\[3\]\.sku: expected an integer, got str"),
        (COMPOSITE, {"sku": 42.0, "store_code": "a"}, "expected an integer, got float"),
        (COMPOSITE, {"sku": True, "store_code": "a"}, "expected an integer, got bool"),
        (COMPOSITE, {"sku": 2**63, "store_code": "a"}, "out of int64 range"),
        (COMPOSITE, {"sku": 1, "store_code": 7}, r"store_code: expected a string, got int"),
        (COMPOSITE, {"sku": 1, "store_code": "a\x00b"}, "NUL"),
        (STRING, {"user_id": "\ud800"}, "lone surrogate"),
        (STRING, {"user_id": None}, "expected a string, got NoneType"),
        (INT32, {"station_id": 2**31}, "out of int32 range"),
    ],
)
def test_parse_names_the_field_at_fault(key: EntityKey, entity: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        key.parse(entity, "entities[3]")


def test_query_text_is_strict_for_int_keys() -> None:
    assert COMPOSITE.parse_text("sku", "-42") == -42
    assert COMPOSITE.parse_text("store_code", " S 1 ") == " S 1 "
    for bad in ("+4", "4_2", " 4", "٤٢", "", "9" * 21):
        with pytest.raises(ValueError, match="sku: must be an integer"):
            COMPOSITE.parse_text("sku", bad)
    with pytest.raises(ValueError, match="out of int32"):
        INT32.parse_text("station_id", str(2**31))


@pytest.mark.parametrize("key", [COMPOSITE, STRING, INT32, EntityKey.single("driver_id")])
def test_redis_keys_equal_feasts(key: EntityKey) -> None:
    rng = np.random.default_rng(3)
    samples: list[tuple[Any, ...]] = []
    for n in range(50):
        parts: list[Any] = []
        for kind in key.kinds:
            if kind == "string":
                parts.append([f"S-{n:03d}", "Zürich-1", "", "日本-" + str(n)][n % 4])
            elif kind == "int32":
                parts.append(int(rng.integers(-(2**31), 2**31 - 1)))
            else:
                parts.append(int(rng.integers(-(2**63), 2**63 - 1)))
        samples.append(tuple(parts))
    ids = key.array([key.compose(parts) for parts in samples])
    ours = encode_keys(key, ids, project="proj-ü")
    theirs = [
        _redis_key("proj-ü", _feast(key, parts), entity_key_serialization_version=3) for parts in samples
    ]
    assert ours == theirs
    assert ours[0] == serialize_entity_key(_feast(key, samples[0]), 3) + "proj-ü".encode()


def test_key_texts_are_the_ids_text() -> None:
    ints = np.array([0, -(2**63), 2**63 - 1, 42], dtype=np.int64)
    assert key_texts(ints).tolist() == [str(i).encode() for i in ints.tolist()]
    strings = COMPOSITE.array(['[1,"Zürich-1"]', '[2,"a"]'])
    assert key_texts(strings).tolist() == ['[1,"Zürich-1"]'.encode(), b'[2,"a"]']


def test_read_request_packs_one_hmget_per_entity_for_any_key() -> None:
    from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
    from core.online.encoding import feature_field, timestamp_field
    from core.online.wire import ReadLayout

    features = (FeatureSpec("stock", "int32"),)
    view = ViewSpec("shelf", "t", COMPOSITE, "ts", None, 0, features)
    scores = ViewSpec(
        "m_predictions", "(q)", COMPOSITE, "scored_at", None, 0,
        (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"),
         FeatureSpec("run_id", "string"), FeatureSpec("feature_snapshot_ts", "string")),
    )  # fmt: skip
    layout = ReadLayout(
        project="p", service=ServiceSpec("svc", (view,), ("shelf:stock",)), predictions=scores
    )
    ids = ['[1,"a"]', '[2,"Zürich-1"]']
    keys = encode_keys(COMPOSITE, ids, project="p")
    fields = layout.fields()
    assert fields[0] == feature_field("shelf", "stock")
    assert timestamp_field("shelf") in fields
    assert layout.request(ids) == b"".join(command(b"HMGET", key, *fields) for key in keys)
    assert layout.key(ids[1]) == keys[1]


@pytest.mark.parametrize("key", [COMPOSITE, STRING, INT32, EntityKey.single("driver_id")])
def test_redis_keys_parse_back_to_their_ids(key: EntityKey) -> None:
    parts_of: dict[str, list[Any]] = {
        "string": ["Zürich-1", "", "x"],
        "int32": [-(2**31), 0, 7],
        "int64": [2**63 - 1, -1, 5],
    }
    ids = [key.compose([parts_of[kind][n] for kind in key.kinds]) for n in range(3)]
    for entity_id, redis_key in zip(ids, encode_keys(key, key.array(ids), project="proj"), strict=True):
        assert entity_id_of_redis_key(key, redis_key, project="proj") == entity_id
        assert entity_id_of_redis_key(key, redis_key, project="other") is None
        assert parse_entity_key(redis_key[: -len(b"proj")])[0] == key.join_keys
    other = EntityKey.single("driver_id", "int32")
    int32_key = encode_keys(other, np.array([5]), project="proj")[0]
    assert entity_id_of_redis_key(EntityKey.single("driver_id"), int32_key, project="proj") is None
    assert entity_id_of_redis_key(key, b"\x01garbageproj", project="proj") is None
