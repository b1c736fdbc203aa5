"""Prediction parity of the skew checker, with a fake model: grouping of entities, the 1e-9 rule for unchanged
ones, the features named for a disagreement, and the distribution of changed ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from consistency.classify import ValueColumn
from consistency.parity import PARITY_TOLERANCE, compute_parity
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.model.registry import LoadedModel
from core.online.rows import OnlineRow, StoredPrediction

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RUN_AT = NOW - timedelta(hours=6)
A_TS = RUN_AT - timedelta(hours=1)
B_TS = RUN_AT - timedelta(hours=2)
SERVICE = ServiceSpec(
    name="svc",
    views=(
        ViewSpec("a", "t", EntityKey.single("id"), "ts", None, 86_400, (FeatureSpec("x", "float64"),)),
        ViewSpec("b", "t", EntityKey.single("id"), "ts", None, 86_400, (FeatureSpec("y", "int64"),)),
    ),
    refs=("a:x", "b:y"),
)


class _Linear:
    """P(class 1) = sigmoid(x + y), nulls as 0."""

    classes_ = np.array([0, 1])

    def predict_proba(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        total = np.nan_to_num(matrix).sum(axis=1)
        positive = 1 / (1 + np.exp(-total))
        return np.column_stack([1 - positive, positive])


MODEL = LoadedModel(
    version="v1",
    model_name="m",
    feature_refs=("a:x", "b:y"),
    estimator=_Linear(),
    sha256="",
    metrics={},
    created_at=NOW,
)


def _score(x: float | None, y: int | None) -> float:
    return float(1 / (1 + np.exp(-((x or 0.0) + (y or 0)))))


def _row(
    entity: int,
    x: float | None,
    y: int | None,
    *,
    a_ts: datetime | None = A_TS,
    b_ts: datetime | None = B_TS,
    stored: float | None = None,
    version: str = "v1",
    snapshot: dict[str, datetime | None] | None = None,
) -> OnlineRow:
    prediction = None
    if stored is not None:
        prediction = StoredPrediction(
            score=stored,
            model_version=version,
            run_id="run-1",
            scored_at=RUN_AT,
            feature_snapshot_ts=snapshot if snapshot is not None else {"a": A_TS, "b": B_TS},
        )
    return OnlineRow(
        entity_id=entity,
        values={"a:x": x, "b:y": y},
        event_ts={"a": a_ts, "b": b_ts},
        stored=prediction,
    )


def _batch_inputs(values: dict[int, tuple[float | None, int | None]]) -> Any:
    """Offline inputs of the batch run, as the checker's reader returns them."""
    calls: list[tuple[list[int], datetime]] = []

    def read(ids: npt.NDArray[np.int64], as_of: datetime) -> dict[str, ValueColumn]:
        calls.append((ids.tolist(), as_of))
        return {
            "a:x": ValueColumn.of("float64", [values[int(i)][0] for i in ids]),
            "b:y": ValueColumn.of("int64", [values[int(i)][1] for i in ids]),
        }

    read.calls = calls  # type: ignore[attr-defined]  # test introspection
    return read


def test_groups_and_exact_agreement() -> None:
    """Each entity lands in one group; unchanged ones that agree leave the status ok."""
    rows = [
        _row(1, 0.5, 2, stored=_score(0.5, 2)),  # unchanged, agrees
        _row(2, 0.5, 3, b_ts=B_TS + timedelta(minutes=5), stored=_score(0.5, 2)),  # changed
        _row(3, 0.5, 2),  # no stored score
        _row(4, 0.5, 2, stored=0.1, version="v0"),  # other model
        _row(5, None, None, a_ts=None, b_ts=None, stored=0.2, snapshot={"a": None, "b": None}),
    ]
    parity = compute_parity(model=MODEL, service=SERVICE, rows=rows, now=NOW, batch_inputs=_batch_inputs({}))
    assert parity["status"] == "ok"
    assert parity["counts"] == {
        "unchanged": 1,
        "changed": 1,
        "no_stored": 1,
        "other_model": 1,
        "no_live_features": 1,
    }
    assert parity["unchanged"] == {"count": 1, "agree": 1, "disagree": 0, "max_abs_diff": 0.0}
    changed = parity["changed"]
    assert changed["count"] == 1
    assert changed["mean"] == pytest.approx(_score(0.5, 3) - _score(0.5, 2))
    assert changed["max_abs"] == pytest.approx(abs(changed["mean"]))
    assert parity["flagged"] == []
    assert parity["run_ids"] == ["run-1"]


def test_unchanged_disagreement_is_flagged_with_the_differing_feature() -> None:
    """An unchanged entity whose live score is off by more than 1e-9 is a breach, flagged with the feature
    whose live value differs from the batch run's input; within 1e-9 is agreement."""
    rows = [
        _row(7, 0.9, 2, stored=_score(0.5, 2)),  # x changed under the same timestamp
        _row(8, 0.5, 2, stored=_score(0.5, 2) + PARITY_TOLERANCE / 2),  # within tolerance
    ]
    inputs = _batch_inputs({7: (0.5, 2), 8: (0.5, 2)})
    parity = compute_parity(model=MODEL, service=SERVICE, rows=rows, now=NOW, batch_inputs=inputs)
    assert parity["status"] == "breach"
    assert parity["unchanged"]["disagree"] == 1
    assert parity["unchanged"]["agree"] == 1
    (flagged,) = parity["flagged"]
    assert flagged["entity_id"] == 7
    assert flagged["features"] == [{"feature": "a:x", "batch": 0.5, "online": 0.9}]
    assert flagged["diff"] == pytest.approx(_score(0.9, 2) - _score(0.5, 2))
    assert inputs.calls == [([7], RUN_AT)]


def test_ttl_is_applied_to_live_rows() -> None:
    """A view past its TTL at `now` is dropped before live scoring, as the service does: an entity whose
    batch run had no row of it (snapshot null) is then unchanged and must agree."""
    old = NOW - timedelta(days=3)
    rows = [_row(9, 0.5, 4, b_ts=old, stored=_score(0.5, None), snapshot={"a": A_TS, "b": None})]
    parity = compute_parity(model=MODEL, service=SERVICE, rows=rows, now=NOW, batch_inputs=_batch_inputs({}))
    assert parity["counts"]["unchanged"] == 1
    assert parity["status"] == "ok"


def test_nothing_comparable_is_skipped() -> None:
    """No stored scores at all: parity is skipped with a reason, not ok."""
    parity = compute_parity(
        model=MODEL, service=SERVICE, rows=[_row(1, 0.5, 2)], now=NOW, batch_inputs=_batch_inputs({})
    )
    assert parity["status"] == "skipped"
    assert "stored score" in parity["reason"]


def test_model_reading_other_features_is_skipped() -> None:
    """A model whose inputs the service lacks cannot be compared: skipped, naming them."""
    other = LoadedModel(
        version="v2",
        model_name="m",
        feature_refs=("a:x", "c:z"),
        estimator=_Linear(),
        sha256="",
        metrics={},
        created_at=NOW,
    )
    parity = compute_parity(
        model=other, service=SERVICE, rows=[_row(1, 0.5, 2)], now=NOW, batch_inputs=_batch_inputs({})
    )
    assert parity["status"] == "skipped"
    assert "c:z" in parity["reason"]
