"""The scheduler's own failures, recorded as the error of a job run (never mapped to HTTP)."""

from __future__ import annotations

from core.errors import TandemError

__all__ = ["JobTimeoutError", "LeadershipLostError"]


class JobTimeoutError(TandemError):
    """A job attempt ran past its timeout: recorded failed, no retry while it still runs."""


class LeadershipLostError(TandemError):
    """This process no longer holds the leader lease: no job may start (or count as done) here."""
