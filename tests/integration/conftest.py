"""Integration fixtures: real PostgreSQL and Redis, a private database and Feast project per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.settings import Settings
from core.stores.resolve import Stores
from tests.servers import (
    migrated_engine,
    private_database,
    purge_feast_project,
    server_endpoints,
    suite_settings,
)


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
    return suite_settings(stores, feast_project=feast_project, home=Path(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def engine(stores: Stores) -> Iterator[Engine]:
    """An engine on the session's database, schema `tandem` at head."""
    with migrated_engine(stores) as engine:
        yield engine
