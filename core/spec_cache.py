"""Feature specs without importing Feast: snapshots in `tandem.feature_specs`, checked against the registry.

Importing Feast costs seconds (typeguard instruments it at import), which a batch run or an API worker
should not pay just to learn table names and TTLs. The snapshot carries an md5 fingerprint of the
project's feature-view and feature-service protos in Feast's SQL registry; reading it costs one query.
A different fingerprint (someone ran `feast apply`) means: ask Feast, and store the fresh snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from core.feast_repo import open_feature_store
from core.feature_views import FeatureSpec, ServiceSpec, ViewSpec, load_service_spec, load_view_spec
from core.runtime import Stores
from core.settings import Settings
from core.stores import FEAST_REGISTRY_SCHEMA

__all__ = ["SpecSource", "registry_fingerprint", "resolve_specs", "service_specs"]

SPEC_FORMAT = "2"  # bump when ServiceSpec/ViewSpec change shape: old snapshots then no longer match

SpecSource = Callable[[], tuple[ServiceSpec, ViewSpec]]
"""Reads (service, stored-scores view) from Feast: the slow path."""

_FINGERPRINT = f"""
SELECT md5(coalesce(string_agg(part, ',' ORDER BY part), '')) FROM (
  SELECT 'v:' || feature_view_name || ':' || md5(feature_view_proto) AS part
    FROM {FEAST_REGISTRY_SCHEMA}.feature_views WHERE project_id = %(project)s
  UNION ALL
  SELECT 's:' || feature_service_name || ':' || md5(feature_service_proto)
    FROM {FEAST_REGISTRY_SCHEMA}.feature_services WHERE project_id = %(project)s
) AS parts
"""  # noqa: S608 - the schema name is a constant


def registry_fingerprint(conn: psycopg.Connection[Any], *, project: str) -> str | None:
    """md5 over the project's registered views and services, or None when Feast's registry is absent."""
    try:
        with conn.transaction():
            row = conn.execute(_FINGERPRINT, {"project": project}).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return f"{row[0]}:{SPEC_FORMAT}" if row else None


def _view_from(data: dict[str, Any]) -> ViewSpec:
    features = tuple(FeatureSpec(name=f["name"], kind=f["kind"]) for f in data["features"])
    return ViewSpec(**{**data, "features": features})


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
) -> tuple[ServiceSpec, ViewSpec]:
    """The feature service and stored-scores view: from the snapshot if the registry is unchanged.

    `conn` must be in autocommit mode: a fresh snapshot is written in its own transaction.
    """
    fingerprint = registry_fingerprint(conn, project=project)
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


def service_specs(settings: Settings, stores: Stores) -> tuple[ServiceSpec, ViewSpec]:
    """The configured feature service and stored-scores view, imported from Feast only when they changed."""

    def from_feast() -> tuple[ServiceSpec, ViewSpec]:
        store = open_feature_store(settings, stores)
        return load_service_spec(store, settings.feature_service), load_view_spec(
            store, settings.predictions_view
        )

    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        return resolve_specs(
            conn,
            project=settings.feast_project,
            service_name=settings.feature_service,
            predictions_view=settings.predictions_view,
            from_feast=from_feast,
        )
