"""The scheduler's lease tests run on a PostgreSQL server of their own: these fixtures shadow the session's
`stores`, `settings` and `engine` with a database per module on an embedded PostgreSQL started for them on a
spare loopback port, so a lease, a frozen leader or a dead process's rows never meet another module's (nor the session's
server: a SIGSTOPped leader holds connections there)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.settings import Settings
from core.stores.resolve import Stores
from tests.servers import OwnPostgres, migrated_engine, own_postgres, private_database, suite_settings


@pytest.fixture(scope="package")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    """The lease tests' own embedded PostgreSQL (one server: starting one costs ~4 s)."""
    with own_postgres(tmp_path_factory.mktemp("own-postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def stores(own_server: OwnPostgres, servers: tuple[PostgresEndpoint, RedisEndpoint]) -> Iterator[Stores]:
    """A database of the module's own on that server, and the session's Redis."""
    with private_database(own_server.endpoint) as database:
        yield Stores(postgres=database, redis=servers[1], local=False)


@pytest.fixture(scope="module")
def settings(stores: Stores, feast_project: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the module's PostgreSQL (and the session's Redis and Feast project)."""
    return suite_settings(stores, feast_project=feast_project, home=Path(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def engine(stores: Stores) -> Iterator[Engine]:
    """An engine on the module's PostgreSQL, schema `tandem` at head."""
    with migrated_engine(stores) as engine:
        yield engine
