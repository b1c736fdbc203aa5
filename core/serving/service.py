"""The prediction service: the API's use case, with its stores passed in.

read online -> keep only stored scores of published runs -> blend -> live re-score -> answers; when the
online store does not answer, stored scores come from PostgreSQL (degraded). Stores are reached through two
small interfaces (`OnlineReads`, `core.serving.stored.StoredScores`) that raise StoreUnavailableError, so
handler tests run it on in-memory fakes and integration tests on the real stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from core.errors import StoreUnavailableError
from core.features.keys import EntityId
from core.features.specs import ServiceSpec
from core.model.registry import LoadedModel
from core.online.rows import OnlineRow
from core.online.wire import ReadLayout
from core.records.skew_steering import SteeringReport
from core.serving.answer import NO_STORED_SCORE, UNKNOWN_ENTITY, Answer, answer_rows
from core.serving.blend import Mode, SkewPolicy
from core.serving.published import PublishedRuns
from core.serving.steering import ModelSteering, model_steering
from core.serving.stored import StoredScores

__all__ = ["OnlineReads", "PredictionService", "StoreHealth"]

_NAMED = 20  # unanswerable entities named in an error message


class OnlineReads(Protocol):
    """The read of the online store (core.online.store.AsyncOnlineStore)."""

    async def read(self, layout: ReadLayout, entity_ids: Sequence[EntityId]) -> list[OnlineRow]:
        """Rows for `entity_ids`, in order; StoreUnavailableError when the store does not answer."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class StoreHealth:
    """Whether each store answered the last time it was asked, and when that was."""

    online_ok: bool = False
    offline_ok: bool = False
    checked_at: datetime = field(default_factory=_utcnow)

    def mark(self, *, online: bool | None = None, offline: bool | None = None) -> None:
        """Record an answer (or its absence) from either store, now."""
        if online is not None:
            self.online_ok = online
        if offline is not None:
            self.offline_ok = offline
        self.checked_at = _utcnow()


class PredictionService:
    """Answers of model `name` for entities of its feature service, with its loaded version (`model`,
    swapped in one step) and its published stored scores."""

    def __init__(
        self,
        *,
        name: str,
        online: OnlineReads,
        stored: StoredScores,
        layout: ReadLayout,
        max_staleness_s: float,
        model: LoadedModel | None = None,
        health: StoreHealth | None = None,
        clock: Callable[[], datetime] = _utcnow,
        skew_policy: SkewPolicy = SkewPolicy.OFF,
        ack_stops_steering: bool = True,
    ) -> None:
        self.name = name
        self.online = online
        self.stored = stored
        self.layout = layout
        self.max_staleness_s = max_staleness_s
        self.model = model
        self.health = health or StoreHealth()
        self.published = PublishedRuns(stored)
        self.clock = clock
        self.skew_policy = skew_policy
        self.ack_stops_steering = ack_stops_steering
        self.skew_report: SteeringReport | None = None  # the model's latest skew report, set by the watcher
        self._steering: tuple[object, ModelSteering] | None = None

    @property
    def steering(self) -> ModelSteering:
        """What the skew policy does to this model's answers now (recomputed when the report or the model
        changes, never on a store read)."""
        model, report = self.model, self.skew_report
        key = (
            id(report),
            model.version if model is not None else None,
            self.skew_policy,
            self.ack_stops_steering,
        )
        cached = self._steering
        if cached is not None and cached[0] == key:
            return cached[1]
        steering = model_steering(
            self.name,
            report,
            policy=self.skew_policy,
            ack_stops=self.ack_stops_steering,
            model_version=model.version if model is not None else None,
            feature_refs=model.feature_refs if model is not None else None,
        )
        self._steering = (key, steering)
        return steering

    @property
    def service(self) -> ServiceSpec:
        """The feature service the answers are computed from."""
        return self.layout.service

    async def rows(self, entity_ids: Sequence[EntityId]) -> tuple[list[OnlineRow], bool]:
        """Online rows (stored scores verified), or stored rows from PostgreSQL when Redis does not answer
        (then the flag is False); StoreUnavailableError when neither answers."""
        try:
            rows = await self.online.read(self.layout, entity_ids)
        except StoreUnavailableError:
            self.health.mark(online=False)
        else:
            self.health.mark(online=True)
            return await self.published.verify(rows), True
        try:
            found = await self.stored.latest(entity_ids)
        except StoreUnavailableError as exc:
            self.health.mark(offline=False)
            raise StoreUnavailableError(
                "both stores are unreachable: Redis (online features) and PostgreSQL (stored predictions)"
            ) from exc
        self.health.mark(offline=True)
        return [OnlineRow(i, {}, {}, found.get(i)) for i in entity_ids], False

    async def predict(
        self, entity_ids: Sequence[EntityId], *, mode: Mode = Mode.AUTO, max_staleness_s: float | None = None
    ) -> list[Answer]:
        """An answer per id, in order. An entity without one carries `error` (`unknown_entity`, or
        `no_stored_score` while Redis is down); StoreUnavailableError when no entity can be answered because
        a store is down, or live scoring was forced without a model."""
        rows, online = await self.rows(entity_ids)
        model = self.model  # one model for the whole request, even if a swap happens meanwhile
        answers = answer_rows(
            rows,
            service=self.service,
            model=model,
            now=self.clock(),
            max_staleness_s=self.max_staleness_s if max_staleness_s is None else max_staleness_s,
            mode=mode,
            online_available=online,
            steering=self.steering,
            run_kinds=self.published.kinds,
        )
        missing = [answer.entity_id for answer in answers if answer.decision is None]
        if not missing:
            return answers
        key = self.service.key.label
        if mode is Mode.LIVE and model is None:
            raise StoreUnavailableError("no model is loaded: live scoring is unavailable")
        if not online and len(missing) == len(answers):
            if mode is Mode.LIVE:  # forced live: a stored score from PostgreSQL is not an answer
                raise StoreUnavailableError("Redis is unreachable: live scoring needs the online features")
            names = ", ".join(str(i) for i in missing[:_NAMED])
            raise StoreUnavailableError(f"Redis is unreachable and {key} {names} has no stored prediction")
        error = UNKNOWN_ENTITY if online else NO_STORED_SCORE
        return [replace(answer, error=error) if answer.decision is None else answer for answer in answers]

    async def refresh(self) -> None:
        """Re-read the published runs (StoreUnavailableError when PostgreSQL does not answer)."""
        try:
            await self.published.refresh()
        except StoreUnavailableError:
            self.health.mark(offline=False)
            raise
        self.health.mark(offline=True)
