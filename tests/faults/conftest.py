"""Fault fixtures: a redis-server of the suite's own (durable, so a SIGKILL loses nothing), a private database
on the test PostgreSQL, and the served world (seeded, materialized, a promoted model, a published run) on them.

The spare Redis runs with `appendfsync always`: a restarted server holds every write it acknowledged, so a
test that kills it measures Tandem, not Redis's durability settings.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import Engine

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.settings import Settings
from core.stack.redis_server import redis_bin_dir
from core.stores.database import create_db_engine, upgrade_schema
from core.stores.resolve import Stores
from tandem.demo.names import demo_settings
from tests.integration.service_world import World, build_world
from tests.servers import free_port, private_database, server_endpoints


class SpareRedis:
    """A redis-server on a free loopback port with its data in `directory`: killed, stalled and started by pid."""

    def __init__(self, directory: Path) -> None:
        binary = redis_bin_dir() / "redis-server"
        self.binary = str(binary) if binary.exists() else shutil.which("redis-server") or "redis-server"
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> RedisEndpoint:
        """Where it listens."""
        return RedisEndpoint("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        """The running server's pid."""
        assert self.process is not None, "the spare Redis is not running"
        return self.process.pid

    def start(self) -> float:
        """Start it (loading its append-only file) and wait until it answers PING; returns that moment."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        client.close()
        return time.monotonic()

    def kill(self) -> None:
        """SIGKILL to its pid; wait until it is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        os.kill(self.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def spare_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpareRedis]:
    """The fault suite's own Redis; restarted by `running_redis` whenever a test left it down."""
    server = SpareRedis(tmp_path_factory.mktemp("spare-redis"))
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.kill()


@pytest.fixture
def running_redis(spare_redis: SpareRedis) -> SpareRedis:
    """The spare Redis, running (and not stalled) at the start of the test."""
    if spare_redis.process is None:
        spare_redis.start()
    else:
        spare_redis.resume()
    return spare_redis


@pytest.fixture(scope="session")
def pg_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresEndpoint]:
    """The test PostgreSQL server (TANDEM_TEST_POSTGRES_URL, a container or the embedded one)."""
    with server_endpoints(tmp_path_factory.mktemp("stack")) as (postgres, _):
        yield postgres


@pytest.fixture(scope="session")
def fault_stores(pg_admin: PostgresEndpoint, spare_redis: SpareRedis) -> Iterator[Stores]:
    """A private database, schema at head, and the spare Redis."""
    with private_database(pg_admin) as database:
        engine = create_db_engine(database)
        upgrade_schema(engine)
        engine.dispose()
        yield Stores(postgres=database, redis=spare_redis.endpoint, local=False)


@pytest.fixture(scope="session")
def fault_engine(fault_stores: Stores) -> Iterator[Engine]:
    """An engine on the private database."""
    engine = create_db_engine(fault_stores.postgres)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def fault_world(
    fault_stores: Stores, fault_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> World:
    """Seeded, materialized on the spare Redis, a promoted model and a published batch run."""
    settings = demo_settings(
        Settings(
            postgres_url=SecretStr(fault_stores.postgres.url()),
            redis_url=SecretStr(fault_stores.redis.url()),
            feast_project=f"f{uuid.uuid4().hex[:10]}",
            home=Path(tmp_path_factory.mktemp("home")),
        )
    )
    return build_world(settings, fault_stores, fault_engine, customers=120)
