"""The blend policy: serve the stored batch score, or re-score live, and say why. Pure: no I/O, no clock.

Rows of DESIGN.md's table, first match wins in this order: online_unavailable, batch_missing, model_mismatch,
batch_stale, features_newer, batch_fresh. `live_unavailable` replaces a live reason when live scoring
cannot run (no online features) and a stored score exists. Modes `batch` and `live` force one path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["BlendDecision", "BlendInput", "Mode", "Reason", "Source", "StoredScore", "decide"]


class Source(StrEnum):
    """Where the served score came from."""

    BATCH = "batch"
    LIVE = "live"


class Reason(StrEnum):
    """Why that source was chosen (the `reason` field of every answer)."""

    BATCH_FRESH = "batch_fresh"
    FEATURES_NEWER = "features_newer"
    BATCH_MISSING = "batch_missing"
    BATCH_STALE = "batch_stale"
    MODEL_MISMATCH = "model_mismatch"
    ONLINE_UNAVAILABLE = "online_unavailable"
    LIVE_UNAVAILABLE = "live_unavailable"
    FORCED = "forced"


class Mode(StrEnum):
    """`auto` blends; `batch` and `live` force one path."""

    AUTO = "auto"
    BATCH = "batch"
    LIVE = "live"


@dataclass(frozen=True, slots=True)
class StoredScore:
    """What the policy needs of a stored prediction."""

    model_version: str
    scored_at: datetime
    feature_snapshot_ts: Mapping[str, datetime | None]


@dataclass(frozen=True, slots=True)
class BlendInput:
    """Everything the decision depends on, for one entity."""

    stored: StoredScore | None
    online_ts: Mapping[str, datetime | None]  # view -> online event time (None: no row online)
    live_model_version: str | None  # None: no model loaded, live scoring impossible
    max_staleness_s: float
    now: datetime
    online_available: bool = True
    mode: Mode = Mode.AUTO


@dataclass(frozen=True, slots=True)
class BlendDecision:
    """Which source serves, why, and whether Tandem is running degraded for it."""

    source: Source
    reason: Reason
    degraded: bool = False


def _features_newer(stored: StoredScore, online_ts: Mapping[str, datetime | None]) -> bool:
    for view, online in online_ts.items():
        if online is None:
            continue
        used = stored.feature_snapshot_ts.get(view)
        if used is None or online > used:
            return True
    return False


def _live_possible(inp: BlendInput) -> bool:
    return (
        inp.online_available
        and inp.live_model_version is not None
        and any(ts is not None for ts in inp.online_ts.values())
    )


def _live(inp: BlendInput, reason: Reason) -> BlendDecision | None:
    """Re-score live for `reason`; fall back to the stored score (degraded) when live scoring can't run."""
    if _live_possible(inp):
        return BlendDecision(Source.LIVE, reason)
    if inp.stored is not None:
        return BlendDecision(Source.BATCH, Reason.LIVE_UNAVAILABLE, degraded=True)
    return None


def decide(inp: BlendInput) -> BlendDecision | None:
    """The decision for one entity, or None when there is nothing to serve (unknown entity / stores down)."""
    if inp.mode is Mode.BATCH:
        if inp.stored is None:
            return None
        return BlendDecision(Source.BATCH, Reason.FORCED, degraded=not inp.online_available)
    if inp.mode is Mode.LIVE:
        return BlendDecision(Source.LIVE, Reason.FORCED) if _live_possible(inp) else None
    if not inp.online_available:
        if inp.stored is None:
            return None
        return BlendDecision(Source.BATCH, Reason.ONLINE_UNAVAILABLE, degraded=True)
    stored = inp.stored
    if stored is None:
        return _live(inp, Reason.BATCH_MISSING)
    if stored.model_version != inp.live_model_version:
        return _live(inp, Reason.MODEL_MISMATCH)
    if (inp.now - stored.scored_at).total_seconds() > inp.max_staleness_s:
        return _live(inp, Reason.BATCH_STALE)
    if _features_newer(stored, inp.online_ts):
        return _live(inp, Reason.FEATURES_NEWER)
    return BlendDecision(Source.BATCH, Reason.BATCH_FRESH)
