"""The blend policy: serve the stored batch score, or re-score live, and say why. Pure: no I/O, no clock.

Rows of DESIGN.md's table, first match wins in this order: online_unavailable, batch_missing, model_mismatch,
batch_stale, [online_skewed], features_newer, [parity_breached], batch_fresh. `live_unavailable` replaces a
live reason when live scoring cannot run (no online features) and a stored score exists. Modes `batch` and
`live` force one path.

The two bracketed rows are the skew policy's (`steer`, from the model's latest skew report, see
`core.serving.steering`); they only ever decide between a stored score of the serving model version that is
within `max_staleness_s` and a live re-score:

- `online_skewed` (steer `batch`: a feature view the model reads has online values that are wrong): where
  `features_newer` would re-score live on the suspect online features, the stored score is served instead;
- `parity_breached` (steer `live`: stored scores disagree with live ones on unchanged entities): where
  `batch_fresh` would serve the suspect stored score, the entity is re-scored live (`live_unavailable` when
  it cannot be).

With policy `enforce` the row decides; with `annotate` the decision is the one without the row and the row
is only named in `steered_by`; with `off` the rows never match. `steered_by` names the row that matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "STEERING_REASONS",
    "BlendDecision",
    "BlendInput",
    "Mode",
    "Reason",
    "SkewPolicy",
    "Source",
    "Steer",
    "StoredScore",
    "decide",
]


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
    ONLINE_SKEWED = "online_skewed"
    PARITY_BREACHED = "parity_breached"


STEERING_REASONS = (Reason.ONLINE_SKEWED, Reason.PARITY_BREACHED)
"""The reasons of the skew policy's rows."""


class Mode(StrEnum):
    """`auto` blends; `batch` and `live` force one path."""

    AUTO = "auto"
    BATCH = "batch"
    LIVE = "live"


class SkewPolicy(StrEnum):
    """What a skew report's breach does to `auto` answers (setting `TANDEM_SKEW_POLICY`)."""

    OFF = "off"  # nothing
    ANNOTATE = "annotate"  # the answer names the row that would steer it (`steered_by`), the decision stays
    ENFORCE = "enforce"  # the row decides


class Steer(StrEnum):
    """Which path the model's latest skew report makes suspect, as a preference of the other one."""

    NONE = "none"
    BATCH = "batch"  # online values are wrong: prefer the stored score (online_skewed)
    LIVE = "live"  # stored scores disagree with live ones on unchanged inputs: prefer live (parity_breached)


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
    steer: Steer = Steer.NONE
    skew_policy: SkewPolicy = SkewPolicy.OFF


@dataclass(frozen=True, slots=True)
class BlendDecision:
    """Which source serves, why, and whether Tandem is running degraded for it."""

    source: Source
    reason: Reason
    degraded: bool = False
    # The skew policy's row that matched (enforce: it decided; annotate: advice only), None when none did.
    steered_by: Reason | None = None


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
    policy = inp.skew_policy
    steer = inp.steer if policy is not SkewPolicy.OFF else Steer.NONE
    if _features_newer(stored, inp.online_ts):
        if steer is Steer.BATCH:
            if policy is SkewPolicy.ENFORCE:
                return BlendDecision(Source.BATCH, Reason.ONLINE_SKEWED, steered_by=Reason.ONLINE_SKEWED)
            return _steered(_live(inp, Reason.FEATURES_NEWER), Reason.ONLINE_SKEWED)
        return _live(inp, Reason.FEATURES_NEWER)
    if steer is Steer.LIVE:
        if policy is SkewPolicy.ENFORCE:
            return _steered(_live(inp, Reason.PARITY_BREACHED), Reason.PARITY_BREACHED)
        return BlendDecision(Source.BATCH, Reason.BATCH_FRESH, steered_by=Reason.PARITY_BREACHED)
    return BlendDecision(Source.BATCH, Reason.BATCH_FRESH)


def _steered(decision: BlendDecision | None, row: Reason) -> BlendDecision:
    if decision is None:  # _live falls back to the stored score, which exists wherever a row steers
        raise RuntimeError("a steered decision needs a stored score")
    return BlendDecision(decision.source, decision.reason, decision.degraded, steered_by=row)
