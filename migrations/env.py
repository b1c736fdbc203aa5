"""Alembic environment: Tandem's schema only, version table inside it.

`tandem apply` hands over an open connection in `config.attributes["connection"]`; plain `alembic` reads
TANDEM_POSTGRES_URL.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, text

from core.records.tables import SCHEMA, Base

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only schema `tandem`: Feast's registry and the feature source tables are not ours."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def _run(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run with the connection we were given, or one made from TANDEM_POSTGRES_URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("TANDEM_POSTGRES_URL")
    if not url:
        raise SystemExit('alembic: set TANDEM_POSTGRES_URL (eval "$(tandem env)") or use `tandem apply`')
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("alembic: offline (--sql) mode is not supported; run against a database")
run_migrations_online()
