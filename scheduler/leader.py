"""Which scheduler process leads: the one holding a PostgreSQL session-level advisory lock.

The lock lives on a dedicated psycopg connection (autocommit, idle between checks). It is released when
the leader unlocks it or when its session ends, for example when the process dies: the server notices
the closed socket at once, or within its TCP keepalive window (~25 s: idle 10 s + 3 probes x 5 s) when
the network silently drops. The leader checks its lock every `leader_poll_s` and its client-side
keepalives (~9 s) and `tcp_user_timeout` (9 s) fail the check before the server gives the lock away, so
a partitioned leader stops scheduling before a standby can start.

The lock key is a constant derived from "tandem-scheduler" and the database name, so two Tandem
deployments on one server never block each other (advisory locks are per database anyway).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psycopg

from core.endpoints import PostgresEndpoint

__all__ = ["LOCK_NAME", "LeaderLock", "leader_lock_key"]

logger = logging.getLogger(__name__)

LOCK_NAME = "tandem-scheduler"
_CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 9_000,  # ms: unacknowledged writes fail after this
    "connect_timeout": 5,
    "application_name": "tandem-scheduler-leader",
}
# Server side: drop a silent client's session (and the lock) after ~25 s; never for being idle.
_SERVER_OPTIONS = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
    "-c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0 -c statement_timeout=5000"
)


def leader_lock_key(database: str) -> int:
    """The signed 64-bit advisory lock key of the scheduler of `database`."""
    digest = hashlib.sha256(f"{LOCK_NAME}:{database}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LeaderLock:
    """The scheduler's leadership lock on one database (a context manager that always lets go)."""

    def __init__(self, endpoint: PostgresEndpoint) -> None:
        self.endpoint = endpoint
        self.key = leader_lock_key(endpoint.database)
        self._conn: psycopg.Connection[Any] | None = None
        self.held = False

    @property
    def session_pid(self) -> int | None:
        """The server process id of the lock's session (for operators: pg_stat_activity.pid)."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.endpoint.url(), autocommit=True, options=_SERVER_OPTIONS, **_CLIENT_KEEPALIVES
            )
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self.held = None, False

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False when another session does or PostgreSQL is away."""
        if self.held:
            return self.still_held()
        try:
            row = self._connection().execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            logger.warning("leader lock: PostgreSQL at %s unavailable: %s", self.endpoint.masked(), exc)
            self._drop()
            return False
        self.held = bool(row and row[0])
        return self.held

    def still_held(self) -> bool:
        """True while this session still holds the lock (checked on the server, not remembered)."""
        if not self.held or self._conn is None or self._conn.closed:
            return False
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND granted AND classid = %s AND objid = %s AND objsubid = 1",
                (unsigned >> 32, unsigned & 0xFFFF_FFFF),
            ).fetchone()
        except psycopg.Error as exc:
            logger.error("leader lock: lost the lock connection: %s", exc)
            self._drop()
            return False
        if not (row and row[0]):
            self.held = False
        return self.held

    def wait(
        self, *, poll_s: float, stop: threading.Event, on_standby: Callable[[], None] | None = None
    ) -> bool:
        """Poll until this process leads (True) or `stop` is set (False); `on_standby` runs once if it waits."""
        told = False
        while not stop.is_set():
            if self.try_acquire():
                return True
            if not told and on_standby is not None:
                on_standby()
            told = True
            stop.wait(poll_s)
        return False

    def release(self) -> None:
        """Unlock and close the connection (closing alone would release it too)."""
        if self._conn is not None and not self._conn.closed and self.held:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error as exc:
                logger.warning("leader lock: unlock failed (the closing connection releases it): %s", exc)
        self._drop()

    def __enter__(self) -> LeaderLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
