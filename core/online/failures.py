"""How the online store fails: every Redis client error becomes one StoreUnavailableError naming Redis, and
replies that are not Feast's layout are treated the same (the store can't be trusted). Shared by the
synchronous and the asyncio store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hiredis
import redis

from core.errors import StoreUnavailableError, first_line
from core.features.keys import EntityId
from core.online.rows import OnlineRow
from core.online.wire import ReadLayout

__all__ = ["decoded_rows", "mapped", "no_script", "redis_failures"]

redis_failures: tuple[type[BaseException], ...] = (
    redis.RedisError,
    OSError,
    TimeoutError,
    hiredis.ProtocolError,
)
"""What a Redis client raises when Redis is down, slow, or answers something unexpected."""


def no_script(exc: redis.ResponseError) -> bool:
    """Whether Redis answered NOSCRIPT (the script is not cached: send it by body)."""
    return isinstance(exc, redis.exceptions.NoScriptError) or str(exc).startswith("NOSCRIPT")


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"Redis (online store): {first_line(exc)}")


@contextmanager
def mapped() -> Iterator[None]:
    """Any Redis failure inside becomes StoreUnavailableError naming Redis (the library's error chained)."""
    try:
        yield
    except redis_failures as exc:
        raise _unavailable(exc) from exc


def decoded_rows(
    layout: ReadLayout, entity_ids: Sequence[EntityId], replies: Sequence[Any]
) -> list[OnlineRow]:
    """Rows from replies; bytes that are not Feast's layout mean the online store can't be trusted."""
    try:
        return layout.decode_all(entity_ids, replies)
    except (ValueError, TypeError) as exc:
        raise StoreUnavailableError(
            f"Redis (online store) holds data that is not Feast's layout: {exc}"
        ) from exc
