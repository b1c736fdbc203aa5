"""The API's handlers over the prediction and push services on in-memory fakes: routing, JSON, status codes
and the use cases' decisions, without PostgreSQL or Redis (integration tests run the same on real stores)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from litestar.testing import TestClient
from pydantic import SecretStr

from core.errors import StoreUnavailableError
from core.features.keys import EntityId, EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.model.registry import LoadedModel
from core.offline.append import OfflineRows
from core.online.rows import FeatureRows, OnlineRow, StoredPrediction
from core.online.wire import ReadLayout
from core.push.outbox import OutboxItem
from core.push.service import PushService
from core.records.skew_steering import SteeringReport
from core.serving.blend import Reason, SkewPolicy
from core.serving.service import PredictionService
from core.settings import Settings
from service.app import create_app
from service.metrics import PREDICT_LATENCY
from service.models import ServedModels
from service.state import Services
from service.steering_sync import SteeringSync

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
RUN_AT = NOW - timedelta(hours=3)
STATS_TS = RUN_AT - timedelta(hours=1)
KEY = "API-KEY-handlers"
STATS = ViewSpec(
    "driver_stats", "stats", EntityKey.single("driver_id"), "ts", None, 0,
    (FeatureSpec("trips", "int64"), FeatureSpec("rating", "float64")), push_source="stats_push",
)  # fmt: skip
SCORES = ViewSpec(
    "eta_scores", "(select 1)", EntityKey.single("driver_id"), "scored_at", None, 0,
    (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"), FeatureSpec("run_id", "string"),
     FeatureSpec("feature_snapshot_ts", "string")),
)  # fmt: skip
SERVICE = ServiceSpec("eta_v2", (STATS,), ("driver_stats:trips", "driver_stats:rating"))


class _Sum:
    """P(class 1) = sigmoid(trips / 10 + rating), nulls as 0."""

    classes_ = np.array([0, 1])

    def predict_proba(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        total = np.nan_to_num(matrix[:, 0]) / 10 + np.nan_to_num(matrix[:, 1])
        positive = 1 / (1 + np.exp(-total))
        return np.column_stack([1 - positive, positive])


MODEL = LoadedModel(
    version="eta-v7", model_name="eta", feature_refs=SERVICE.refs, estimator=_Sum(), sha256="", metrics={},
    created_at=NOW,
)  # fmt: skip


def _live(trips: int, rating: float) -> float:
    return float(1 / (1 + np.exp(-(trips / 10 + rating))))


@dataclass
class FakeOnline:
    """Online rows by (feature service, entity id); `down` makes every call fail like an unreachable Redis."""

    rows: dict[tuple[str, EntityId], OnlineRow] = field(default_factory=dict)
    down: bool = False
    written: list[FeatureRows] = field(default_factory=list)

    async def read(self, layout: ReadLayout, entity_ids: Sequence[EntityId]) -> list[OnlineRow]:
        if self.down:
            raise StoreUnavailableError("Redis (online store): connection refused")
        service = layout.service
        empty, no_ts = dict.fromkeys(service.refs), {view.name: None for view in service.views}
        return [
            self.rows.get((service.name, i), OnlineRow(i, dict(empty), dict(no_ts), None)) for i in entity_ids
        ]

    async def write_newer(self, rows: FeatureRows) -> int:
        if self.down:
            raise StoreUnavailableError("Redis (online store): connection refused")
        self.written.append(rows)
        return len(rows)


@dataclass
class FakeStored:
    """PostgreSQL's stored scores and published runs; `down` fails like an unreachable PostgreSQL."""

    latest_scores: dict[EntityId, StoredPrediction] = field(default_factory=dict)
    published: set[str] = field(default_factory=lambda: {"run-1"})
    down: bool = False
    appended: list[OfflineRows] = field(default_factory=list)
    outbox: dict[int, FeatureRows] = field(default_factory=dict)

    stream_runs: set[str] = field(default_factory=set)

    async def published_runs(self) -> dict[str, str]:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (stored scores): connection refused")
        return dict.fromkeys(self.published, "batch")

    async def published_kinds(self, run_ids: Sequence[str]) -> dict[str, str]:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (stored scores): connection refused")
        kinds = {**dict.fromkeys(self.published, "batch"), **dict.fromkeys(self.stream_runs, "stream")}
        return {run_id: kinds[run_id] for run_id in run_ids if run_id in kinds}

    async def latest(self, entity_ids: Sequence[EntityId]) -> dict[EntityId, StoredPrediction]:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (stored scores): connection refused")
        return {i: self.latest_scores[i] for i in entity_ids if i in self.latest_scores}

    async def append(self, rows: OfflineRows, online: FeatureRows) -> int:
        if self.down:
            raise StoreUnavailableError("PostgreSQL (offline append): connection refused")
        self.appended.append(rows)
        self.outbox[len(self.appended)] = online
        return len(self.appended)

    async def settle(self, done: Sequence[int], *, claim: int = 0) -> list[OutboxItem]:
        for row_id in done:
            self.outbox.pop(row_id, None)
        return []

    async def release(self, ids: Sequence[int], *, error: str) -> None:
        pass  # the rows stay in `outbox`


