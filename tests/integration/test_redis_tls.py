"""`rediss://` end to end: a real redis-server speaking only TLS with a password, and every path that talks to
Redis (the jobs' redis-py store, the API's asyncio pool, the store check, Feast's connection string) reaches
it with the CA from the URL; plain TCP and an unknown CA are refused.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStore

from core.endpoints import RedisEndpoint, parse_redis_url
from core.errors import StoreUnavailableError
from core.features.keys import EntityKey
from core.online.async_store import AsyncOnlineStore
from core.online.keys import encode_keys
from core.online.resp_pool import RespPool
from core.online.store import OnlineStore
from core.stores.resolve import check_redis
from tests.servers import free_port

PASSWORD = "tls-secret-42"  # noqa: S105 - a throw-away server of this module

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-server") is None,
    reason="needs openssl and redis-server (Debian packages openssl, redis-server)",
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path, name: str) -> None:
    """A CA `name`-ca.pem and, signed by it, a server certificate for 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-ca.key", "-out",
             f"{name}-ca.pem", "-days", "1", "-subj", f"/CN={name}-ca", cwd=folder)  # fmt: skip
    if name == "server":
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
        (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "server-ca.pem", "-CAkey", "server-ca.key",
                 "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.cnf", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisEndpoint, Path]]:
    """A redis-server on a free loopback port, TLS only, with a password; stopped by its pid afterwards."""
    folder = tmp_path_factory.mktemp("tls")
    _certificates(folder, "server")
    _certificates(folder, "other")
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "server-ca.pem",
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ca = folder / "server-ca.pem"
    endpoint = parse_redis_url(f"rediss://:{PASSWORD}@127.0.0.1:{port}/2?ssl_ca_certs={ca}")
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(endpoint.url(), socket_connect_timeout=0.5).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)
    try:
        yield endpoint, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_url_carries_tls_and_the_ca(tls_redis: tuple[RedisEndpoint, Path]) -> None:
    endpoint, folder = tls_redis
    assert endpoint.tls
    assert endpoint.ca_file == str(folder / "server-ca.pem")
    assert endpoint.masked().startswith("rediss://:***@127.0.0.1:")
    assert PASSWORD not in endpoint.masked()


def test_jobs_store_and_the_check_speak_tls(tls_redis: tuple[RedisEndpoint, Path]) -> None:
    """The redis-py paths (batch publish, checker, purge, `tandem` checks) connect, authenticate, work."""
    endpoint, _ = tls_redis
    check_redis(endpoint)
    store = OnlineStore.connect(endpoint, project="tlsproj")
    try:
        key = encode_keys(EntityKey.single("id"), [1], project="tlsproj")[0]
        store.transport.client.execute_command("HSET", key, b"_ts:v", b"")  # type: ignore[no-untyped-call]
        assert store.purge() == 1
    finally:
        store.close()


def test_the_api_pool_speaks_tls(tls_redis: tuple[RedisEndpoint, Path]) -> None:
    """The API's asyncio pool verifies the server against the CA and sends AUTH inside TLS."""
    endpoint, _ = tls_redis

    async def ping() -> bool:
        pool = RespPool(endpoint, timeout_s=2.0)
        try:
            return await AsyncOnlineStore(pool, project="tlsproj").ping()
        finally:
            await pool.close()

    assert asyncio.run(ping())


def test_feast_gets_tls_through_its_connection_string(tls_redis: tuple[RedisEndpoint, Path]) -> None:
    """Feast's own parser of our connection string gives a client that reaches the TLS server."""
    endpoint, _ = tls_redis
    nodes, params = RedisOnlineStore._parse_connection_string(endpoint.feast_connection_string())
    assert params["ssl"] is True
    client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)
    assert client.ping()


def test_plain_tcp_and_a_foreign_ca_are_refused(tls_redis: tuple[RedisEndpoint, Path]) -> None:
    """Without TLS the server does not answer; with another CA the client refuses the server."""
    endpoint, folder = tls_redis
    plain = RedisEndpoint(endpoint.host, endpoint.port, endpoint.db, password=PASSWORD)
    with pytest.raises(StoreUnavailableError):
        check_redis(plain, timeout_s=1.0)
    foreign = parse_redis_url(
        f"rediss://:{PASSWORD}@127.0.0.1:{endpoint.port}/2?ssl_ca_certs={folder / 'other-ca.pem'}"
    )
    with pytest.raises(StoreUnavailableError):
        check_redis(foreign, timeout_s=1.0)

    async def ping() -> bool:
        pool = RespPool(foreign, timeout_s=1.0)
        try:
            return await AsyncOnlineStore(pool, project="tlsproj").ping()
        finally:
            await pool.close()

    assert not asyncio.run(ping())
