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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from core.features.keys import EntityId
from core.features.specs import ServiceSpec
from core.online.rows import OnlineRow, apply_ttl, ttl_cutoff
from core.serving.blend_many import CODES, BlendColumns, decide_many

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


def select_changed(
    rows: Sequence[OnlineRow],
    *,
    service: ServiceSpec,
    model_version: str,
    now: datetime,
    max_staleness_s: float,
) -> Selection:
    """The rows whose answer now would be a live re-score (see the module doc); each entity once (its first
    row). The policy's inputs are taken a column at a time and decided at once (core.serving.blend_many),
    which is `decide` of each row."""
    first: dict[EntityId, OnlineRow] = {}
    for row in rows:
        first.setdefault(row.entity_id, row)
    unique = list(first.values())
    stored = [row.stored for row in unique]
    has_stored = [score is not None for score in stored]
    newer = [False] * len(unique)
    live_possible = [False] * len(unique)
    for view in service.views:
        cutoff = ttl_cutoff(view, now)
        name = view.name
        online = [row.event_ts.get(name) for row in unique]
        if cutoff is not None:  # apply_ttl: a row older than the TTL is absent
            online = [None if stamp is None or stamp < cutoff else stamp for stamp in online]
        used = [None if score is None else score.feature_snapshot_ts.get(name) for score in stored]
        newer = [
            seen or (stamp is not None and (before is None or stamp > before))
            for seen, stamp, before in zip(newer, online, used, strict=True)
        ]
        live_possible = [seen or stamp is not None for seen, stamp in zip(live_possible, online, strict=True)]
    live, codes = decide_many(
        BlendColumns(
            stored=np.array(has_stored, dtype=bool),
            same_version=np.array(
                [score is not None and score.model_version == model_version for score in stored], dtype=bool
            ),
            stale=np.array(
                [
                    score is not None and (now - score.scored_at).total_seconds() > max_staleness_s
                    for score in stored
                ],
                dtype=bool,
            ),
            features_newer=np.array(newer, dtype=bool),
            live_possible=np.array(live_possible, dtype=bool),
        )
    )
    reasons: dict[str, int] = {}
    for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
        reasons[CODES[code].value if code >= 0 else SKIPPED_UNKNOWN] = int(count)
    chosen = tuple(apply_ttl(unique[index], service, now=now) for index in np.flatnonzero(live).tolist())
    return Selection(rows=chosen, reasons=reasons)


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