class FakeProbe:
    def __init__(self, online: FakeOnline, stored: FakeStored) -> None:
        self.online, self.stored = online, stored

    async def online_ok(self) -> bool:
        return not self.online.down

    async def offline_ok(self) -> bool:
        return not self.stored.down


def _stored(score: float, run_id: str = "run-1", snapshot_ts: datetime = STATS_TS) -> StoredPrediction:
    return StoredPrediction(score, "eta-v7", run_id, RUN_AT, {"driver_stats": snapshot_ts})


def _row(
    driver: int, trips: int, rating: float, *, ts: datetime = STATS_TS, stored: StoredPrediction | None
) -> OnlineRow:
    return OnlineRow(
        driver, {"driver_stats:trips": trips, "driver_stats:rating": rating}, {"driver_stats": ts}, stored
    )


@dataclass
class World:
    client: TestClient[Any]
    online: FakeOnline
    stored: FakeStored
    services: Services


@pytest.fixture
def world() -> Iterator[World]:
    online, stored = FakeOnline(), FakeStored()
    online.rows = {
        ("eta_v2", 1): _row(1, 20, 0.5, stored=_stored(0.25)),  # fresh stored score
        ("eta_v2", 2): _row(2, 30, 0.1, ts=STATS_TS + timedelta(minutes=5), stored=_stored(0.4)),  # newer
        ("eta_v2", 3): _row(3, 10, 0.2, stored=_stored(0.9, run_id="run-killed")),  # killed mid-publish
    }
    stored.latest_scores = {1: _stored(0.25), 3: _stored(0.3)}
    settings = Settings(api_keys=SecretStr(KEY), max_entities_per_request=5)
    prediction = PredictionService(
        name="eta",
        online=online, stored=stored, layout=ReadLayout(project="p", service=SERVICE, predictions=SCORES),
        max_staleness_s=86_400, model=MODEL, clock=lambda: NOW,
    )  # fmt: skip
    push = PushService(service=SERVICE, offline=stored, online=online, clock=lambda: NOW)
    models = ServedModels({"eta": prediction})
    services = Services(settings=settings, models=models, push=push, probe=FakeProbe(online, stored))
    with TestClient(create_app(services=services)) as client:
        yield World(client, online, stored, services)


def test_fresh_stored_score_is_served_as_batch(world: World) -> None:
    item = world.client.post("/v1/predict", json={"entities": [{"driver_id": 1}]}).json()["predictions"][0]
    assert (item["score"], item["source"], item["reason"], item["degraded"]) == (
        0.25,
        "batch",
        "batch_fresh",
        False,
    )
    assert item["entity"] == {"driver_id": 1}
    assert item["batch_run_id"] == "run-1"
    assert item["staleness_s"] == (NOW - RUN_AT).total_seconds()


