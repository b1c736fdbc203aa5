"""Where integration tests get real PostgreSQL and Redis servers, and a private database/prefix on them.

Order: TANDEM_TEST_POSTGRES_URL / TANDEM_TEST_REDIS_URL; else testcontainers when a Docker engine answers;
else the embedded stack (the same code as `tandem up`) in a temporary home on free ports.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Engine

from core.endpoints import PostgresEndpoint, RedisEndpoint, parse_postgres_url, parse_redis_url
from core.online.store import OnlineStore
from core.settings import Settings
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.names import demo_settings
from tests.conftest import TEST_SIGNING_KEY

__all__ = [
    "OwnPostgres",
    "free_port",
    "migrated_engine",
    "own_postgres",
    "private_database",
    "purge_feast_project",
    "server_endpoints",
    "store_env",
    "suite_settings",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False
    return True


@contextmanager
def embedded_servers(home: Path) -> Iterator[tuple[PostgresEndpoint, RedisEndpoint]]:
    """Start the embedded stack under `home` on free ports; stop it afterwards."""
    from core.stack.local import start_local_stack, stop_local_stack

    settings = Settings(home=home, local_postgres_port=free_port(), local_redis_port=free_port())
    stack = start_local_stack(settings)
    try:
        yield stack.postgres, stack.redis
    finally:
        stop_local_stack(settings)


@contextmanager
def server_endpoints(home: Path) -> Iterator[tuple[PostgresEndpoint, RedisEndpoint]]:
    """Admin endpoints of a real PostgreSQL and Redis for this test session."""
    pg_url, redis_url = os.environ.get("TANDEM_TEST_POSTGRES_URL"), os.environ.get("TANDEM_TEST_REDIS_URL")
    if pg_url and redis_url:
        yield parse_postgres_url(pg_url), parse_redis_url(redis_url)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

        with ExitStack() as stack:
            pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            rd = stack.enter_context(RedisContainer("redis:7-alpine"))
            yield (
                parse_postgres_url(pg.get_connection_url()),
                RedisEndpoint(rd.get_container_host_ip(), int(rd.get_exposed_port(6379))),
            )
        return
    with embedded_servers(home) as endpoints:
        yield endpoints


@contextmanager
def private_database(admin: PostgresEndpoint) -> Iterator[PostgresEndpoint]:
    """A new database on the server, unique to this session, dropped afterwards."""
    name = f"tandem_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.with_database(name)
    finally:
        with psycopg.connect(admin.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def purge_feast_project(endpoint: RedisEndpoint, project: str) -> int:
    """Delete the Redis keys of one Feast project; returns how many."""
    online = OnlineStore.connect(endpoint, project=project)
    try:
        return online.purge()
    finally:
        online.close()


def store_env(settings: Settings) -> dict[str, str]:
    """The environment a `tandem` subprocess needs to use the same stores and Feast project as `settings`."""
    if settings.postgres_url is None or settings.redis_url is None:
        raise ValueError("settings without store URLs")
    return {
        "TANDEM_POSTGRES_URL": settings.postgres_url.get_secret_value(),
        "TANDEM_REDIS_URL": settings.redis_url.get_secret_value(),
        "TANDEM_FEAST_PROJECT": settings.feast_project,
    }


class OwnPostgres:
    """An embedded PostgreSQL of one test module on a spare loopback port: stopped, killed, started by pid.

    For the tests that break PostgreSQL or race on its rows (leases, a server down at start-up): they never
    touch the session's server. Starting one costs ~2 s (initdb once per home, then ~0.5 s per start).
    """

    def __init__(self, home: Path) -> None:
        from core.stack.postgres_server import POSTGRES_DATABASE, POSTGRES_USER

        self.home = home
        self.port = free_port()
        self.endpoint = PostgresEndpoint("127.0.0.1", self.port, POSTGRES_DATABASE, POSTGRES_USER)
        self.pid: int | None = None
        self.start()

    def start(self) -> None:
        """Start it (again) on its port and wait until it answers."""
        from core.stack.postgres_server import start_postgres

        self.pid = start_postgres(self.home, self.port, timeout=60).pid

    def stop(self) -> None:
        """A fast shutdown: clients' connections are closed, new ones refused."""
        from core.stack.postgres_server import stop_postgres

        stop_postgres(self.home)
        self.pid = None


@contextmanager
def own_postgres(home: Path) -> Iterator[OwnPostgres]:
    """An OwnPostgres under `home`, stopped afterwards whatever the test left."""
    server = OwnPostgres(home)
    try:
        yield server
    finally:
        server.stop()


def suite_settings(stores: Stores, *, feast_project: str, home: Path) -> Settings:
    """Settings on `stores` with the demo's names as defaults and the suite's model signing key."""
    return demo_settings(  # the demo's model, feature service and labels as `tandem train`'s defaults
        Settings(
            postgres_url=SecretStr(stores.postgres.url()),
            redis_url=SecretStr(stores.redis.url()),
            feast_project=feast_project,
            home=home,
            model_signing_key=SecretStr(TEST_SIGNING_KEY),
        )
    )


@contextmanager
def migrated_engine(stores: Stores) -> Iterator[Engine]:
    """An engine on `stores`' database, schema `tandem` at head, disposed afterwards."""
    engine = create_db_engine(stores.postgres)
    upgrade_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()
