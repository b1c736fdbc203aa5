"""Two models in one deployment: one scheduler batch-predicts both, one API serves both by name, the checker
reports per model, and a `feast apply` that changes a spec reaches the running API without a restart.

The repo is a copy of the demo's with a second predictions view (`risk_small_predictions`), in a Feast
project of this module's own; the second model is demoted at the end so other modules never see it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from consistency.checker import run_skew_check
from core.batch.materialize import run_materialize
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.model.lifecycle import train_and_promote
from core.records.job_runs import list_job_runs
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.resolve import Stores
from scheduler.entry import run_job, serving
from scheduler.job_runner import JobRunner
from scheduler.jobs import default_jobs
from scheduler.registry import JobContext
from service.app import create_app
from tandem.demo.data import seed_demo_data

SECOND = "risk_small"
FIRST = "customer_risk"
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
SECOND_VIEW = f"""from entities import customer

from tandem.repo import predictions_view

{SECOND}_predictions = predictions_view("{SECOND}", entities=[customer])
"""


@dataclass(frozen=True)
class World:
    settings: Settings
    stores: Stores
    repo: Path
    batch_details: dict[str, Any]


@pytest.fixture(scope="module")
def world(
    settings: Settings, stores: Stores, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The copied repo applied in a fresh project, 200 customers seeded and materialized, both models trained
    and promoted, and one scheduled batch_predict run over both."""
    repo = tmp_path_factory.mktemp("repo") / "feature_repo"
    shutil.copytree(settings.feature_repo, repo, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "second_model.py").write_text(SECOND_VIEW)
    scoped = settings.model_copy(
        update={
            "feature_repo": repo,
            "feast_project": f"m{uuid.uuid4().hex[:10]}",
            "api_keys": SecretStr("many-models-key"),
            "model_poll_s": 0.2,
            "job_max_attempts": 1,
        }
    )
    assert f"{SECOND}_predictions" in apply_feature_repo(scoped, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=200, days=4, seed=29, end=END)
    run_materialize(scoped, stores, start=END - timedelta(days=10))
    store = open_feature_store(scoped, stores)
    train_and_promote(store, scoped, engine=engine, model_name=FIRST)
    train_and_promote(store, scoped, engine=engine, model_name=SECOND)
    runner = JobRunner(
        default_jobs(scoped).select("batch_predict"),
        JobContext(settings=scoped, stores=stores, engine=engine),
    )
    with serving(runner):
        run_job("batch_predict")
    with Session(engine) as session:
        batch = list_job_runs(session, job="batch_predict", model_name=SECOND, limit=1)[0]
    try:
        yield World(scoped, stores, repo, batch.details)
    finally:
        with Session(engine) as session, session.begin():  # other modules must never serve this model
            session.execute(
                update(ModelVersion).where(ModelVersion.model_name == SECOND).values(promoted=False)
            )


def test_one_scheduler_run_publishes_both_models(world: World) -> None:
    """One batch_predict job run scored every customer for each promoted model, each run its own."""
    models = world.batch_details["models"]
    assert {FIRST, SECOND} <= set(models)
    assert models[FIRST]["status"] == models[SECOND]["status"] == "succeeded"
    assert models[FIRST]["rows"] == models[SECOND]["rows"] == 200
    assert models[FIRST]["run_id"] != models[SECOND]["run_id"]


def test_one_api_serves_both_models_by_name(world: World) -> None:
    """Each model answers from its own stored scores; a request must name its model when two are served."""
    with TestClient(create_app(world.settings)) as client:
        ready = client.get("/health/ready").json()
        assert {FIRST, SECOND} <= set(ready["models"])
        answers = {}
        for model in (FIRST, SECOND):
            body = client.post("/v1/predict", json={"model": model, "entities": [{"customer_id": 5}]}).json()
            assert body["model"] == model
            answers[model] = body["predictions"][0]
            assert answers[model]["reason"] == "batch_fresh"
            assert answers[model]["batch_run_id"] == world.batch_details["models"][model]["run_id"]
        assert answers[FIRST]["model_version"] != answers[SECOND]["model_version"]
        single = client.get(f"/v1/predict/{SECOND}", params={"customer_id": 5}).json()
        assert single["score"] == answers[SECOND]["score"]
        ambiguous = client.post("/v1/predict", json={"entities": [{"customer_id": 5}]})
        assert ambiguous.status_code == 400
        assert "model" in ambiguous.json()["detail"]


def test_the_checker_reports_per_model(world: World) -> None:
    """check-skew of the second model: a report naming it, its parity computed with its own version."""
    report = run_skew_check(world.settings, world.stores, model_name=SECOND, sample=100, seed=1)
    assert report.model_name == SECOND
    assert report.parity["status"] == "ok"
    assert report.parity["unchanged"]["disagree"] == 0


def test_apply_reaches_a_running_api(world: World) -> None:
    """A TTL changed in the repo and applied while the API runs is what the API uses a few polls later."""
    view_file = world.repo / "customer_txn_stats.py"
    original = view_file.read_text()
    with TestClient(create_app(world.settings)) as client:
        served = client.app.state.tandem.models

        def ttl() -> int:
            views = {view.name: view for view in served.get(FIRST).service.views}
            return int(views["customer_txn_stats"].ttl_s)

        assert ttl() == 2 * 86_400
        view_file.write_text(original.replace("ttl=timedelta(days=2)", "ttl=timedelta(days=3)"))
        try:
            apply_feature_repo(world.settings, world.stores)
            deadline = time.monotonic() + 10
            while ttl() != 3 * 86_400 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ttl() == 3 * 86_400
            assert client.get(f"/v1/predict/{FIRST}", params={"customer_id": 5}).status_code == 200
        finally:
            view_file.write_text(original)
            apply_feature_repo(world.settings, world.stores)