def test_newer_features_are_rescored_live_with_the_loaded_model(world: World) -> None:
    item = world.client.get("/v1/predict/eta", params={"driver_id": 2}).json()
    assert (item["source"], item["reason"], item["model_version"]) == ("live", "features_newer", "eta-v7")
    assert item["score"] == pytest.approx(_live(30, 0.1), abs=1e-15)


def test_a_stored_score_of_an_unpublished_run_is_replaced_from_postgresql(world: World) -> None:
    item = world.client.get("/v1/predict/eta", params={"driver_id": 3}).json()
    assert (item["score"], item["batch_run_id"], item["reason"]) == (0.3, "run-1", "batch_fresh")


def test_unknown_entities_get_an_error_item_and_the_others_are_served(world: World) -> None:
    response = world.client.post("/v1/predict", json={"entities": [{"driver_id": 77}, {"driver_id": 1}]})
    assert response.status_code == 200
    unknown, known = response.json()["predictions"]
    assert unknown == {"entity": {"driver_id": 77}, "error": "unknown_entity"}
    assert (known["entity"], known["score"]) == ({"driver_id": 1}, 0.25)
    single = world.client.get("/v1/predict/eta", params={"driver_id": 77})
    assert single.status_code == 404
    assert single.json()["detail"] == "unknown driver_id: 77"


def test_the_schema_documents_error_items(world: World) -> None:
    schema = world.client.get("/schema/openapi.json").json()
    assert {"PredictionItem", "PredictResponse"} <= set(schema["components"]["schemas"])
    item = schema["components"]["schemas"]["PredictionItem"]
    assert item["required"] == ["entity"]
    assert {"error", "score", "reason"} <= set(item["properties"])


def test_online_store_down_serves_stored_scores_degraded(world: World) -> None:
    world.online.down = True
    item = world.client.get("/v1/predict/eta", params={"driver_id": 1}).json()
    assert (item["source"], item["reason"], item["degraded"]) == ("batch", "online_unavailable", True)
    ready = world.client.get("/health/ready").json()
    assert (ready["redis"], ready["postgresql"], ready["ready"]) == ("down", "ok", True)
    assert datetime.fromisoformat(ready["checked_at"]) > NOW - timedelta(days=365)
    missing = world.client.get("/v1/predict/eta", params={"driver_id": 2})
    assert missing.status_code == 503
    assert "Redis is unreachable" in missing.json()["detail"]
    mixed = world.client.post("/v1/predict", json={"entities": [{"driver_id": 2}, {"driver_id": 1}]}).json()
    assert mixed["predictions"][0] == {"entity": {"driver_id": 2}, "error": "no_stored_score"}
    assert mixed["predictions"][1]["reason"] == "online_unavailable"


def test_both_stores_down_is_503(world: World) -> None:
    world.online.down = world.stored.down = True
    response = world.client.get("/v1/predict/eta", params={"driver_id": 1})
    assert response.status_code == 503
    assert "both stores are unreachable" in response.json()["detail"]
    assert world.client.get("/health/ready").status_code == 503


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entities": [{"customer_id": 1}]}, "entities[0]"),
        ({"entities": [{"driver_id": i} for i in range(6)]}, "entities"),
        ({"entities": []}, "entities"),
        ({"entities": [{"driver_id": 1}], "mode": "sometimes"}, "mode"),
    ],
)
def test_bad_requests_are_400_naming_the_field(world: World, body: dict[str, Any], field: str) -> None:
    response = world.client.post("/v1/predict", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]


