"""Where one event's time goes in the stream consumer: wall time per phase, by wrapping the functions its hot
path calls (bench/stream_ingest.py --phases)."""

from __future__ import annotations

import time
from typing import Any

import redis

from bench.common import print_table
from core.online.store import OnlineStore

__all__ = ["Phases", "consumer_phases"]


class Phases:
    """Wall time per phase of the consumer's hot path, by wrapping the functions it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def print_per_event(self, elapsed: float, events: int) -> None:
        """The table of µs per event per phase, the untimed rest and the total."""
        nested = self.seconds.get("offline_rows (column form -> records)", 0.0)  # inside the COPY phase
        spent = sum(self.seconds.values()) - nested
        table = [(name, f"{seconds / events * 1e6:.1f}") for name, seconds in self.seconds.items()]
        table.append(("(commit, transaction, the rest)", f"{(elapsed - spent) / events * 1e6:.1f}"))
        table.append(("total", f"{elapsed / events * 1e6:.1f}"))
        print_table(
            "where one event's time goes (1 Redis consumer; offline_rows runs inside the COPY phase)",
            ["phase", "µs per event"],
            table,
        )


def consumer_phases() -> Phases:
    """Phases wrapped around the Redis consumer's hot path."""
    import streaming.batch
    import streaming.offline
    import streaming.redis_consumer
    import streaming.writer

    phases = Phases()
    phases.wrap(redis.Redis, "xreadgroup", "XREADGROUP (read + parse replies)")
    phases.wrap(streaming.redis_consumer, "_event", "event JSON -> Event")
    phases.wrap(streaming.batch, "typed_rows", "typed_rows (fast decode + validation)")
    phases.wrap(streaming.batch, "validate_rows", "validate_rows (the push's validation)")
    phases.wrap(streaming.batch, "row_digests", "event keys (blake2b)")
    phases.wrap(streaming.offline, "offline_rows", "offline_rows (column form -> records)")
    phases.wrap(streaming.writer, "append_new", "seen-key INSERT + COPY (PostgreSQL)")
    phases.wrap(streaming.writer, "online_rows", "online_rows (newest per entity)")
    phases.wrap(OnlineStore, "write_newer_mask", "newer-wins online write (pack + Redis Lua)")
    phases.wrap(redis.client.Pipeline, "execute", "dead letters + XACK")
    return phases
