"""Integration fixtures: real PostgreSQL and Redis, a private database and Feast project per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.settings import Settings
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.names import demo_settings
from tests.conftest import TEST_SIGNING_KEY
from tests.servers import private_database, purge_feast_project, server_endpoints


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresEndpoint, RedisEndpoint]]:
    """Admin endpoints of the PostgreSQL and Redis servers this session runs against."""
    with server_endpoints(tmp_path_factory.mktemp("stack")) as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def feast_project() -> str:
    """A Feast project name unique to this session: its Redis keys never collide with another run's."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def stores(servers: tuple[PostgresEndpoint, RedisEndpoint], feast_project: str) -> Iterator[Stores]:
    """A private database on the PostgreSQL server and the Redis server; both cleaned afterwards."""
    admin, redis_endpoint = servers
    with private_database(admin) as database:
        yield Stores(postgres=database, redis=redis_endpoint, local=False)
    purge_feast_project(redis_endpoint, feast_project)


@pytest.fixture(scope="session")
def settings(stores: Stores, feast_project: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at this session's stores."""
    return demo_settings(  # the demo's model, feature service and labels as `tandem train`'s defaults
        Settings(
            postgres_url=SecretStr(stores.postgres.url()),
            redis_url=SecretStr(stores.redis.url()),
            feast_project=feast_project,
            home=Path(tmp_path_factory.mktemp("home")),
            model_signing_key=SecretStr(TEST_SIGNING_KEY),
        )
    )


@pytest.fixture(scope="session")
def engine(stores: Stores) -> Iterator[Engine]:
    """An engine on the session's database, schema `tandem` at head."""
    engine = create_db_engine(stores.postgres)
    upgrade_schema(engine)
    yield engine
    engine.dispose()
