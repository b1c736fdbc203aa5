"""Domain errors. Only the service maps them to HTTP; the command line prints their message on one line."""

from __future__ import annotations

__all__ = [
    "AlreadyAcknowledgedError",
    "ConfigurationError",
    "InvalidModelError",
    "NotFoundError",
    "StackError",
    "StoreUnavailableError",
    "TamperedArtifactError",
    "TandemError",
    "TrainingError",
    "UnverifiedArtifactError",
    "first_line",
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


class AlreadyAcknowledgedError(TandemError):
    """A skew report was acknowledged already and the caller did not ask to replace the acknowledgement."""


class TrainingError(TandemError):
    """A model cannot be trained from the data at hand (no labels, a single class, no holdout)."""


class InvalidModelError(TandemError):
    """An estimator cannot serve as a model of a feature service (unfitted, wrong task, wrong inputs)."""


class TamperedArtifactError(TandemError):
    """A stored model artifact does not match its recorded sha256, or its HMAC signature is missing or wrong."""


class UnverifiedArtifactError(TamperedArtifactError):
    """A pickle artifact cannot be verified (no signing key is configured) and unsigned loading is not allowed."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
