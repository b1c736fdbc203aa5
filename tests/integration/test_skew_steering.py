"""Skew steers serving, on real stores: with policy `enforce` a report whose breached view the model reads
makes `auto` answer the stored score (online_skewed) where the online features moved; `tandem skew ack`
stops it (live, features_newer, after the watcher's refresh); a parity breach prefers live; `annotate` only
names the row; the review pages and /metrics show what the policy does and since when."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.records.skew_models import FindingInfo, NewSkewReport
from core.records.skew_reports import get_report, save_report
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_MODEL
from tests.integration.service_world import API_KEY, World, build_world
from tests.servers import store_env

HEADERS = {"X-API-Key": API_KEY}
PUSHED = 3  # an entity whose online features get newer than its stored score
QUIET = 1  # an entity nobody touches (batch_fresh)
TXN = "customer_txn_stats"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """Seeded, materialized, a promoted model and a published batch run."""
    return build_world(settings, stores, engine)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient[Any]]:
    """The app with policy enforce (acknowledgements stop steering, the default)."""
    enforced = world.settings.model_copy(update={"skew_policy": "enforce"})
    with TestClient(create_app(enforced)) as test_client:
        yield test_client


def _txn_ref(engine: Engine) -> str:
    with Session(engine) as session:
        refs = session.scalar(
            select(ModelVersion.feature_refs).where(
                ModelVersion.model_name == DEMO_MODEL, ModelVersion.promoted
            )
        )
    assert refs
    return next(str(ref) for ref in refs if str(ref).startswith(f"{TXN}:"))


def _save(engine: Engine, world: World, *, skewed_ref: str | None, parity: str) -> int:
    """A report of the served model: `skewed_ref` with 10% wrong online values (threshold 1%), parity status."""
    now = datetime.now(UTC)
    findings = []
    if skewed_ref is not None:
        view, feature = skewed_ref.split(":", 1)
        findings.append(
            FindingInfo(
                feature_view=view,
                feature=feature,
                counts={"match": 90, "value_mismatch": 10},
                mismatch_rate=0.1,
                mean_abs_diff=1.0,
                max_abs_diff=2.0,
                psi=0.0,
                js_distance=0.0,
                status="breach",
            )
        )
    report = NewSkewReport(
        feature_service=DEMO_FEATURE_SERVICE,
        model_name=DEMO_MODEL,
        model_version=world.run.model_version,
        watermark=now,
        sample_size=100,
        entities_checked=100,
        status="breach",
        summary={"mismatch_rate": 0.1, "thresholds": {"mismatch_rate_breach": 0.01}},
        parity={
            "status": parity,
            "model_version": world.run.model_version,
            "tolerance": 1e-9,
            "counts": {"unchanged": 100},
            "unchanged": {"count": 100, "agree": 100, "disagree": 0, "max_abs_diff": 0.0},
            "changed": {"count": 0},
            "flagged": [],
        },
        findings=tuple(findings),
        created_at=now,
        finished_at=now,
    )
    with Session(engine) as session, session.begin():
        return save_report(session, report=report).id


def _answer(client: TestClient[Any], entity: int) -> dict[str, Any]:
    response = client.get("/v1/predict/customer_risk", params={"customer_id": entity})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait_for(client: TestClient[Any], entity: int, reason: str, *, within_s: float = 15.0) -> dict[str, Any]:
    """The entity's answer once its reason is `reason` (the watcher refreshes every model_poll_s)."""
    deadline = time.monotonic() + within_s
    while True:
        item = _answer(client, entity)
        if item["reason"] == reason:
            return item
        if time.monotonic() > deadline:
            raise AssertionError(f"still {item['reason']} after {within_s} s: {item}")
        time.sleep(0.1)


def _gauge(client: TestClient[Any], reason: str, name: str = "tandem_skew_steering_active") -> float:
    wanted = f'{name}{{model="{DEMO_MODEL}",reason="{reason}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    raise AssertionError(f"no {wanted.strip()} in /metrics")