def test_both_prediction_routes_record_their_latency(world: World) -> None:
    def count(method: str, status: str) -> float:
        histogram = PREDICT_LATENCY.labels(f"{method} /v1/predict", status)
        return sum(
            sample.value
            for sample in next(iter(histogram.collect())).samples
            if sample.name.endswith("_count")
        )

    before = count("GET", "ok"), count("GET", "error"), count("POST", "ok")
    world.client.get("/v1/predict/eta", params={"driver_id": 1})
    world.client.get("/v1/predict/eta", params={"driver_id": "abc"})
    world.client.post("/v1/predict", json={"entities": [{"driver_id": 1}]})
    assert (count("GET", "ok"), count("GET", "error"), count("POST", "ok")) == (
        before[0] + 1, before[1] + 1, before[2] + 1,
    )  # fmt: skip


def test_push_appends_offline_then_writes_online(world: World) -> None:
    row = {"driver_id": 9, "ts": "2026-05-04T11:59:00+00:00", "trips": 3, "rating": 4.5}
    response = world.client.post("/v1/push/stats_push", json={"rows": [row]}, headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "push_source": "stats_push",
        "view": "driver_stats",
        "rows": 1,
        "written_online": 1,
        "online": "written",
    }
    assert world.stored.outbox == {}
    assert world.stored.appended[0].records[0][0] == 9
    assert world.online.written[0].entity_ids.tolist() == [9]


def test_push_faults_write_nothing(world: World) -> None:
    headers = {"X-API-Key": KEY}
    bad = {"driver_id": 9, "ts": "2026-05-04T11:59:00+00:00", "trips": "three", "rating": 4.5}
    response = world.client.post("/v1/push/stats_push", json={"rows": [bad]}, headers=headers)
    assert response.status_code == 400
    assert "rows[0].trips" in response.json()["detail"]
    assert world.client.post("/v1/push/nope", json={"rows": [bad]}, headers=headers).status_code == 404
    assert world.client.post("/v1/push/stats_push", json={"rows": [bad]}).status_code == 401
    world.stored.down = True
    good = {**bad, "trips": 3}
    down = world.client.post("/v1/push/stats_push", json={"rows": [good]}, headers=headers)
    assert down.status_code == 503
    assert world.stored.appended == []
    assert world.online.written == []
    world.stored.down, world.online.down = False, True
    pending = world.client.post("/v1/push/stats_push", json={"rows": [good]}, headers=headers)
    assert pending.status_code == 200, pending.text
    assert (pending.json()["online"], pending.json()["written_online"]) == ("pending", 0)
    assert len(world.stored.appended) == 1
    assert list(world.stored.outbox) == [1]


RIDERS = ViewSpec(
    "rider_stats",
    "riders",
    EntityKey.single("rider_id"),
    "ts",
    None,
    0,
    (FeatureSpec("trips", "int64"), FeatureSpec("rating", "float64")),
)
CHURN_SCORES = ViewSpec(
    "churn_scores", "(select 1)", EntityKey.single("rider_id"), "scored_at", None, 0, SCORES.features
)
CHURN_SERVICE = ServiceSpec("churn_v1", (RIDERS,), ("rider_stats:trips", "rider_stats:rating"))


