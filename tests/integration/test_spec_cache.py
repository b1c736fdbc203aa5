"""Feature specs come from the snapshot while Feast's registry is unchanged, and from Feast when it changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import Engine

from core.endpoints import FEAST_REGISTRY_SCHEMA
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.snapshots import registry_fingerprint, resolve_specs
from core.features.specs import ServiceSpec, ViewSpec, load_service_spec, load_view_spec
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_PREDICTIONS_VIEW


def test_snapshot_is_used_until_the_registry_changes(
    settings: Settings, stores: Stores, engine: Engine
) -> None:
    """First read asks Feast; the second uses the snapshot; a changed registry proto makes it ask Feast again."""
    apply_feature_repo(settings, stores)
    store = open_feature_store(settings, stores)
    calls: list[int] = []

    def from_feast() -> tuple[ServiceSpec, ViewSpec]:
        calls.append(1)
        return load_service_spec(store, DEMO_FEATURE_SERVICE), load_view_spec(store, DEMO_PREDICTIONS_VIEW)

    def resolve(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[ServiceSpec, ViewSpec]:
        return resolve_specs(
            conn,
            project=settings.feast_project,
            service_name=DEMO_FEATURE_SERVICE,
            predictions_view=DEMO_PREDICTIONS_VIEW,
            from_feast=from_feast,
            schema=FEAST_REGISTRY_SCHEMA,
        )

    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        fresh = resolve(conn)
        again = resolve(conn)
    assert calls == [1]
    assert again == fresh
    assert again[0].refs[0] == "customer_profile:account_age_days"
    assert again[1].name == DEMO_PREDICTIONS_VIEW
    with psycopg.connect(stores.postgres.url()) as conn:  # one transaction, rolled back
        before = registry_fingerprint(conn, project=settings.feast_project, schema=FEAST_REGISTRY_SCHEMA)
        conn.execute(
            "UPDATE feast_registry.feature_views SET feature_view_proto = feature_view_proto || '\\x0a020a00'::bytea "
            "WHERE project_id = %s AND feature_view_name = 'customer_profile'",
            (settings.feast_project,),
        )
        assert (
            registry_fingerprint(conn, project=settings.feast_project, schema=FEAST_REGISTRY_SCHEMA) != before
        )
        resolve(conn)
        conn.rollback()
    assert calls == [1, 1]


def test_materialization_keeps_the_fingerprint(settings: Settings, stores: Stores, engine: Engine) -> None:
    """Materializing rewrites the views' meta in Feast's registry, not their spec: the snapshot stays valid."""
    apply_feature_repo(settings, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=50, days=2, seed=3, end=datetime.now(UTC) - timedelta(hours=1))
    store = open_feature_store(settings, stores)
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        before = registry_fingerprint(conn, project=settings.feast_project, schema=FEAST_REGISTRY_SCHEMA)
        store.materialize(
            start_date=datetime.now(UTC) - timedelta(days=1),
            end_date=datetime.now(UTC),
            feature_views=["customer_profile"],
        )
        assert (
            registry_fingerprint(conn, project=settings.feast_project, schema=FEAST_REGISTRY_SCHEMA) == before
        )
