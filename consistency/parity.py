"""Prediction parity: each sampled entity's stored batch score vs a live re-score of its online features now.

Live scoring is the service's own: `core.serving.answer.answer_rows` in mode `live`, the function the API
runs for `mode: live` (the promoted model on the online row with views past their TTL counted as absent). Each entity falls in one group:

- `no_stored`: no (complete) stored prediction online;
- `other_model`: stored by another model version than the promoted one (scores may differ by design);
- `no_live_features`: no view of the service has a live row: the service would not re-score it;
- `unchanged`: every view's live event time equals the one the batch score used (`feature_snapshot_ts`):
  the live score must equal the stored one within `PARITY_TOLERANCE`; any that doesn't is flagged, with
  the features whose live value differs from the batch run's input (offline, as of the run's time);
- `changed`: anything else (new or expired rows since the run): the differences are summarised (count,
  mean, mean/p50/p95/max of absolute values).

Status: `breach` when an unchanged entity disagrees, `ok` otherwise, `skipped` (with a reason) when no
entity could be compared or no promoted model exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from consistency.classify import ValueColumn, values_equal
from core.features.keys import EntityId
from core.features.specs import ServiceSpec
from core.model.registry import LoadedModel
from core.online.rows import OnlineRow, apply_ttl
from core.serving.answer import answer_rows
from core.serving.blend import Mode

__all__ = ["GROUPS", "PARITY_TOLERANCE", "BatchInputs", "compute_parity", "skipped_parity"]

PARITY_TOLERANCE = 1e-9
MAX_FLAGGED = 20
GROUPS = ("unchanged", "changed", "no_stored", "other_model", "no_live_features")

BatchInputs = Callable[[npt.NDArray[np.int64], datetime], dict[str, ValueColumn]]
"""(entity ids, batch as-of time) -> "view:feature" -> the offline values the batch run scored them on."""


def skipped_parity(reason: str) -> dict[str, Any]:
    """The parity section when it cannot be computed."""
    return {"status": "skipped", "reason": reason, "tolerance": PARITY_TOLERANCE}


def _group(row: OnlineRow, live: OnlineRow, model_version: str, views: Sequence[str]) -> str:
    stored = row.stored
    if stored is None:
        return "no_stored"
    if stored.model_version != model_version:
        return "other_model"
    if all(live.event_ts.get(view) is None for view in views):
        return "no_live_features"
    if all(live.event_ts.get(view) == stored.feature_snapshot_ts.get(view) for view in views):
        return "unchanged"
    return "changed"


def _distribution(diffs: npt.NDArray[np.float64]) -> dict[str, Any]:
    if len(diffs) == 0:
        return {"count": 0}
    absolute = np.abs(diffs)
    return {
        "count": len(diffs),
        "mean": float(diffs.mean()),
        "mean_abs": float(absolute.mean()),
        "p50_abs": float(np.quantile(absolute, 0.5)),
        "p95_abs": float(np.quantile(absolute, 0.95)),
        "max_abs": float(absolute.max()),
    }


def _differing_features(
    *,
    service: ServiceSpec,
    model: LoadedModel,
    live: list[OnlineRow],
    flagged: list[int],
    stored_at: list[datetime],
    batch_inputs: BatchInputs,
) -> dict[int, list[dict[str, Any]]]:
    """Per flagged index: the model features whose live value differs from the batch run's input."""
    kinds = dict(zip(model.feature_refs, service.kinds_of(model.feature_refs), strict=True))
    out: dict[int, list[dict[str, Any]]] = {index: [] for index in flagged}
    for moment in sorted(set(stored_at)):
        group = [index for index, at in zip(flagged, stored_at, strict=True) if at == moment]
        ids = service.key.array(sorted({live[i].entity_id for i in group}))
        inputs = batch_inputs(ids, moment)
        position: dict[EntityId, int] = {entity: n for n, entity in enumerate(ids.tolist())}
        for index in group:
            row = live[index]
            for ref in model.feature_refs:
                batch_value = inputs[ref].scalar(position[row.entity_id]) if ref in inputs else None
                live_value = row.values.get(ref)
                if not values_equal(kinds[ref], batch_value, live_value, tolerance=0.0):
                    out[index].append({"feature": ref, "batch": batch_value, "online": live_value})
    return out


def compute_parity(
    *,
    model: LoadedModel,
    service: ServiceSpec,
    rows: Sequence[OnlineRow],
    now: datetime,
    batch_inputs: BatchInputs,
) -> dict[str, Any]:
    """The parity section of a report (see the module docstring)."""
    missing = [ref for ref in model.feature_refs if ref not in service.refs]
    if missing:
        return skipped_parity(f"model {model.version} reads {missing}, which the feature service lacks")
    views = [view.name for view in service.views]
    live = [apply_ttl(row, service, now=now) for row in rows]
    groups = [_group(row, live_row, model.version, views) for row, live_row in zip(rows, live, strict=True)]
    counts = {name: groups.count(name) for name in GROUPS}
    result: dict[str, Any] = {
        "status": "ok",
        "reason": None,
        "tolerance": PARITY_TOLERANCE,
        "model_version": model.version,
        "counts": counts,
        "run_ids": sorted({row.stored.run_id for row in rows if row.stored is not None}),
    }
    comparable = [i for i, group in enumerate(groups) if group in ("unchanged", "changed")]
    if not comparable:
        return {**result, "status": "skipped", "reason": "no sampled entity has a stored score to compare"}
    answers = answer_rows(
        [rows[i] for i in comparable],
        service=service,
        model=model,
        now=now,
        max_staleness_s=math.inf,
        mode=Mode.LIVE,
    )
    live_scores = np.array([math.nan if a.score is None else a.score for a in answers], dtype=np.float64)
    stored_scores = np.array([rows[i].stored.score for i in comparable])  # type: ignore[union-attr]  # comparable: stored
    diffs = live_scores - stored_scores
    unchanged = np.array([groups[i] == "unchanged" for i in comparable], dtype=np.bool_)
    bad = unchanged & ~(np.abs(diffs) <= PARITY_TOLERANCE)
    bad_positions = np.flatnonzero(bad).tolist()
    flagged = [comparable[p] for p in bad_positions[:MAX_FLAGGED]]
    features = _differing_features(
        service=service,
        model=model,
        live=live,
        flagged=flagged,
        stored_at=[rows[i].stored.scored_at for i in flagged],  # type: ignore[union-attr]  # flagged: stored
        batch_inputs=batch_inputs,
    )
    result["unchanged"] = {
        "count": int(unchanged.sum()),
        "agree": int(unchanged.sum()) - len(bad_positions),
        "disagree": len(bad_positions),
        "max_abs_diff": float(np.abs(diffs[unchanged]).max()) if unchanged.any() else None,
    }
    result["changed"] = _distribution(diffs[~unchanged])
    result["flagged"] = [
        {
            "entity_id": rows[comparable[p]].entity_id,
            "stored_score": float(stored_scores[p]),
            "live_score": float(live_scores[p]),
            "diff": float(diffs[p]),
            "features": features[comparable[p]],
        }
        for p in bad_positions[:MAX_FLAGGED]
    ]
    if bad_positions:
        result["status"] = "breach"
    return result
