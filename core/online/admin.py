"""Administrative operations on the online store: removing one Feast project's keys."""

from __future__ import annotations

import redis

__all__ = ["purge_project"]


def purge_project(client: redis.Redis, project: str, *, batch: int = 1_000) -> int:
    """Delete every key of one Feast project (Feast's keys end with the project name); returns how many.

    Used when the offline data was replaced wholesale (re-seeding): Feast's online write never replaces a
    row with an older or equal event time, so stale rows would otherwise survive materialization.
    """
    deleted = 0
    pending: list[bytes] = []
    for key in client.scan_iter(match=f"*{project}", count=batch):
        pending.append(key)
        if len(pending) >= batch:
            deleted += _delete(client, pending)
            pending.clear()
    if pending:
        deleted += _delete(client, pending)
    return deleted


def _delete(client: redis.Redis, keys: list[bytes]) -> int:
    count = client.delete(*keys)
    if not isinstance(count, int):
        raise TypeError("a synchronous Redis client is required")
    return count
