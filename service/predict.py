"""`POST /v1/predict` and `GET /v1/predict/{model}?<join key>=<value>`: thin handlers over the served models'
prediction services.

The use case (read, blend, live score, degraded fallback) is `core.serving.service.PredictionService`; here:
the request's shape, the answer's JSON, metrics. Both routes are timed here (the HTTP middleware skips them).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import UNSET, UnsetType

from core.errors import NotFoundError, StoreUnavailableError
from core.features.keys import EntityId, EntityKey
from core.records.prediction_runs import RUN_KINDS, RunKind
from core.serving.answer import NO_STORED_SCORE, UNKNOWN_ENTITY, Answer
from core.serving.blend import Mode, Reason, Source
from core.serving.service import PredictionService
from service.errors import RequestError
from service.metrics import DEGRADED, FEATURE_AGE, PREDICT_LATENCY, PREDICTIONS
from service.state import Services

__all__ = ["PredictController", "PredictRequest", "PredictResponse", "PredictionItem", "SteeringNote"]


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which model, which entities (objects of the model's join keys), how, and how old a stored score may
    be. `model` may be left out when exactly one model is served."""

    entities: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    model: str | None = None
    mode: Mode = Mode.AUTO
    max_staleness_s: Annotated[float, msgspec.Meta(ge=0)] | None = None


class SteeringNote(msgspec.Struct):
    """The skew policy's row that matched this answer (present only then): `reason` is `online_skewed` (a
    feature view the model reads has wrong online values: stored score preferred) or `parity_breached`
    (stored scores disagree with live ones: live preferred); `applied` is true under policy `enforce` (the
    answer's own `reason` then says what was served), false under `annotate` (advice only: the answer is what
    it would be without the policy). `report_id` and `report_at` name the skew report behind it."""

    policy: str
    reason: Reason
    applied: bool
    report_id: int | None
    report_at: str | None


class PredictionItem(msgspec.Struct):
    """One entity's answer: the score, where it came from and why, and what it was computed from (`run_kind`:
    whether the stored score served came from the nightly `batch` run or a `stream` re-score of the entity's
    fresh features; null when scored live); or, for an
    entity without an answer, only `entity` and `error`: `unknown_entity` (neither features nor a stored
    score) or `no_stored_score` (Redis is down and PostgreSQL holds no published score for it)."""

    entity: dict[str, Any]
    score: float | UnsetType = UNSET
    source: Source | UnsetType = UNSET
    reason: Reason | UnsetType = UNSET
    degraded: bool | UnsetType = UNSET
    model_version: str | UnsetType | None = UNSET
    batch_run_id: str | UnsetType | None = UNSET
    run_kind: RunKind | UnsetType | None = UNSET
    scored_at: str | UnsetType | None = UNSET
    feature_timestamps: dict[str, str | None] | UnsetType = UNSET
    staleness_s: float | UnsetType | None = UNSET
    error: str | UnsetType = UNSET
    steering: SteeringNote | UnsetType = UNSET


class PredictResponse(msgspec.Struct):
    """The model that answered, and one item per requested entity, in request order."""

    model: str
    predictions: list[PredictionItem]


_RUN_KINDS: dict[str | None, RunKind] = {kind: kind for kind in RUN_KINDS}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _item(key: EntityKey, answer: Answer) -> PredictionItem:
    decision = answer.decision
    if decision is None or answer.score is None:
        return PredictionItem(entity=key.to_object(answer.entity_id), error=answer.error or UNKNOWN_ENTITY)
    return PredictionItem(
        entity=key.to_object(answer.entity_id),
        score=answer.score,
        source=decision.source,
        reason=decision.reason,
        degraded=decision.degraded,
        model_version=answer.model_version,
        batch_run_id=answer.batch_run_id,
        run_kind=_RUN_KINDS.get(answer.run_kind) if decision.source is Source.BATCH else None,
        scored_at=_iso(answer.scored_at),
        feature_timestamps={view: _iso(ts) for view, ts in (answer.feature_timestamps or {}).items()},
        staleness_s=answer.staleness_s,
        steering=_note(answer),
    )


def _note(answer: Answer) -> SteeringNote | UnsetType:
    steering, decision = answer.steering, answer.decision
    if steering is None or decision is None or decision.steered_by is None:
        return UNSET
    report = steering.report
    return SteeringNote(
        policy=steering.policy.value,
        reason=decision.steered_by,
        applied=steering.active,
        report_id=report.report_id if report is not None else None,
        report_at=_iso(report.report_at) if report is not None else None,
    )


