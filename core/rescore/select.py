"""Which touched entities a stream re-score must score: the blend policy's own answer, without I/O.

An entity is re-scored when a request for it now would be re-scored live (`core.serving.blend.decide` in mode
`auto` says `live`): no stored score (`batch_missing`), one of another model version (`model_mismatch`), one
older than the staleness limit (`batch_stale`), or a feature view whose online event time moved past the one
the stored score used (`features_newer`). An entity the policy serves from its stored score (`batch_fresh`,
or a reason that keeps the stored score for another cause) is left alone, and so is one without online
features. The rows are taken as the live path takes them (feature TTLs applied), so a stream score is the
live score of the same features, and its snapshot is exactly the event times the API compares it with.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.features.keys import EntityId
from core.features.specs import ServiceSpec
from core.online.rows import OnlineRow, StoredPrediction, apply_ttl
from core.serving.blend import BlendInput, Source, StoredScore, decide

__all__ = ["SKIPPED_UNKNOWN", "Selection", "select_changed", "snapshot_text", "snapshot_texts"]

SKIPPED_UNKNOWN = "no_features"
"""The count key of entities without online features nor a stored score (nothing to score)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The rows to re-score (TTL applied, in input order) and, per policy reason, how many rows had it."""

    rows: tuple[OnlineRow, ...]
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def entity_ids(self) -> list[EntityId]:
        """The ids of the rows to re-score."""
        return [row.entity_id for row in self.rows]


def _stored(stored: StoredPrediction | None) -> StoredScore | None:
    if stored is None:
        return None
    return StoredScore(stored.model_version, stored.scored_at, stored.feature_snapshot_ts)


def select_changed(
    rows: Sequence[OnlineRow],
    *,
    service: ServiceSpec,
    model_version: str,
    now: datetime,
    max_staleness_s: float,
) -> Selection:
    """The rows whose answer now would be a live re-score (see the module doc); each entity once."""
    chosen: list[OnlineRow] = []
    reasons: Counter[str] = Counter()
    seen: set[EntityId] = set()
    for row in rows:
        if row.entity_id in seen:
            continue
        seen.add(row.entity_id)
        fresh = apply_ttl(row, service, now=now)
        decision = decide(
            BlendInput(
                stored=_stored(fresh.stored),
                online_ts=fresh.event_ts,
                live_model_version=model_version,
                max_staleness_s=max_staleness_s,
                now=now,
            )
        )
        reasons[decision.reason.value if decision is not None else SKIPPED_UNKNOWN] += 1
        if decision is not None and decision.source is Source.LIVE:
            chosen.append(fresh)
    return Selection(rows=tuple(chosen), reasons=dict(reasons))


def snapshot_text(row: OnlineRow, service: ServiceSpec) -> str:
    """The `feature_snapshot_ts` JSON of a score computed from `row`: per view of the service, the event time
    of the online row used (null: none), in the batch run's format."""
    stamps = {
        view.name: (stamp.astimezone(UTC).isoformat() if (stamp := row.event_ts.get(view.name)) else None)
        for view in service.views
    }
    return json.dumps(stamps, separators=(",", ":"))


def snapshot_texts(rows: Sequence[OnlineRow], service: ServiceSpec) -> list[str]:
    """`snapshot_text` of every row, equal to it text for text, without a JSON encoder per row: each view's
    `"name":` is encoded once, and each distinct event time's ISO text once (an ISO time needs no escaping)."""
    names = [view.name for view in service.views]
    heads = [json.dumps(name) + ":" for name in names]
    stamps: dict[datetime, str] = {}

    def stamp_text(stamp: datetime) -> str:
        text = stamps.get(stamp)
        if text is None:
            text = stamps[stamp] = f'"{stamp.astimezone(UTC).isoformat()}"'
        return text

    return [
        "{"
        + ",".join(
            head + (stamp_text(stamp) if (stamp := row.event_ts.get(name)) else "null")
            for name, head in zip(names, heads, strict=True)
        )
        + "}"
        for row in rows
    ]
