"""Names Tandem derives from a model's name, shared by the repo helper, the batch path and the API.

A model's published scores are the Feast feature view `<model>_predictions` (declared in the user's repo
with `tandem.repo.predictions_view`), tagged with the model's name so that materialization leaves it alone
(Tandem publishes it itself).
"""

from __future__ import annotations

import re

__all__ = ["PREDICTIONS_TAG", "check_model_name", "predictions_view_name"]

PREDICTIONS_TAG = "tandem.predictions_of"
"""The Feast tag on a predictions view; its value is the model's name."""

_MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


def check_model_name(name: str) -> str:
    """`name` if it is a valid model name (a letter, then letters, digits, underscores; 63 at most)."""
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r} must start with a letter and hold only letters, digits and underscores"
        )
    return name


def predictions_view_name(model_name: str) -> str:
    """The Feast view of a model's published scores."""
    return f"{check_model_name(model_name)}_predictions"
