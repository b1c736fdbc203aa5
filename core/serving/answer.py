"""From online rows to answers: TTL, the blend decision, one vectorised live re-score, provenance.

Pure apart from the model call. The service feeds it rows from Redis (or stored rows from PostgreSQL when
Redis is down) and turns the answers into JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core.features.inputs import live_input, numeric_column
from core.features.keys import EntityId
from core.features.specs import ServiceSpec
from core.model.registry import LoadedModel
from core.online.rows import OnlineRow, StoredPrediction, apply_ttl
from core.serving.blend import BlendDecision, BlendInput, Mode, SkewPolicy, Source, Steer, StoredScore, decide
from core.serving.steering import ModelSteering

__all__ = ["NO_STORED_SCORE", "UNKNOWN_ENTITY", "Answer", "answer_rows", "live_matrix"]

UNKNOWN_ENTITY = "unknown_entity"
"""No online row and no stored score: the entity is not known to the feature service."""
NO_STORED_SCORE = "no_stored_score"
"""The online store did not answer and PostgreSQL holds no published score for the entity."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One entity's answer with its provenance; `decision` None means nothing to serve."""

    entity_id: EntityId
    decision: BlendDecision | None
    score: float | None = None
    model_version: str | None = None
    batch_run_id: str | None = None
    scored_at: datetime | None = None
    feature_timestamps: dict[str, datetime | None] | None = None
    staleness_s: float | None = None
    error: str | None = None  # why there is no decision: UNKNOWN_ENTITY or NO_STORED_SCORE
    steering: ModelSteering | None = None  # set when a skew-policy row matched (decision.steered_by)
    run_kind: str | None = None  # the kind of run (batch | stream) that stored the served score; None: live


def _stored_score(stored: StoredPrediction | None) -> StoredScore | None:
    if stored is None:
        return None
    return StoredScore(stored.model_version, stored.scored_at, stored.feature_snapshot_ts)


def _newest(stamps: dict[str, datetime | None]) -> datetime | None:
    present = [stamp for stamp in stamps.values() if stamp is not None]
    return max(present) if present else None


def answer_rows(
    rows: Sequence[OnlineRow],
    *,
    service: ServiceSpec,
    model: LoadedModel | None,
    now: datetime,
    max_staleness_s: float,
    mode: Mode,
    online_available: bool = True,
    steering: ModelSteering | None = None,
    run_kinds: Mapping[str, str] | None = None,
) -> list[Answer]:
    """Decide every row, re-score the live ones in one model call, and attach provenance; `steering` is the
    model's skew steering (None: not steered), `run_kinds` the kind of each published run id, for stored
    scores that do not carry theirs."""
    steer = steering.steer if steering is not None else Steer.NONE
    policy = steering.policy if steering is not None else SkewPolicy.OFF
    fresh = [apply_ttl(row, service, now=now) for row in rows] if online_available else list(rows)
    decisions = [
        decide(
            BlendInput(
                stored=_stored_score(row.stored),
                online_ts=row.event_ts,
                live_model_version=model.version if model is not None else None,
                max_staleness_s=max_staleness_s,
                now=now,
                online_available=online_available,
                mode=mode,
                steer=steer,
                skew_policy=policy,
            )
        )
        for row in fresh
    ]
    live = [
        i for i, decision in enumerate(decisions) if decision is not None and decision.source is Source.LIVE
    ]
    live_scores: dict[int, float] = {}
    if live and model is not None:
        matrix = live_matrix([fresh[i] for i in live], service, model.feature_refs)
        live_scores = dict(zip(live, model.predict_scores(matrix).tolist(), strict=True))
    answers = []
    for i, (row, decision) in enumerate(zip(fresh, decisions, strict=True)):
        note = steering if decision is not None and decision.steered_by is not None else None
        if decision is None:
            answers.append(Answer(row.entity_id, None))
        elif decision.source is Source.LIVE:
            newest = _newest(row.event_ts)
            answers.append(
                Answer(
                    entity_id=row.entity_id,
                    decision=decision,
                    score=live_scores[i],
                    model_version=model.version if model is not None else None,
                    batch_run_id=row.stored.run_id if row.stored is not None else None,
                    scored_at=now,
                    feature_timestamps=dict(row.event_ts),
                    staleness_s=(now - newest).total_seconds() if newest is not None else None,
                    steering=note,
                )
            )
        else:
            stored = row.stored
            if stored is None:  # decide() serves batch only with a stored score
                raise RuntimeError("blend chose a stored score that does not exist")
            answers.append(
                Answer(
                    entity_id=row.entity_id,
                    decision=decision,
                    score=stored.score,
                    model_version=stored.model_version,
                    batch_run_id=stored.run_id,
                    scored_at=stored.scored_at,
                    feature_timestamps=dict(stored.feature_snapshot_ts),
                    staleness_s=(now - stored.scored_at).total_seconds(),
                    steering=note,
                    run_kind=stored.run_kind or (run_kinds or {}).get(stored.run_id),
                )
            )
    return answers


def live_matrix(
    rows: Sequence[OnlineRow], service: ServiceSpec, feature_refs: Sequence[str]
) -> npt.NDArray[Any]:
    """The model input of online rows (TTL applied): one row each, a column per ref, each value converted
    as `core.features.inputs.live_input` does for its kind (float64, or object when a ref is a string). The
    live path and the stream re-score (core.rescore) both score this, so their scores agree exactly.

    Without a string ref, each column is converted at once (`numeric_column`), equal value for value."""
    kinds = service.kinds_of(feature_refs)
    if "string" in kinds:
        return np.array(
            [
                [live_input(kind, row.values.get(ref)) for ref, kind in zip(feature_refs, kinds, strict=True)]
                for row in rows
            ],
            dtype=object,
        ).reshape(len(rows), len(feature_refs))
    matrix = np.empty((len(rows), len(feature_refs)), dtype=np.float64)
    for position, (ref, kind) in enumerate(zip(feature_refs, kinds, strict=True)):
        matrix[:, position] = numeric_column(kind, [row.values.get(ref) for row in rows])
    return matrix