def test_two_models_are_served_by_name(world: World) -> None:
    """With a second model (other feature service, other join key) the request names its model; each answer
    comes from that model's own stored scores and features."""
    churn_model = LoadedModel(
        version="churn-v1", model_name="churn", feature_refs=CHURN_SERVICE.refs, estimator=_Sum(), sha256="",
        metrics={}, created_at=NOW,
    )  # fmt: skip
    world.online.rows[("churn_v1", 1)] = OnlineRow(
        1, {"rider_stats:trips": 5, "rider_stats:rating": 0.3}, {"rider_stats": STATS_TS}, None
    )
    world.services.models.put(
        "churn",
        PredictionService(
            name="churn", online=world.online, stored=world.stored,
            layout=ReadLayout(project="p", service=CHURN_SERVICE, predictions=CHURN_SCORES),
            max_staleness_s=86_400, model=churn_model, clock=lambda: NOW,
        ),
    )  # fmt: skip
    ambiguous = world.client.post("/v1/predict", json={"entities": [{"driver_id": 1}]})
    assert ambiguous.status_code == 400
    assert ambiguous.json()["detail"].startswith("model: required")
    churn = world.client.post("/v1/predict", json={"model": "churn", "entities": [{"rider_id": 1}]}).json()
    assert churn["model"] == "churn"
    assert (churn["predictions"][0]["reason"], churn["predictions"][0]["model_version"]) == (
        "batch_missing",
        "churn-v1",
    )
    assert churn["predictions"][0]["score"] == pytest.approx(_live(5, 0.3), abs=1e-15)
    eta = world.client.get("/v1/predict/eta", params={"driver_id": 1}).json()
    assert (eta["score"], eta["model_version"]) == (0.25, "eta-v7")
    wrong_key = world.client.get("/v1/predict/churn", params={"driver_id": 1})
    assert wrong_key.status_code == 400
    assert "driver_id" in wrong_key.json()["detail"]
    unknown = world.client.post("/v1/predict", json={"model": "nope", "entities": [{"rider_id": 1}]})
    assert unknown.status_code == 404
    assert "churn, eta" in unknown.json()["detail"]


@pytest.mark.parametrize(
    "raw", ["9223372036854775808", "-9223372036854775809", "+42", "4_2", " 42", "٤٢", "1e3"]
)
def test_get_keys_are_strict_and_bounded(world: World, raw: str) -> None:
    """A join key value the key's kind cannot hold, or that only Python's int() would take, is a 400."""
    response = world.client.get("/v1/predict/eta", params={"driver_id": raw})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("driver_id:")


def test_post_keys_are_bounded(world: World) -> None:
    response = world.client.post("/v1/predict", json={"entities": [{"driver_id": 2**63}]})
    assert response.status_code == 400, response.text
    assert "entities[0]" in response.json()["detail"]


