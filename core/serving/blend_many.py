"""The blend policy for many entities at once (mode `auto`, no skew steering, online store answering, a model
loaded): what `core.serving.blend.decide` answers for each, from boolean columns, without a call per entity.
Pure: numpy, no I/O, no clock.

Per entity: whether it has a stored score, whether that score is of the live model version, whether it is
older than the staleness limit, whether a feature view's online event time moved past the one it used, and
whether live scoring is possible (some view has an online row). The first matching row of DESIGN.md's table
wins as in `decide`; `live_unavailable` replaces a live reason when live scoring cannot run and a stored score
exists; with neither, there is nothing to serve (reason `None`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.serving.blend import Reason

__all__ = ["CODES", "BlendColumns", "decide_many"]

_NOTHING = -1
_REASONS = (Reason.BATCH_MISSING, Reason.MODEL_MISMATCH, Reason.BATCH_STALE, Reason.FEATURES_NEWER)
_FRESH, _UNAVAILABLE = len(_REASONS), len(_REASONS) + 1
CODES: tuple[Reason, ...] = (*_REASONS, Reason.BATCH_FRESH, Reason.LIVE_UNAVAILABLE)
"""Reason of each code `decide_many` returns (-1: nothing to serve)."""


@dataclass(frozen=True, slots=True)
class BlendColumns:
    """The inputs of `decide_many`: one boolean per entity each (the values of the flags for an entity
    without a stored score are ignored)."""

    stored: npt.NDArray[np.bool_]
    same_version: npt.NDArray[np.bool_]
    stale: npt.NDArray[np.bool_]
    features_newer: npt.NDArray[np.bool_]
    live_possible: npt.NDArray[np.bool_]


def decide_many(columns: BlendColumns) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int8]]:
    """Per entity: whether it is re-scored live, and its reason's code in `CODES` (-1: nothing to serve)."""
    stored, live_possible = columns.stored, columns.live_possible
    wanted = np.select(
        [~stored, ~columns.same_version, columns.stale, columns.features_newer],
        list(range(len(_REASONS))),
        default=_FRESH,
    ).astype(np.int8)  # the reason if live scoring can run
    wants_live = wanted != _FRESH
    live = wants_live & live_possible
    codes = np.where(wants_live & ~live_possible, np.where(stored, _UNAVAILABLE, _NOTHING), wanted)
    return live, codes.astype(np.int8)
