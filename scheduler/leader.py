"""Which scheduler process leads: the holder of an unexpired lease row in PostgreSQL.

The lease is one row of `tandem_scheduler.leader_lease` (created on first use, next to APScheduler's job
store and outside schema `tandem`, which Alembic owns). Its expiry is set by the server's clock, so the
hosts' clocks never matter. The leader renews it every `leader_poll_s` for `leader_lease_s`; a standby
takes it once it has expired (the expiry time is in the past on the server), and every takeover adds one
to its `epoch`. A lease held by a dead process of this host (its pid is gone) is taken at once, without
waiting for it to expire: a scheduler restarted after a crash, or a standby next to a killed leader,
leads within one poll.

The leader also keeps the expiry on its own monotonic clock, measured from before it sent the renewal:
`leading()` turns False as soon as `leader_lease_s` has passed since the last renewal that PostgreSQL
confirmed, which is never later than the server's expiry. A SIGSTOPped leader therefore loses leadership
within one lease (its standby takes over within lease + poll), and when it resumes, `leading()` is
already False before any thread of it can start another job, whether or not a standby took over. A
leader cut off from PostgreSQL stops the same way: its renewals fail and the lease runs out.

A job run's success is recorded only under the lease (`fence`, core.records.job_runs.tracked_run): the
transaction that records it reads the lease row FOR SHARE and finds this process its unexpired holder,
so a takeover (which updates that row) waits for it, and a run finishing after the lease was lost is
recorded failed. (The job's own effects are not fenced: jobs are idempotent, and a leader that lost its
lease exits at once.)

Every query on the lease's connection is bounded (connect, statement and TCP user timeouts of a third of
the lease), so a renewal never hangs past the lease it is renewing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.endpoints import PostgresEndpoint
from core.errors import ConfigurationError
from core.records.job_runs import pid_alive

__all__ = ["LEASE_NAME", "LEASE_SCHEMA", "LEASE_TABLE", "LeaderLease", "LeaseHolder", "current_holder"]

logger = logging.getLogger(__name__)

LEASE_NAME = "tandem-scheduler"
LEASE_SCHEMA = "tandem_scheduler"
LEASE_TABLE = f"{LEASE_SCHEMA}.leader_lease"

_CREATE = (
    f"CREATE SCHEMA IF NOT EXISTS {LEASE_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} ("
    " name text PRIMARY KEY, holder text NOT NULL, host text NOT NULL, pid integer NOT NULL,"
    " epoch bigint NOT NULL, acquired_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL,"
    " expires_at timestamptz NOT NULL)",
)
_ACQUIRE = """
INSERT INTO tandem_scheduler.leader_lease AS lease
    (name, holder, host, pid, epoch, acquired_at, renewed_at, expires_at)
