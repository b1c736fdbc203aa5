"""`POST /v1/predict` and `GET /v1/predict/{entity_key}`: one online read, the blend, provenance."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import redis
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from core.errors import NotFoundError, StoreUnavailableError
from core.online.reader import OnlineRow
from core.serving.answer import Answer, answer_rows
from core.serving.blend import Mode, Reason, Source
from core.serving.published import verify_stored
from core.serving.stored import stored_predictions
from service.errors import RequestError
from service.metrics import DEGRADED, FEATURE_AGE, PREDICT_LATENCY, PREDICTIONS
from service.state import ServiceState

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


def _entity_ids(tandem: ServiceState, entities: list[dict[str, int]]) -> list[int]:
    key = tandem.service.join_key
    limit = tandem.settings.max_entities_per_request
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


async def _rows(tandem: ServiceState, ids: list[int]) -> tuple[list[OnlineRow], bool]:
    """Online rows, or stored rows from PostgreSQL when Redis does not answer (online_available False)."""
    try:
        rows = await tandem.reader.read_via(tandem.reads.request, ids)
        tandem.health.redis_ok = True
    except (TimeoutError, redis.RedisError, OSError):
        tandem.health.redis_ok = False
    else:
        timeout = tandem.settings.postgres_timeout_s
        return await verify_stored(rows, tandem.published, tandem.pg, timeout_s=timeout), True
    try:
        async with tandem.pg.connection(timeout=tandem.settings.postgres_timeout_s) as conn:
            found = await stored_predictions(conn, ids, feature_service=tandem.service.name)
        tandem.health.postgres_ok = True
    except Exception as exc:
        tandem.health.postgres_ok = False
        raise StoreUnavailableError(
            "both stores are unreachable: Redis (online features) and PostgreSQL (stored predictions)"
        ) from exc
    return [OnlineRow(i, {}, {}, found.get(i)) for i in ids], False


async def predict_entities(
    tandem: ServiceState, ids: list[int], *, mode: Mode, max_staleness_s: float | None
) -> list[dict[str, Any]]:
    """Answer every id in order, or raise NotFoundError / StoreUnavailableError naming the unanswerable."""
    rows, online = await _rows(tandem, ids)
    answers = answer_rows(
        rows,
        service=tandem.service,
        model=tandem.model,
        now=datetime.now(UTC),
        max_staleness_s=tandem.settings.max_staleness_s if max_staleness_s is None else max_staleness_s,
        mode=mode,
        online_available=online,
    )
    key = tandem.service.join_key
    missing = [answer.entity_id for answer in answers if answer.decision is None]
    if missing:
        names = ", ".join(str(i) for i in missing[:20])
        if not online:
            raise StoreUnavailableError(f"Redis is unreachable and {key} {names} has no stored prediction")
        if mode is Mode.LIVE and tandem.model is None:
            raise StoreUnavailableError("no model is loaded: live scoring is unavailable")
        raise NotFoundError(f"unknown {key}: {names}" + (" (and more)" if len(missing) > 20 else ""))
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
    tandem.coverage.add(batch=batch, total=len(answers))
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
    async def predict(self, state: State, data: JSONBody[PredictRequest]) -> dict[str, Any]:
        """One item per entity, in order, each with its source, reason and provenance."""
        started, status = time.perf_counter(), "error"
        try:
            tandem: ServiceState = state.tandem
            ids = _entity_ids(tandem, data.entities)
            items = await predict_entities(tandem, ids, mode=data.mode, max_staleness_s=data.max_staleness_s)
            status = "ok"
            return {"predictions": items}
        finally:
            _LATENCY[("POST", status)].observe(time.perf_counter() - started)

    @get("/v1/predict/{entity_key:str}", summary="Predict for one entity")
    async def predict_one(
        self, state: State, entity_key: FromPath[str], mode: FromQuery[Mode] = Mode.AUTO,
        max_staleness_s: Annotated[float | None, QueryParameter(ge=0)] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The same answer as POST /v1/predict for a single entity id."""
        tandem: ServiceState = state.tandem
        try:
            entity_id = int(entity_key)
        except ValueError:
            raise RequestError(
                f"entity_key: {tandem.service.join_key} must be an integer, got {entity_key!r}"
            ) from None
        items = await predict_entities(tandem, [entity_id], mode=mode, max_staleness_s=max_staleness_s)
        return items[0]
