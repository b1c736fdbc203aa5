"""The prediction API on real stores: blend decisions with provenance, push, model swap, degraded modes,
and a clear 4xx for every client mistake."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from core.batch.publish import PublishBatch, publish_rows
from core.features.snapshots import service_specs
from core.online.store import OnlineStore
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_PREDICTIONS_VIEW
from tests.integration.service_world import API_KEY, World, build_world, register_and_promote

HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """Seeded, materialized, a promoted model and a published batch run."""
    return build_world(settings, stores, engine)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient[Any]]:
    """The app with its lifespan running."""
    with TestClient(create_app(world.settings)) as test_client:
        yield test_client


def _push_row(customer_id: int, when: datetime, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "customer_id": customer_id,
        "event_timestamp": when.isoformat(),
        "txn_count_24h": 40,
        "txn_amount_24h": 9000.0,
        "max_amount_24h": 4000.0,
        "txn_count_7d": 90,
        "avg_amount_30d": 120.0,
        "foreign_txn_ratio_7d": 0.9,
        "distinct_merchants_7d": 30,
    }
    row.update(overrides)
    return row


def _offline_rows(stores: Stores, customer_id: int) -> int:
    with psycopg.connect(stores.postgres.url()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM features.customer_txn_stats WHERE customer_id = %s", (customer_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_ready_after_warm_up(client: TestClient[Any]) -> None:
    """Readiness is 200 with the loaded model and both stores reported up."""
    body = client.get("/health/ready").json()
    assert body["ready"] is True
    assert body["redis"] == "ok"
    assert body["postgresql"] == "ok"
    assert body["models"]["customer_risk"]
    assert client.get("/health/live").json() == {"status": "live"}


def test_fresh_batch_scores_are_served_with_provenance(client: TestClient[Any], world: World) -> None:
    """Right after a batch run every entity is served from batch (batch_fresh), with the run's provenance."""
    response = client.post("/v1/predict", json={"entities": [{"customer_id": 1}, {"customer_id": 2}]})
    assert response.status_code == 200
    items = response.json()["predictions"]
    assert [item["entity"] for item in items] == [{"customer_id": 1}, {"customer_id": 2}]
    for item in items:
        assert item["source"] == "batch"
        assert item["reason"] == "batch_fresh"
        assert item["degraded"] is False
        assert item["batch_run_id"] == str(world.run.run_id)
        assert item["model_version"] == world.run.model_version
        assert set(item["feature_timestamps"]) == {"customer_profile", "customer_txn_stats"}
        assert 0 <= item["staleness_s"] < 3600
        assert 0.0 <= item["score"] <= 1.0
    single = client.get("/v1/predict/customer_risk", params={"customer_id": 1}).json()
    assert single["score"] == items[0]["score"]