VALUES (%(name)s, %(holder)s, %(host)s, %(pid)s, 1, now(), now(), now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, host = EXCLUDED.host, pid = EXCLUDED.pid,
    epoch = lease.epoch + 1, acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at
WHERE lease.expires_at <= now()
RETURNING epoch
"""
_TAKE_FROM_DEAD = """
UPDATE tandem_scheduler.leader_lease
SET holder = %(holder)s, host = %(host)s, pid = %(pid)s, epoch = epoch + 1, acquired_at = now(),
    renewed_at = now(), expires_at = now() + make_interval(secs => %(ttl)s)
WHERE name = %(name)s AND holder = %(dead)s
RETURNING epoch
"""
_RENEW = """
UPDATE tandem_scheduler.leader_lease
SET renewed_at = now(), expires_at = now() + make_interval(secs => %(ttl)s)
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > now()
RETURNING epoch
"""
_FENCE = text(
    "SELECT 1 FROM tandem_scheduler.leader_lease WHERE name = :name AND holder = :holder "
    "AND expires_at > now() FOR SHARE"
)
_RELEASE = "UPDATE tandem_scheduler.leader_lease SET expires_at = now() WHERE name = %(name)s AND holder = %(holder)s"
_HOLDER = (
    "SELECT holder, host, pid, epoch, expires_at > now() FROM tandem_scheduler.leader_lease WHERE name = %s"
)


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds (or last held) the lease, and whether it is still unexpired on the server."""

    holder: str
    host: str
    pid: int
    epoch: int
    unexpired: bool


def current_holder(conn: psycopg.Connection[Any]) -> LeaseHolder | None:
    """The lease row as the server sees it now (None before anyone ever led, or without the table)."""
    if conn.execute("SELECT to_regclass(%s)", (LEASE_TABLE,)).fetchone() in (None, (None,)):
        return None
    row = conn.execute(_HOLDER, (LEASE_NAME,)).fetchone()
    if row is None:
        return None
    return LeaseHolder(holder=row[0], host=row[1], pid=int(row[2]), epoch=int(row[3]), unexpired=bool(row[4]))


class LeaderLease:
    """This process's claim on the scheduler lease of one database (a context manager that lets go)."""

    def __init__(self, endpoint: PostgresEndpoint, *, lease_s: float, poll_s: float) -> None:
        if lease_s <= poll_s:
            raise ConfigurationError(
                f"leader_lease_s ({lease_s:g}) must exceed leader_poll_s ({poll_s:g}): "
                "the leader renews its lease every poll"
            )
        self.endpoint = endpoint
        self.lease_s, self.poll_s = lease_s, poll_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None
        self._valid_until = 0.0  # time.monotonic() after which this process no longer leads
        self._conn: psycopg.Connection[Any] | None = None
        self._guard = threading.Lock()  # the renewal thread and the main thread share the connection

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            bound = max(1.0, self.lease_s / 3)
            conn = psycopg.connect(
                self.endpoint.url(),
                autocommit=True,
                connect_timeout=max(1, int(bound)),
                options=f"-c statement_timeout={int(bound * 1000)}",
                keepalives=1,
                keepalives_idle=max(1, int(bound)),
                keepalives_interval=1,
                keepalives_count=2,
                tcp_user_timeout=int(bound * 1000),
                application_name="tandem-scheduler-leader",
            )
            for statement in _CREATE:
                # Two processes creating it at once: one gets a unique violation, and it exists.
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(statement)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _claim(self, sql: str, *, dead: str | None = None) -> bool:
        params: dict[str, object] = {"name": LEASE_NAME, "holder": self.holder, "pid": os.getpid()}
        params |= {"host": socket.gethostname(), "ttl": self.lease_s, "dead": dead}
        sent = time.monotonic()
        with self._guard:
            try:
                row = self._connection().execute(sql, params).fetchone()
            except psycopg.Error as exc:
                logger.warning("leader lease: PostgreSQL at %s unavailable: %s", self.endpoint.masked(), exc)
                self._drop()
                return False
        if row is None:
            self._valid_until = 0.0
            return False
        self.epoch, self._valid_until = int(row[0]), sent + self.lease_s
        return True

    def _dead_holder(self) -> str | None:
        """The holder of the unexpired lease when it is a process of this host that no longer exists."""
        with self._guard:
            try:
                holder = current_holder(self._connection())
            except psycopg.Error:
                self._drop()
                return None
        if holder is None or not holder.unexpired or holder.host != socket.gethostname():
            return None
        return None if holder.pid == os.getpid() or pid_alive(holder.pid) else holder.holder

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or held by a dead process of this host (renew it if this
        process holds it)."""
        if self.leading():
            return self.renew()
        if self._claim(_ACQUIRE):
            return True
        dead = self._dead_holder()
        if dead is None:
            return False
        logger.warning("leader lease: its holder %s is a dead process of this host: taking over", dead)
        return self._claim(_TAKE_FROM_DEAD, dead=dead)

    def renew(self) -> bool:
        """Extend the lease; False (and `leading()` False from now on) when it expired or was taken."""
        if not self.leading():
            self._valid_until = 0.0
            return False
        if self._claim(_RENEW):
            return True
        self._valid_until = 0.0
        return False

    def leading(self) -> bool:
        """True while the last confirmed renewal is younger than the lease (no query: cheap, always safe)."""
        return time.monotonic() < self._valid_until

    def fence(self, session: Session) -> str | None:
        """None while this process holds the unexpired lease (locking its row FOR SHARE in `session`'s
        transaction), else why not: the job run fence of `tracked_run`."""
        held = session.execute(_FENCE, {"name": LEASE_NAME, "holder": self.holder}).first()
        if held is None or not self.leading():
            return "leader lease lost before the run finished: another scheduler may have run this job"
        return None

    def wait(self, *, stop: threading.Event, on_standby: Callable[[], None] | None = None) -> bool:
        """Poll until this process leads (True) or `stop` is set (False); `on_standby` runs once if it waits."""
        told = False
        while not stop.is_set():
            if self.try_acquire():
                return True
            if not told and on_standby is not None:
                on_standby()
            told = True
            stop.wait(self.poll_s)
        return False

    def keep(self, done: threading.Event) -> None:
        """Renew every poll until `done` is set or a renewal fails (run it in a thread)."""
        while not done.wait(self.poll_s):
            if not self.renew():
                logger.error("leader lease lost (expired or taken): this process no longer leads")
                return

    def release(self) -> None:
        """Let the lease expire now so a standby takes over at its next poll; close the connection."""
        was_leading, self._valid_until = self.leading(), 0.0
        with self._guard:
            if was_leading and self._conn is not None and not self._conn.closed:
                try:
                    self._conn.execute(_RELEASE, {"name": LEASE_NAME, "holder": self.holder})
                except psycopg.Error as exc:
                    logger.warning("leader lease: release failed (it expires by itself): %s", exc)
            self._drop()

    def __enter__(self) -> LeaderLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
