"""Turn library errors that mean "a store is down" into one line for people; None for real bugs."""

from __future__ import annotations

from core.errors import first_line

__all__ = ["describe_failure"]


def describe_failure(exc: BaseException) -> str | None:
    """A one-line message for connection failures raised inside Feast, SQLAlchemy, psycopg or redis-py."""
    import psycopg
    import redis
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg.OperationalError | sqlalchemy.exc.OperationalError):
            return f"PostgreSQL is unreachable: {first_line(current)}"
        if isinstance(current, redis.ConnectionError | redis.TimeoutError):
            return f"Redis is unreachable: {first_line(current)}"
        current = current.__cause__ or current.__context__
    return None
