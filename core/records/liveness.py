"""Is the process running a job still alive? A PostgreSQL advisory lock it holds says so, from any machine.

A pid answers that question only on its own host. Every tracked job run (the scheduler's jobs and the
command line's, `core.records.tracked_run`) therefore holds, for its whole life, a session-level advisory
lock on a connection of its own, and records the lock's key in its row (`details["liveness_lock"]`). The
lock goes when the process does: SIGKILL or a crash closes its socket and PostgreSQL frees the lock at once.
A machine that vanishes (power, network) leaves no FIN behind, so the connection pings every third of
`TANDEM_RUN_LIVENESS_S` and sets `idle_session_timeout` to it: PostgreSQL itself ends a session that stopped
pinging, with the server's clock, and the lock is free within `TANDEM_RUN_LIVENESS_S`. A repair anywhere
asks `lock_is_free` (pg_try_advisory_xact_lock in its own transaction): free means the owner is gone.
A SIGSTOPped process loses its lock the same way; when it resumes, its run cannot be recorded a success
(`core.records.prediction_runs.set_run_status` only publishes a run still `publishing`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from types import TracebackType

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.errors import StoreUnavailableError, first_line

__all__ = ["LIVENESS_KEY", "LIVENESS_S", "Liveness", "lock_is_free"]

logger = logging.getLogger(__name__)

LIVENESS_KEY = "liveness_lock"  # in job_runs.details: the advisory lock key its process holds while it runs
LIVENESS_S = 30.0  # TANDEM_RUN_LIVENESS_S's default: how long a vanished machine's lock can outlive it


class Liveness:
    """Holds one advisory lock on a dedicated connection, pinged from a daemon thread, until `release()`."""

    def __init__(self, url: str, *, liveness_s: float) -> None:
        self.key = secrets.randbits(63)  # bigint keys; a clash with another run's needs 2^31 runs at once
        self.liveness_s = liveness_s
        self.lost = threading.Event()  # set when a ping failed: the lock may be gone
        self._stop = threading.Event()
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"PostgreSQL is unreachable: {first_line(exc)}") from None
        timeout_ms = max(1_000, int(liveness_s * 1000))
        try:  # the server ends a session that stopped pinging (PostgreSQL 14+)
            self._conn.execute(f"SET idle_session_timeout = {timeout_ms}")
        except psycopg.errors.UndefinedObject:  # older servers: only a closed connection frees the lock
            logger.warning("run liveness: this PostgreSQL has no idle_session_timeout (before 14)")
        self._conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        self._thread = threading.Thread(target=self._ping, name="run-liveness", daemon=True)
        self._thread.start()

    def _ping(self) -> None:
        while not self._stop.wait(self.liveness_s / 3):
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error as exc:
                logger.warning("run liveness: lost the connection that holds the lock: %s", first_line(exc))
                self.lost.set()
                return

    def release(self) -> None:
        """Stop pinging and close the connection (PostgreSQL frees the lock with the session)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> Liveness:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def lock_is_free(session: Session, key: int) -> bool:
    """True when no session holds liveness lock `key`: its process (or its machine) is gone.

    Takes the lock until the session's transaction ends, so the owner cannot come back in between.
    """
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))