def test_pushed_features_trigger_a_live_rescore(
    client: TestClient[Any], world: World, stores: Stores
) -> None:
    """A push newer than the batch snapshot: offline row appended, then the entity is re-scored live on it."""
    before = _offline_rows(stores, 3)
    pushed = client.post(
        "/v1/push/customer_txn_stats_push", json={"rows": [_push_row(3, datetime.now(UTC))]}, headers=HEADERS
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["written_online"] == 1
    assert _offline_rows(stores, 3) == before + 1
    item = client.get("/v1/predict/customer_risk", params={"customer_id": 3}).json()
    assert item["source"] == "live"
    assert item["reason"] == "features_newer"
    online = world.store.get_online_features(
        features=world.store.get_feature_service(world.settings.feature_service),
        entity_rows=[{"customer_id": 3}],
    ).to_dict()
    assert online["txn_count_24h"] == [40]
    forced = client.post("/v1/predict", json={"entities": [{"customer_id": 3}], "mode": "batch"}).json()
    assert forced["predictions"][0]["source"] == "batch"
    assert forced["predictions"][0]["score"] != item["score"]


def test_older_push_does_not_replace_newer_online_row(client: TestClient[Any], world: World) -> None:
    """Like Feast's online write, a pushed row older than the online one is kept offline but not served."""
    now = datetime.now(UTC)
    client.post("/v1/push/customer_txn_stats_push", json={"rows": [_push_row(4, now)]}, headers=HEADERS)
    old = client.post(
        "/v1/push/customer_txn_stats_push",
        json={"rows": [_push_row(4, now - timedelta(hours=1), txn_count_24h=1)]},
        headers=HEADERS,
    )
    assert old.json()["written_online"] == 0
    online = world.store.get_online_features(
        features=["customer_txn_stats:txn_count_24h"], entity_rows=[{"customer_id": 4}]
    )
    assert online.to_dict()["txn_count_24h"] == [40]


def test_stale_and_missing_and_forced_live(client: TestClient[Any], world: World) -> None:
    """max_staleness_s 0 re-scores live (batch_stale); mode live forces live; an unknown id is 404 naming it alone, an error item among others."""
    stale = client.post("/v1/predict", json={"entities": [{"customer_id": 5}], "max_staleness_s": 0}).json()
    assert (stale["predictions"][0]["source"], stale["predictions"][0]["reason"]) == ("live", "batch_stale")
    live = client.get("/v1/predict/customer_risk", params={"customer_id": 6, "mode": "live"}).json()
    assert (live["source"], live["reason"]) == ("live", "forced")
    unknown = client.get("/v1/predict/customer_risk", params={"customer_id": world.customers + 12345})
    assert unknown.status_code == 404
    assert str(world.customers + 12345) in unknown.json()["detail"]
    mixed = client.post(
        "/v1/predict", json={"entities": [{"customer_id": world.customers + 12345}, {"customer_id": 7}]}
    )
    assert mixed.status_code == 200
    first, second = mixed.json()["predictions"]
    assert first == {"entity": {"customer_id": world.customers + 12345}, "error": "unknown_entity"}
    assert second["entity"] == {"customer_id": 7}
    assert second["score"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entities": [{"customer_id": "x"}]}, "entities[0]"),
        ({"entities": []}, "entities"),
        ({}, "entities"),
        ({"entities": [{"customer_id": 1}], "mode": "fast"}, "mode"),
        ({"entities": [{"customer_id": 1}], "max_staleness_s": -1}, "max_staleness_s"),
        ({"entities": [{"id": 1}]}, "entities[0]"),
        ({"entities": [{"customer_id": 1}], "extra": True}, "extra"),
        ({"entities": [{"customer_id": i} for i in range(1001)]}, "entities"),
    ],
)
def test_bad_predict_requests_are_400_naming_the_field(
    client: TestClient[Any], body: dict[str, object], field: str
) -> None:
    """Wrong types, missing fields, unknown mode, negative staleness, too many entities: 400 naming the field."""
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert response.json()["status_code"] == 400


def test_oversized_body_and_bad_path_key(client: TestClient[Any]) -> None:
    """A body past the size limit is 413; a non-integer entity key in the path is 400 naming it."""
    huge = b'{"entities": [' + b'{"customer_id": 1},' * 80_000 + b'{"customer_id": 1}]}'
    response = client.post("/v1/predict", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert client.get("/v1/predict/customer_risk", params={"customer_id": "abc"}).status_code == 400


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"surprise": 1}, "unknown column"),
        ({"event_timestamp": "2026-11-30T10:00:00"}, "no timezone"),
        ({"txn_amount_24h": "lots"}, "expected a number"),
        ({"txn_count_24h": 1.5}, "expected an integer"),
    ],
)
def test_bad_push_rows_write_nothing(
    client: TestClient[Any], world: World, stores: Stores, row: dict[str, object], fragment: str
) -> None:
    """Unknown columns, naive timestamps, wrong types: 400 naming the row and field; nothing offline or online."""
    before_offline = _offline_rows(stores, 7)
    before_online = world.store.get_online_features(
        features=["customer_txn_stats:txn_count_24h"], entity_rows=[{"customer_id": 7}]
    ).to_dict()
    good = _push_row(8, datetime.now(UTC))
    response = client.post(
        "/v1/push/customer_txn_stats_push",
        json={"rows": [good, _push_row(7, datetime.now(UTC), **row)]},
        headers=HEADERS,
    )
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]
    assert "rows[1]" in response.json()["detail"]
    assert _offline_rows(stores, 7) == before_offline
    after_online = world.store.get_online_features(
        features=["customer_txn_stats:txn_count_24h"], entity_rows=[{"customer_id": 7}]
    ).to_dict()
    assert after_online == before_online


