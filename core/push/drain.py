"""Draining the push outbox: its rows written online, oldest first, then deleted (the scheduler's job).

`drain_outbox` claims a batch of rows no other drain holds, writes each with the newer-wins write and
deletes the ones written; on the first failure (Redis still down) it stops and releases the rest with the
error, for the next run. Repeats until the outbox is empty or a batch fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from core.online.store import OnlineStore
from core.push.outbox import claim_outbox, finish_outbox, unavailable

__all__ = ["DrainReport", "drain_outbox"]


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What one drain did: outbox rows written and deleted, feature rows written, rows left behind."""

    drained: int
    written_online: int
    left: int
    error: str | None

    def details(self) -> dict[str, Any]:
        """For a job run's details."""
        return {"drained": self.drained, "written_online": self.written_online, "left": self.left}


def drain_outbox(
    conn: psycopg.Connection[Any], online: OnlineStore, *, batch: int = 100, lease_s: float = 30.0
) -> DrainReport:
    """Write every unheld outbox row online, `batch` rows per claim; stop at the first failure."""
    drained = written = left = 0
    error: str | None = None
    while error is None:
        items = claim_outbox(conn, limit=batch, lease_s=lease_s)
        done: list[int] = []
        for position, item in enumerate(items):
            try:
                written += online.write_newer(item.rows)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the row for the next drain
                error = unavailable(exc)
                left += len(items) - position
                break
            done.append(item.id)
        failed = [item.id for item in items[len(done) :]]
        finish_outbox(conn, done=done, failed=failed, error=error or "")
        drained += len(done)
        if len(items) < batch:
            break
    return DrainReport(drained=drained, written_online=written, left=left, error=error)
