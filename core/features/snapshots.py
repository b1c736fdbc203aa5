"""Feature specs without importing Feast: snapshots in `tandem.feature_specs`, checked against the registry.

Importing Feast costs seconds (typeguard instruments it at import), which a batch run or an API worker
should not pay just to learn table names and TTLs. The snapshot carries an md5 fingerprint of the
specs of the project's feature views and services in Feast's SQL registry (their `meta`, which
materialization rewrites, is left out; the registry's schema comes from its URL, `core.features.registry`);
reading it costs one query.
A different fingerprint (someone ran `feast apply`) means: ask Feast, and store the fresh snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core.features.feast_repo import open_feature_store
from core.features.keys import EntityKey
from core.features.registry import registry_schema
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec, load_service_spec, load_view_spec
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = ["SpecSource", "registry_fingerprint", "resolve_specs", "service_specs", "spec_part"]

SPEC_FORMAT = "5"  # bump when ServiceSpec/ViewSpec change shape: old snapshots then no longer match

SpecSource = Callable[[], tuple[ServiceSpec, ViewSpec]]
"""Reads (service, stored-scores view) from Feast: the slow path."""

_REGISTRY_ROWS = """
SELECT 'v:' || feature_view_name, feature_view_proto
  FROM {schema}.feature_views WHERE project_id = %(project)s
UNION ALL
SELECT 's:' || feature_service_name, feature_service_proto
  FROM {schema}.feature_services WHERE project_id = %(project)s
"""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Top-level protobuf fields as (number, raw encoding, payload of a length-delimited field)."""
    pos, fields = 0, []
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            payload = data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in a registry object")
        fields.append((number, data[start:pos], payload))
    return fields


def spec_part(proto: bytes) -> bytes:
    """What a FeatureView / FeatureService message defines: field 1 (`spec`) without the spec's own field 2
    (`project`, which Feast drops when it rewrites a view after materializing) and without `meta`
    (timestamps, materialization intervals, rewritten on every materialization)."""
    spec = b"".join(payload for number, _, payload in _fields(proto) if number == 1)
    return b"".join(raw for number, raw, _ in _fields(spec) if number != 2)


def registry_fingerprint(conn: psycopg.Connection[Any], *, project: str, schema: str) -> str | None:
    """md5 over the specs of the project's views and services in Feast's registry tables in `schema`, or None
    when they are absent."""
    query = sql.SQL(_REGISTRY_ROWS).format(schema=sql.Identifier(schema))
    try:
        with conn.transaction():
            rows = conn.execute(query, {"project": project}).fetchall()
    except psycopg.errors.UndefinedTable:
        return None
    digest = hashlib.md5(SPEC_FORMAT.encode(), usedforsecurity=False)
    for name, proto in sorted(rows, key=lambda row: str(row[0])):
        digest.update(
            str(name).encode() + b"\0" + hashlib.md5(spec_part(bytes(proto)), usedforsecurity=False).digest()
        )
    return digest.hexdigest()


def _view_from(data: dict[str, Any]) -> ViewSpec:
    features = tuple(FeatureSpec(name=f["name"], kind=f["kind"]) for f in data["features"])
    key = EntityKey(tuple(data["key"]["join_keys"]), tuple(data["key"]["kinds"]))
    return ViewSpec(**{**data, "key": key, "features": features})


def _service_from(data: dict[str, Any]) -> ServiceSpec:
    return ServiceSpec(
        name=data["name"], views=tuple(_view_from(v) for v in data["views"]), refs=tuple(data["refs"])
    )


def _cached(conn: psycopg.Connection[Any], project: str, kind: str, name: str, fingerprint: str) -> Any:
    row = conn.execute(
        "SELECT spec FROM tandem.feature_specs WHERE project = %s AND kind = %s AND name = %s AND fingerprint = %s",
        (project, kind, name, fingerprint),
    ).fetchone()
    return row[0] if row else None


def _save(
    conn: psycopg.Connection[Any], project: str, kind: str, name: str, fingerprint: str, spec: Any
) -> None:
    conn.execute(
        "INSERT INTO tandem.feature_specs (project, kind, name, fingerprint, spec) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (project, kind, name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "spec = EXCLUDED.spec, cached_at = now()",
        (project, kind, name, fingerprint, Jsonb(json.loads(json.dumps(spec)))),
    )


def resolve_specs(
    conn: psycopg.Connection[Any],
    *,
    project: str,
    service_name: str,
    predictions_view: str,
    from_feast: SpecSource,
    schema: str,
) -> tuple[ServiceSpec, ViewSpec]:
    """The feature service and stored-scores view: from the snapshot if the registry (its tables in `schema`)
    is unchanged.

    `conn` must be in autocommit mode: a fresh snapshot is written in its own transaction.
    """
    fingerprint = registry_fingerprint(conn, project=project, schema=schema)
    if fingerprint is not None:
        service = _cached(conn, project, "service", service_name, fingerprint)
        view = _cached(conn, project, "view", predictions_view, fingerprint)
        if service is not None and view is not None:
            return _service_from(service), _view_from(view)
    service_spec, view_spec = from_feast()
    if fingerprint is not None:
        with conn.transaction():
            _save(conn, project, "service", service_name, fingerprint, asdict(service_spec))
            _save(conn, project, "view", predictions_view, fingerprint, asdict(view_spec))
    return service_spec, view_spec


def service_specs(
    settings: Settings, stores: Stores, *, feature_service: str, predictions_view: str
) -> tuple[ServiceSpec, ViewSpec]:
    """A feature service and a stored-scores view, imported from Feast only when the registry changed."""

    def from_feast() -> tuple[ServiceSpec, ViewSpec]:
        store = open_feature_store(settings, stores)
        return load_service_spec(store, feature_service), load_view_spec(store, predictions_view)

    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        return resolve_specs(
            conn,
            project=settings.feast_project,
            service_name=feature_service,
            predictions_view=predictions_view,
            from_feast=from_feast,
            schema=registry_schema(settings, stores),
        )
