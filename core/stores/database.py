"""Engines, and bringing Tandem's schema to head with Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, inspect, text

from core.endpoints import FEAST_REGISTRY_SCHEMA, PostgresEndpoint
from core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "alembic_config",
    "create_db_engine",
    "current_revision",
    "disposing_engine",
    "downgrade_schema",
    "upgrade_schema",
]


@contextmanager
def disposing_engine(endpoint: PostgresEndpoint) -> Iterator[Engine]:
    """A one-connection engine for a command's lifetime, disposed afterwards."""
    engine = create_db_engine(endpoint, pool_size=1)
    try:
        yield engine
    finally:
        engine.dispose()


def create_db_engine(endpoint: PostgresEndpoint, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine on psycopg 3 that checks connections before use."""
    return create_engine(
        endpoint.sqlalchemy_url(),
        pool_pre_ping=True,
        pool_size=pool_size,
        connect_args={"connect_timeout": 5},
        hide_parameters=True,  # statement parameters (request data) never reach logs or error messages
    )


def alembic_config() -> Config:
    """Alembic's configuration from the project's alembic.ini."""
    from alembic.config import Config  # lazy import: the API never migrates, and alembic costs 0.1 s

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def upgrade_schema(engine: Engine, *, revision: str = "head") -> None:
    """Bring schema `tandem` to `revision`, and make sure Feast's registry schema exists."""
    from alembic import command  # lazy import: see alembic_config

    config = alembic_config()
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {FEAST_REGISTRY_SCHEMA}"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade_schema(engine: Engine, *, revision: str = "base") -> None:
    """Revert schema `tandem` to `revision` (tests and rollbacks)."""
    from alembic import command  # lazy import: see alembic_config

    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version", schema="tandem"):
            return None
        return conn.execute(text("SELECT version_num FROM tandem.alembic_version")).scalar_one_or_none()


def head_revision() -> str:
    """The newest revision in `migrations/` (what `upgrade_schema` brings a database to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("migrations/ holds no revision")
    return head