def _tandem(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tandem"), *args],
        env={**os.environ, **store_env(world.settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _push(client: TestClient[Any], entity: int) -> None:
    row = {
        "customer_id": entity, "event_timestamp": datetime.now(UTC).isoformat(), "txn_count_24h": 40,
        "txn_amount_24h": 9000.0, "max_amount_24h": 4000.0, "txn_count_7d": 90, "avg_amount_30d": 120.0,
        "foreign_txn_ratio_7d": 0.9, "distinct_merchants_7d": 30,
    }  # fmt: skip
    pushed = client.post("/v1/push/customer_txn_stats_push", json={"rows": [row]}, headers=HEADERS)
    assert pushed.status_code == 200, pushed.text


@pytest.fixture(scope="module")
def skewed_report(client: TestClient[Any], world: World, engine: Engine) -> int:
    """PUSHED's features moved online (live, features_newer); then a report breaches a txn feature. A clean
    report first: other modules' reports of the same model share the session's database."""
    _save(engine, world, skewed_ref=None, parity="ok")
    _push(client, PUSHED)
    _wait_for(client, PUSHED, "features_newer")
    return _save(engine, world, skewed_ref=_txn_ref(engine), parity="ok")


def test_enforce_serves_the_stored_score_on_online_skew(
    client: TestClient[Any], world: World, skewed_report: int
) -> None:
    """With the breach read by the watcher, PUSHED is answered from its stored score (online_skewed, not
    degraded, the batch run's provenance, the report named); an untouched entity stays batch_fresh; the
    OpenAPI schema documents the steering note; the active gauge is 1."""
    item = _wait_for(client, PUSHED, "online_skewed")
    stored = client.post("/v1/predict", json={"entities": [{"customer_id": PUSHED}], "mode": "batch"}).json()[
        "predictions"
    ][0]
    assert item["source"] == "batch"
    assert item["degraded"] is False
    assert item["score"] == stored["score"]
    assert item["batch_run_id"] == str(world.run.run_id)
    assert item["steering"]["policy"] == "enforce"
    assert item["steering"]["reason"] == "online_skewed"
    assert item["steering"]["applied"] is True
    assert item["steering"]["report_id"] == skewed_report
    quiet = _answer(client, QUIET)
    assert (quiet["source"], quiet["reason"]) == ("batch", "batch_fresh")
    assert "steering" not in quiet
    schema = client.get("/schema/openapi.json").json()
    assert "SteeringNote" in schema["components"]["schemas"]
    assert _gauge(client, "online_skewed") == 1.0
    assert _gauge(client, "parity_breached") == 0.0


def test_pages_show_the_steering_and_since_when(client: TestClient[Any], skewed_report: int) -> None:
    """/skew names the policy, the model's steering reason and the report (with its time) that triggered it;
    /skew/{id} says the report steers its model now."""
    _wait_for(client, PUSHED, "online_skewed")
    listing = client.get("/skew").text
    assert 'id="steering"' in listing
    assert "<code>enforce</code>" in listing
    assert '<span class="badge breach">online_skewed</span>' in listing
    assert f'<a href="/skew/{skewed_report}">#{skewed_report}</a>' in listing
    page = client.get(f"/skew/{skewed_report}").text
    assert f"steering since report {skewed_report}" in page
    assert "stored scores preferred" in page
    overview = client.get("/v1/skew/steering", params={"model": DEMO_MODEL}).json()
    assert overview["policy"] == "enforce"
    assert [item["model"] for item in overview["models"]] == [DEMO_MODEL]
    mine = overview["models"][0]
    assert (mine["active"], mine["reason"], mine["report_id"]) == (True, "online_skewed", skewed_report)
    assert mine["since"] is not None


def test_cli_ack_stops_the_steering(
    client: TestClient[Any], world: World, engine: Engine, skewed_report: int
) -> None:
    """`tandem skew ack ID --by --comment` records the ack (the same record the API writes); after the
    watcher's refresh PUSHED is live again (features_newer, no steering note); the gauge drops to 0; the pages
    say the acknowledgement stopped it. A second ack, an unknown id and a blank name fail in one line."""
    _wait_for(client, PUSHED, "online_skewed")
    done = _tandem(world, "skew", "ack", str(skewed_report), "--by", "ana", "--comment", "known: replay")
    assert done.returncode == 0, done.stderr
    assert f"skew report {skewed_report}" in done.stdout
    assert "acknowledged by ana" in done.stdout
    with Session(engine) as session:
        report = get_report(session, report_id=skewed_report)
    assert (report.acked_by, report.ack_comment) == ("ana", "known: replay")
    item = _wait_for(client, PUSHED, "features_newer")
    assert item["source"] == "live"
    assert "steering" not in item
    assert _gauge(client, "online_skewed") == 0.0
    listing = client.get("/skew").text
    assert "stopped by ack" in listing
    page = client.get(f"/skew/{skewed_report}").text
    assert "The acknowledgement stopped the steering." in page
    after = next(m for m in client.get("/v1/skew/steering").json()["models"] if m["model"] == DEMO_MODEL)
    assert (after["active"], after["stopped_by_ack"], after["ack"]["by"]) == (False, True, "ana")
    assert "acknowledged by ana" in page

    again = _tandem(world, "skew", "ack", str(skewed_report), "--by", "bo")
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1
    assert "already acknowledged by ana" in again.stderr
    assert "--replace" in again.stderr
    unknown = _tandem(world, "skew", "ack", "987654321", "--by", "ana")
    assert unknown.returncode == 1
    assert "skew report 987654321 does not exist" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    blank = _tandem(world, "skew", "ack", str(skewed_report), "--by", "  ")
    assert blank.returncode == 2
    assert "--by" in blank.stderr
    assert len(blank.stderr.strip().splitlines()) == 1
    replaced = _tandem(world, "skew", "ack", str(skewed_report), "--by", "bo", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    shown = _tandem(world, "skew", "show", str(skewed_report))
    assert shown.returncode == 0, shown.stderr
    assert f"not steered: report {skewed_report}" in shown.stdout
    assert "was acknowledged by bo" in shown.stdout


def test_parity_breach_prefers_live_and_annotate_only_names_it(
    client: TestClient[Any], world: World, engine: Engine
) -> None:
    """A newer report with a parity breach (no view skewed): under enforce the untouched entity is re-scored
    live (parity_breached); an API on policy annotate answers it from batch (batch_fresh) with the note
    `applied: false`; its advised gauge is 1."""
    report_id = _save(engine, world, skewed_ref=None, parity="breach")
    item = _wait_for(client, QUIET, "parity_breached")
    assert item["source"] == "live"
    assert item["steering"] == {
        "policy": "enforce",
        "reason": "parity_breached",
        "applied": True,
        "report_id": report_id,
        "report_at": item["steering"]["report_at"],
    }
    annotated = world.settings.model_copy(update={"skew_policy": "annotate"})
    with TestClient(create_app(annotated)) as other:
        plain = _answer(other, QUIET)
        assert (plain["source"], plain["reason"]) == ("batch", "batch_fresh")
        assert plain["steering"]["policy"] == "annotate"
        assert plain["steering"]["reason"] == "parity_breached"
        assert plain["steering"]["applied"] is False
        assert _gauge(other, "parity_breached", "tandem_skew_steering_advised") == 1.0