def test_nan_in_push_is_rejected(client: TestClient[Any]) -> None:
    """A NaN (not valid JSON, but some clients send it) is a 400, not a write."""
    body = b'{"rows": [{"customer_id": 9, "event_timestamp": "2026-11-30T10:00:00Z", "txn_amount_24h": NaN}]}'
    response = client.post(
        "/v1/push/customer_txn_stats_push",
        content=body,
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_write_routes_need_the_api_key(client: TestClient[Any]) -> None:
    """Push and job trigger without a valid key are 401; the OpenAPI schema declares the key scheme."""
    assert (
        client.post(
            "/v1/push/customer_txn_stats_push", json={"rows": [_push_row(1, datetime.now(UTC))]}
        ).status_code
        == 401
    )
    assert client.post("/v1/jobs/materialize/run", headers={"X-API-Key": "wrong"}).status_code == 401
    schema = client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    assert client.post("/v1/push/nope", json={"rows": [{}]}, headers=HEADERS).status_code == 404


def test_jobs_api_records_requests(client: TestClient[Any]) -> None:
    """A job request with the key is 202 and shows in the history; unknown jobs are 404."""
    requested = client.post("/v1/jobs/materialize/run", headers=HEADERS)
    assert requested.status_code == 202
    runs = client.get("/v1/jobs/runs").json()
    assert any(run["id"] == requested.json()["id"] and run["status"] == "requested" for run in runs["runs"])
    assert "deadline" in runs
    assert client.post("/v1/jobs/nope/run", headers=HEADERS).status_code == 404


def test_metrics_count_answers(client: TestClient[Any]) -> None:
    """/metrics exposes answers by source and reason, batch coverage and the loaded model."""
    client.get("/v1/predict/customer_risk", params={"customer_id": 1})
    text = client.get("/metrics").text
    assert 'tandem_predictions_total{model="customer_risk",reason="batch_fresh",source="batch"}' in text
    assert "tandem_batch_coverage_ratio" in text
    assert "tandem_model_loaded" in text


def test_scores_of_a_run_killed_mid_publish_are_never_served(
    client: TestClient[Any], world: World, stores: Stores
) -> None:
    """A run whose process died while publishing left its scores online: the API serves the previous
    published run's score for those entities (from PostgreSQL), never the unpublished one."""
    before = client.get("/v1/predict/customer_risk", params={"customer_id": 11}).json()
    assert before["batch_run_id"] == str(world.run.run_id)
    killed = uuid.uuid4()
    with psycopg.connect(stores.postgres.url()) as conn:
        conn.execute(
            "INSERT INTO tandem.prediction_runs (run_id, model_name, model_version, feature_service, as_of, status) "
            "SELECT %s, model_name, model_version, feature_service, now(), 'publishing' FROM tandem.prediction_runs "
            "WHERE run_id = %s",
            (killed, world.run.run_id),
        )
    _, view = service_specs(
        world.settings, stores, feature_service=DEMO_FEATURE_SERVICE, predictions_view=DEMO_PREDICTIONS_VIEW
    )
    online = OnlineStore.connect(stores.redis, project=world.settings.feast_project)
    try:
        publish_rows(
            online,
            view=view,
            batch=PublishBatch(
                entity_ids=np.array([11], dtype=np.int64),
                scores=np.array([0.999]),
                model_version=world.run.model_version,
                run_id=str(killed),
                snapshots=np.array(['{"customer_profile":null,"customer_txn_stats":null}'], dtype=object),
                scored_at=datetime.now(UTC),
            ),
            chunk_rows=10,
        )
    finally:
        online.close()
    after = client.get("/v1/predict/customer_risk", params={"customer_id": 11}).json()
    assert (after["source"], after["reason"]) == ("batch", "batch_fresh")
    assert after["batch_run_id"] == str(world.run.run_id)
    assert after["score"] == before["score"]
    assert after["score"] != 0.999


def test_promoting_another_model_swaps_without_dropping_requests(
    client: TestClient[Any], world: World, engine: Engine
) -> None:
    """After a new promotion the service swaps within a poll; stored scores of the old model become model_mismatch."""
    info = register_and_promote(engine, world.settings, world.store)
    deadline = time.monotonic() + 15
    seen: set[str] = set()
    while time.monotonic() < deadline:
        response = client.get("/v1/predict/customer_risk", params={"customer_id": 10})
        assert response.status_code == 200
        item = response.json()
        seen.add(item["reason"])
        if item["model_version"] == info.version:
            break
        time.sleep(0.05)
    assert item["model_version"] == info.version
    assert (item["source"], item["reason"]) == ("live", "model_mismatch")
    assert np.isfinite(item["score"])
