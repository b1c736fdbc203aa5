"""Alembic owns schema `tandem`: upgrades and downgrades cleanly and matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from core.endpoints import FEAST_REGISTRY_SCHEMA, PostgresEndpoint
from core.records.tables import SCHEMA, Base
from core.stores.database import (
    create_db_engine,
    current_revision,
    downgrade_schema,
    head_revision,
    upgrade_schema,
)
from tests.servers import private_database

TABLES = {
    "model_versions",
    "prediction_runs",
    "batch_predictions",
    "job_runs",
    "skew_reports",
    "skew_findings",
    "stream_seen",
}


def _include(name: str | None, type_: str, _parents: object) -> bool:
    """Compare schema `tandem` only, without Alembic's own version table."""
    if type_ == "schema":
        return name == SCHEMA
    return not (type_ == "table" and name == "alembic_version")


def test_upgrade_downgrade_upgrade_and_no_autogenerate_diff(
    servers: tuple[PostgresEndpoint, object],
) -> None:
    """upgrade -> downgrade base -> upgrade works, and autogenerate finds nothing the models don't say."""
    admin, _ = servers
    with private_database(admin) as database:
        engine = create_db_engine(database)
        try:
            upgrade_schema(engine)
            assert set(inspect(engine).get_table_names(schema=SCHEMA)) >= TABLES
            downgrade_schema(engine, revision="base")
            assert set(inspect(engine).get_table_names(schema=SCHEMA)) == {"alembic_version"}
            assert current_revision(engine) is None or current_revision(engine) == ""
            upgrade_schema(engine)
            assert current_revision(engine) == head_revision()
            with engine.connect() as conn:
                context = MigrationContext.configure(
                    conn,
                    opts={
                        "include_schemas": True,
                        "include_name": _include,
                        "compare_type": True,
                        "compare_server_default": True,
                    },
                )
                assert compare_metadata(context, Base.metadata) == []
        finally:
            engine.dispose()


def test_migrations_never_touch_other_schemas(
    servers: tuple[PostgresEndpoint, object],
) -> None:
    """A table in Feast's registry schema survives a full downgrade: Alembic only manages `tandem`."""
    admin, _ = servers
    with private_database(admin) as database:
        engine = create_db_engine(database)
        try:
            upgrade_schema(engine)
            with engine.begin() as conn:
                conn.execute(text(f"CREATE TABLE {FEAST_REGISTRY_SCHEMA}.projects (id text)"))
            downgrade_schema(engine, revision="base")
            upgrade_schema(engine)
            assert "projects" in inspect(engine).get_table_names(schema=FEAST_REGISTRY_SCHEMA)
        finally:
            engine.dispose()
