"""Which stores Tandem talks to: the URLs in settings, or the embedded local stack; and are they up."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import redis

from core.endpoints import PostgresEndpoint, RedisEndpoint, parse_postgres_url, parse_redis_url
from core.errors import ConfigurationError, StackError, StoreUnavailableError, first_line
from core.settings import Settings

__all__ = ["Stores", "check_postgres", "check_redis", "resolve_stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """The PostgreSQL database and Redis db Tandem uses, and whether they are the embedded ones."""

    postgres: PostgresEndpoint
    redis: RedisEndpoint
    local: bool


def resolve_stores(settings: Settings) -> Stores:
    """The configured stores; the running local stack when no URL is set."""
    if settings.postgres_url is not None and settings.redis_url is not None:
        return Stores(
            postgres=parse_postgres_url(settings.postgres_url.get_secret_value()),
            redis=parse_redis_url(settings.redis_url.get_secret_value()),
            local=False,
        )
    if settings.postgres_url is not None or settings.redis_url is not None:
        missing = "TANDEM_REDIS_URL" if settings.redis_url is None else "TANDEM_POSTGRES_URL"
        raise ConfigurationError(f"{missing} is not set: set both store URLs, or neither for the local stack")
    from core.stack.local import local_stack_status

    stack = local_stack_status(settings)
    if stack is None:
        raise StackError(
            f"the local stack under {settings.home} is not running: run `tandem up` "
            "(or set TANDEM_POSTGRES_URL and TANDEM_REDIS_URL)"
        )
    return Stores(postgres=stack.postgres, redis=stack.redis, local=True)


def check_postgres(endpoint: PostgresEndpoint, *, timeout_s: int = 3) -> None:
    """Raise StoreUnavailableError naming the server (password masked) if it does not answer."""
    try:
        with psycopg.connect(endpoint.url(), connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise StoreUnavailableError(
            f"PostgreSQL at {endpoint.host}:{endpoint.port} ({endpoint.masked()}) "
            f"is unreachable: {first_line(exc)}"
        ) from None


def check_redis(endpoint: RedisEndpoint, *, timeout_s: float = 3.0) -> None:
    """Raise StoreUnavailableError naming the server (password masked) if it does not answer."""
    client = redis.Redis.from_url(endpoint.url(), socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StoreUnavailableError(
            f"Redis at {endpoint.host}:{endpoint.port} ({endpoint.masked()}) is unreachable: {first_line(exc)}"
        ) from None
    finally:
        client.close()
