"""`POST /v1/predict` and `GET /v1/predict/{entity_key}`: thin handlers over the prediction service.

The use case (read, blend, live score, degraded fallback) is `core.serving.service.PredictionService`; here:
the request's shape, the answer's JSON, metrics. Both routes are timed here (the HTTP middleware skips them).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from core.serving.answer import Answer
from core.serving.blend import Mode, Reason, Source
from service.errors import RequestError
from service.metrics import DEGRADED, FEATURE_AGE, PREDICT_LATENCY, PREDICTIONS
from service.state import Services

__all__ = ["PredictController", "PredictRequest"]


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which entities to score, how, and how old a stored score may be."""

    entities: Annotated[list[dict[str, int]], msgspec.Meta(min_length=1)]
    mode: Mode = Mode.AUTO
    max_staleness_s: Annotated[float, msgspec.Meta(ge=0)] | None = None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _item(join_key: str, answer: Answer) -> dict[str, Any]:
    decision = answer.decision
    if decision is None:  # callers turn unanswerable entities into 404/503 before this
        raise RuntimeError("no decision to render")
    return {
        "entity": {join_key: answer.entity_id},
        "score": answer.score,
        "source": decision.source.value,
        "reason": decision.reason.value,
        "degraded": decision.degraded,
        "model_version": answer.model_version,
        "batch_run_id": answer.batch_run_id,
        "scored_at": _iso(answer.scored_at),
        "feature_timestamps": {view: _iso(ts) for view, ts in (answer.feature_timestamps or {}).items()},
        "staleness_s": answer.staleness_s,
    }


def _entity_ids(services: Services, entities: list[dict[str, int]]) -> list[int]:
    key = services.prediction.service.join_key
    limit = services.settings.max_entities_per_request
    if len(entities) > limit:
        raise RequestError(f"entities: at most {limit} entities per request, got {len(entities)}")
    ids = []
    for position, entity in enumerate(entities):
        if set(entity) != {key}:
            raise RequestError(
                f"entities[{position}]: expected exactly the key {key!r}, got {sorted(entity)}"
            )
        ids.append(entity[key])
    return ids


async def predict_entities(
    services: Services, ids: list[int], *, mode: Mode, max_staleness_s: float | None
) -> list[dict[str, Any]]:
    """Answer every id in order (the prediction service), count the answers, render them."""
    answers = await services.prediction.predict(ids, mode=mode, max_staleness_s=max_staleness_s)
    batch = 0
    for answer in answers:
        decision = answer.decision
        if decision is None:
            continue
        counter = _ANSWERS.get((decision.source, decision.reason))
        if counter is None:
            counter = _ANSWERS[(decision.source, decision.reason)] = PREDICTIONS.labels(
                decision.source.value, decision.reason.value
            )
        counter.inc()
        if decision.degraded:
            DEGRADED.inc()
        if answer.staleness_s is not None:
            FEATURE_AGE.observe(answer.staleness_s)
        batch += decision.source is Source.BATCH
    services.coverage.add(batch=batch, total=len(answers))
    key = services.prediction.service.join_key
    return [_item(key, answer) for answer in answers]


_ANSWERS: dict[tuple[Source, Reason], Any] = {}  # bound Counter children: labels() per answer costs a lock

_LATENCY = {
    (method, status): PREDICT_LATENCY.labels(f"{method} /v1/predict", status)
    for method in ("POST", "GET")
    for status in ("ok", "error")
}


class PredictController(Controller):
    """Predictions: batch-served when still right, re-scored live when features moved."""

    tags = ["predict"]  # noqa: RUF012 - Litestar reads class attributes

    @post("/v1/predict", status_code=200, summary="Predict for up to 1,000 entities")
    async def predict(
        self, services: NamedDependency[Services], data: JSONBody[PredictRequest]
    ) -> dict[str, Any]:
        """One item per entity, in order, each with its source, reason and provenance."""
        started, status = time.perf_counter(), "error"
        try:
            ids = _entity_ids(services, data.entities)
            items = await predict_entities(
                services, ids, mode=data.mode, max_staleness_s=data.max_staleness_s
            )
            status = "ok"
            return {"predictions": items}
        finally:
            _LATENCY[("POST", status)].observe(time.perf_counter() - started)

    @get("/v1/predict/{entity_key:str}", summary="Predict for one entity")
    async def predict_one(
        self, services: NamedDependency[Services], entity_key: FromPath[str], mode: FromQuery[Mode] = Mode.AUTO,
        max_staleness_s: Annotated[float | None, QueryParameter(ge=0)] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The same answer as POST /v1/predict for a single entity id."""
        started, status = time.perf_counter(), "error"
        try:
            try:
                entity_id = int(entity_key)
            except ValueError:
                key = services.prediction.service.join_key
                raise RequestError(f"entity_key: {key} must be an integer, got {entity_key!r}") from None
            items = await predict_entities(services, [entity_id], mode=mode, max_staleness_s=max_staleness_s)
            status = "ok"
            return items[0]
        finally:
            _LATENCY[("GET", status)].observe(time.perf_counter() - started)