def _entity_ids(
    services: Services, prediction: PredictionService, entities: list[dict[str, Any]]
) -> list[EntityId]:
    key = prediction.service.key
    limit = services.settings.max_entities_per_request
    if len(entities) > limit:
        raise RequestError(f"entities: at most {limit} entities per request, got {len(entities)}")
    try:
        return [key.parse(entity, f"entities[{position}]") for position, entity in enumerate(entities)]
    except ValueError as exc:
        raise RequestError(str(exc)) from None


async def predict_entities(
    services: Services,
    prediction: PredictionService,
    ids: list[EntityId],
    *,
    mode: Mode,
    max_staleness_s: float | None,
) -> list[PredictionItem]:
    """Answer every id in order (the model's prediction service), count the answers, render them."""
    answers = await prediction.predict(ids, mode=mode, max_staleness_s=max_staleness_s)
    batch = 0
    for answer in answers:
        decision = answer.decision
        if decision is None:
            continue
        label = (prediction.name, decision.source, decision.reason)
        counter = _ANSWERS.get(label)
        if counter is None:
            counter = _ANSWERS[label] = PREDICTIONS.labels(
                prediction.name, decision.source.value, decision.reason.value
            )
        counter.inc()
        if decision.degraded:
            DEGRADED.inc()
        if answer.staleness_s is not None:
            FEATURE_AGE.observe(answer.staleness_s)
        batch += decision.source is Source.BATCH
    services.coverage.add(batch=batch, total=len(answers))
    key = prediction.service.key
    return [_item(key, answer) for answer in answers]


_ANSWERS: dict[
    tuple[str, Source, Reason], Any
] = {}  # bound Counter children: labels() per answer costs a lock

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
    ) -> PredictResponse:
        """One item per entity, in order, each with its source, reason and provenance; an entity without an
        answer gets an item with `error` instead (the others are still served)."""
        started, status = time.perf_counter(), "error"
        try:
            prediction = services.models.get(data.model)
            ids = _entity_ids(services, prediction, data.entities)
            items = await predict_entities(
                services, prediction, ids, mode=data.mode, max_staleness_s=data.max_staleness_s
            )
            status = "ok"
            return PredictResponse(model=prediction.name, predictions=items)
        finally:
            _LATENCY[("POST", status)].observe(time.perf_counter() - started)

    @get("/v1/predict/{model:str}", summary="Predict for one entity: its join keys as query parameters")
    async def predict_one(
        self, services: NamedDependency[Services], request: Request[Any, Any, Any], model: FromPath[str],
        mode: FromQuery[Mode] = Mode.AUTO,
        max_staleness_s: Annotated[float | None, QueryParameter(ge=0)] = None,
    ) -> PredictionItem:  # fmt: skip
        """The same answer as POST /v1/predict for one entity, e.g. `GET /v1/predict/my_model?user_id=42`;
        404 when the entity (or the model) is unknown."""
        started, status = time.perf_counter(), "error"
        try:
            prediction = services.models.get(model)
            key = prediction.service.key
            extra = sorted(set(request.query_params) - {*key.join_keys, "mode", "max_staleness_s"})
            if extra:
                raise RequestError(
                    f"{extra[0]}: not a join key of model {model!r} (expected {', '.join(key.join_keys)})"
                )
            parts = []
            for name in key.join_keys:
                raw = request.query_params.get(name)
                if raw is None:
                    raise RequestError(f"{name}: query parameter required (a join key of model {model!r})")
                try:
                    parts.append(key.parse_text(name, raw))
                except ValueError as exc:
                    raise RequestError(str(exc)) from None
            entity_id = key.compose(parts)
            items = await predict_entities(
                services, prediction, [entity_id], mode=mode, max_staleness_s=max_staleness_s
            )
            item = items[0]
            if item.error is not UNSET:
                if item.error == NO_STORED_SCORE:
                    raise StoreUnavailableError(
                        f"Redis is unreachable and {key.label} {entity_id} has no stored prediction"
                    )
                raise NotFoundError(f"unknown {key.label}: {entity_id}")
            status = "ok"
            return item
        finally:
            _LATENCY[("GET", status)].observe(time.perf_counter() - started)
