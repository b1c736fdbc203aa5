"""Domain errors. Only the service maps them to HTTP; the command line prints their message on one line."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "NotFoundError",
    "StackError",
    "StoreUnavailableError",
    "TandemError",
]


class TandemError(Exception):
    """Base class: the message is meant for the user, complete on one line."""


class ConfigurationError(TandemError):
    """Settings are missing or contradict each other."""


class StoreUnavailableError(TandemError):
    """PostgreSQL or Redis did not answer."""


class StackError(TandemError):
    """The embedded local stack could not be started or stopped."""


class NotFoundError(TandemError):
    """A named thing (model version, report, feature service, entity) does not exist."""