def test_a_body_nested_too_deeply_is_400(world: World) -> None:
    """A body deeper than the decoder goes (100,000 `[`) is the client's mistake, not a 500."""
    response = world.client.post(
        "/v1/predict", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "body: JSON nested too deeply"


@pytest.mark.parametrize("value", ["1", 1.0, True, None, [1]])
def test_join_keys_must_be_json_integers(world: World, value: object) -> None:
    """No coercion: "1", 1.0 and true are not the integer 1."""
    response = world.client.post("/v1/predict", json={"entities": [{"driver_id": value}]})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("entities[0].driver_id: expected an integer")


def test_bodies_must_say_json(world: World) -> None:
    """A JSON body sent as text/plain is a 415 naming the content type, and nothing is served from it."""
    response = world.client.post(
        "/v1/predict", content=b'{"entities": [{"driver_id": 1}]}', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "content-type: expected application/json, got text/plain"


def _steering_report(report_id: int = 5, *, acked: bool = False) -> SteeringReport:
    return SteeringReport(
        model_name="eta", report_id=report_id, report_at=RUN_AT, model_version="eta-v7", status="breach",
        skewed_refs=frozenset({"driver_stats:trips"}), parity_breached=False,
        acked_at=NOW if acked else None, acked_by="ana" if acked else None,
    )  # fmt: skip


def test_steering_note_only_when_a_policy_row_matches(world: World) -> None:
    """Policy off (or no report): answers are exactly as before, without a `steering` field. Annotate: the
    newer-features entity stays live (features_newer) and names the row (`applied: false`); enforce: it is
    served from its stored score (online_skewed, `applied: true`); the untouched entity never has a note."""
    prediction = world.services.models.get("eta")
    prediction.skew_report = _steering_report()
    post = {"entities": [{"driver_id": 1}, {"driver_id": 2}]}
    plain = world.client.post("/v1/predict", json=post).json()["predictions"]
    assert all("steering" not in item for item in plain)  # the fixture's policy is off
    prediction.skew_policy = SkewPolicy.ANNOTATE
    fresh, newer = world.client.post("/v1/predict", json=post).json()["predictions"]
    assert "steering" not in fresh
    assert (newer["source"], newer["reason"]) == ("live", "features_newer")
    assert newer["steering"] == {
        "policy": "annotate", "reason": "online_skewed", "applied": False, "report_id": 5,
        "report_at": RUN_AT.isoformat(),
    }  # fmt: skip
    prediction.skew_policy = SkewPolicy.ENFORCE
    newer = world.client.get("/v1/predict/eta", params={"driver_id": 2}).json()
    assert (newer["source"], newer["reason"], newer["score"]) == ("batch", "online_skewed", 0.4)
    assert newer["steering"]["applied"] is True
    prediction.skew_report = _steering_report(acked=True)  # an ack stops it (the default)
    newer = world.client.get("/v1/predict/eta", params={"driver_id": 2}).json()
    assert (newer["reason"], "steering" in newer) == ("features_newer", False)


class _FailingSync(SteeringSync):
    def __init__(self, reports: dict[str, SteeringReport] | None) -> None:
        super().__init__(engine=None, default_breach=0.01)  # type: ignore[arg-type]  # _read is replaced
        self.reports = reports

    def _read(self, names: list[str]) -> dict[str, SteeringReport]:
        if self.reports is None:
            raise OSError("connection refused")
        return self.reports


def test_steering_refresh_keeps_the_last_state_and_logs_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A refresh hands each model its newest report; a failing read keeps the last one and warns once until
    a read succeeds again."""
    import anyio

    prediction = world.services.models.get("eta")
    prediction.skew_policy = SkewPolicy.ENFORCE
    sync = _FailingSync({"eta": _steering_report()})
    anyio.run(sync.refresh, world.services.models)
    assert prediction.steering.reason is Reason.ONLINE_SKEWED
    sync.reports = None
    with caplog.at_level("WARNING", logger="service.steering_sync"):
        for _ in range(3):
            anyio.run(sync.refresh, world.services.models)
    assert prediction.skew_report == _steering_report()
    assert [r.message for r in caplog.records].count(
        "skew steering not refreshed (keeping the last known state): connection refused"
    ) == 1
    sync.reports = {}
    anyio.run(sync.refresh, world.services.models)
    assert prediction.skew_report is None
    assert prediction.steering.reason is None


def test_provenance_names_the_kind_of_run_that_stored_the_score(world: World) -> None:
    """A stored score says which kind of run produced it: `batch` for a known batch run, `stream` for a
    stream run the service had never seen (looked up by id, then remembered); a live answer says null."""
    world.stored.stream_runs.add("stream-7")
    world.online.rows[("eta_v2", 4)] = _row(4, 20, 0.5, stored=_stored(0.6, run_id="stream-7"))
    body = world.client.post(
        "/v1/predict", json={"entities": [{"driver_id": 1}, {"driver_id": 4}, {"driver_id": 2}]}
    ).json()
    batch, stream, live = body["predictions"]
    assert (batch["run_kind"], batch["reason"]) == ("batch", "batch_fresh")
    assert (stream["run_kind"], stream["score"], stream["batch_run_id"]) == ("stream", 0.6, "stream-7")
    assert (live["source"], live["run_kind"]) == ("live", None)
    world.stored.stream_runs.clear()  # remembered: not asked again
    again = world.client.get("/v1/predict/eta", params={"driver_id": 4}).json()
    assert (again["run_kind"], again["score"]) == ("stream", 0.6)


def test_the_schema_documents_run_kind(world: World) -> None:
    """The OpenAPI schema of an answer item documents `run_kind` as batch, stream or null."""
    item = world.client.get("/schema/openapi.json").json()["components"]["schemas"]["PredictionItem"]
    assert "run_kind" in item["properties"]
    assert "stream" in str(item["properties"]["run_kind"])
