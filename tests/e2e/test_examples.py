"""Each Feast repo of examples/ end to end on the real stores, through the commands its README gives.

Per example: a private database and Feast project on the session's servers; `tandem apply`, the example's
data script, a model (trained by `tandem train`, or trained by the example's own script with plain Feast and
registered with `tandem models register`), `tandem materialize`, `tandem batch-predict`, `tandem serve` on a
free port, a predict for an untouched entity, a push for another one and its live re-score, then
`tandem check-skew`. Every command runs in a subprocess from the project root, as a user types it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.settings import PROJECT_ROOT
from tests.conftest import TEST_SIGNING_KEY
from tests.servers import free_port, private_database, purge_feast_project, server_endpoints

BIN = Path(sys.executable).parent
API_KEY = "examples-e2e-key"
UNKNOWN_ID = 99  # no example has an entity with this id


@dataclass(frozen=True)
class Example:
    """One example: where it lives, how its model is made, which entities the journey touches."""

    folder: str
    model: str
    feature_service: str
    join_key: str
    entities: int
    data_args: tuple[str, ...]
    untouched: int
    pushed: int
    push_source: str
    push_features: dict[str, Any]

    @property
    def repo(self) -> Path:
        """The example's Feast repo (absolute: TANDEM_FEATURE_REPO as the README exports it)."""
        return PROJECT_ROOT / "examples" / self.folder / "feature_repo"


EXAMPLES = {
    "driver_ranking": Example(
        folder="driver_ranking",
        model="driver_ranking",
        feature_service="driver_activity_v1",
        join_key="driver_id",
        entities=300,
        data_args=("--drivers", "300", "--days", "3"),
        untouched=1001,
        pushed=1002,
        push_source="driver_stats_push",
        push_features={"conv_rate": 0.95, "acc_rate": 0.91, "avg_daily_trips": 820},
    ),
    "bike_stations": Example(
        folder="bike_stations",
        model="station_demand",
        feature_service="station_demand_v1",
        join_key="station_id",
        entities=200,
        data_args=("--stations", "200", "--days", "3"),
        untouched=101,
        pushed=102,
        push_source="station_status_push",
        push_features={"bikes_available": 30, "docks_available": 2, "temperature_c": 21.5, "rain_mm": 0.0},
    ),
}


@dataclass
class Journey:
    """What each step of an example's journey printed or answered."""

    example: Example
    database: PostgresEndpoint
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    answers: dict[str, httpx.Response] = field(default_factory=dict)


class StepFailedError(AssertionError):
    """A command of the journey exited non-zero: its command line and the end of its output."""


def _run(
    journey: Journey | StoreStockJourney,
    step: str,
    args: list[str],
    env: dict[str, str],
    *,
    check: bool = True,
) -> str:
    done = subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    journey.outputs[step] = done
    if check and done.returncode != 0:
        raise StepFailedError(
            f"{shlex.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}\n{done.stdout[-3000:]}"
        )
    return done.stdout


def _tandem(*args: str) -> list[str]:
    return [str(BIN / "tandem"), *args]


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _exported(lines: str) -> dict[str, str]:
    """The variables of `tandem env`'s `export NAME=value` lines, as `eval` would set them."""
    found: dict[str, str] = {}
    for line in lines.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            found[name] = value
    return found


def _make_model(journey: Journey, env: dict[str, str], models_dir: Path) -> None:
    """`tandem train` (driver_ranking), or the example's own training script then `tandem models register`."""
    example = journey.example
    if example.folder == "driver_ranking":
        command = (
            f"train --name {example.model} --feature-service {example.feature_service} "
            "--labels public.driver_ranking_labels --label-column label --promote"
        )
        _run(journey, "model", _tandem(*shlex.split(command)), env)
        return
    feast_env = env | _exported(_run(journey, "env", _tandem("env"), env))
    artifact = models_dir / f"{example.model}.joblib"
    script = _python(f"examples/{example.folder}/train.py", "--out", str(artifact))
    _run(journey, "train_script", script, feast_env)
    command = (
        f"models register {shlex.quote(str(artifact))} --name {example.model} "
        f"--feature-service {example.feature_service} --task regression --promote"
    )
    _run(journey, "model", _tandem(*shlex.split(command)), env)


def _wait_ready(client: httpx.Client, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StepFailedError(
                f"tandem serve exited {server.returncode}: {server.communicate()[1][-3000:]}"
            )
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise StepFailedError(f"tandem serve not ready after 90 s: {client.get('/health/ready').text}")


@contextmanager
def _served(env: dict[str, str]) -> Iterator[httpx.Client]:
    """`tandem serve` on a free port with the example's environment, a client once it is ready; stopped after."""
    port = free_port()
    server = subprocess.Popen(
        _tandem("serve", "--port", str(port)),
        cwd=PROJECT_ROOT,
        env=env | {"TANDEM_API_KEYS": API_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client, server)
            yield client
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _serve_and_ask(journey: Journey, env: dict[str, str]) -> None:
    """`tandem serve`, then: the untouched entity, a push for another, and both (plus an unknown one) again."""
    example = journey.example
    with _served(env) as client:
        key = example.join_key
        journey.answers["get_untouched"] = client.get(
            f"/v1/predict/{example.model}", params={key: example.untouched}
        )
        row = {
            key: example.pushed,
            "event_timestamp": datetime.now(UTC).isoformat(),
            **example.push_features,
        }
        journey.answers["push"] = client.post(
            f"/v1/push/{example.push_source}", json={"rows": [row]}, headers={"X-API-Key": API_KEY}
        )
        entities = [{key: example.untouched}, {key: example.pushed}, {key: UNKNOWN_ID}]
        journey.answers["predict"] = client.post(
            "/v1/predict", json={"model": example.model, "entities": entities}
        )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresEndpoint, RedisEndpoint]]:
    """The session's PostgreSQL and Redis servers (TANDEM_TEST_* URLs, testcontainers or the embedded stack)."""
    with server_endpoints(tmp_path_factory.mktemp("stack")) as endpoints:
        yield endpoints


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def journey(
    request: pytest.FixtureRequest,
    servers: tuple[PostgresEndpoint, RedisEndpoint],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Journey]:
    """One example's README, run from an empty database to a skew-checked model."""
    example = EXAMPLES[request.param]
    admin, redis_endpoint = servers
    project = f"ex{uuid.uuid4().hex[:10]}"
    with private_database(admin) as database:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")},
            "TANDEM_POSTGRES_URL": database.url(),
            "TANDEM_REDIS_URL": redis_endpoint.url(),
            "TANDEM_FEAST_PROJECT": project,
            "TANDEM_FEATURE_REPO": str(example.repo),
            "TANDEM_HOME": str(tmp_path_factory.mktemp("home")),
            "TANDEM_MODEL_SIGNING_KEY": TEST_SIGNING_KEY,  # configured stores: the README's key
            "COLUMNS": "200",  # rich wraps nothing at this width: lines stay greppable
        }
        journey = Journey(example=example, database=database)
        try:
            _run(journey, "apply", _tandem("apply"), env)
            _run(journey, "seed", _python(f"examples/{example.folder}/data.py", *example.data_args), env)
            _make_model(journey, env, tmp_path_factory.mktemp("models"))
            _run(journey, "materialize", _tandem("materialize"), env)
            _run(journey, "batch_predict", _tandem("batch-predict", "--model", example.model), env)
            _serve_and_ask(journey, env)
            _run(journey, "check_skew", _tandem("check-skew", "--model", example.model), env, check=False)
            yield journey
        finally:
            purge_feast_project(redis_endpoint, project)


def _predictions(journey: Journey) -> list[dict[str, Any]]:
    answer = journey.answers["predict"]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == journey.example.model
    items: list[dict[str, Any]] = body["predictions"]
    return items


def test_apply_registers_the_repo_and_its_predictions_view(journey: Journey) -> None:
    """`tandem apply` registers the example's feature view and the model's predictions view, without warnings."""
    out = journey.outputs["apply"].stdout
    assert "feast apply: 2 feature views registered" in out, out
    assert f"{journey.example.model}_predictions" in out
    assert "warning:" not in out


def test_model_is_trained_or_registered_measurably_and_promoted(journey: Journey) -> None:
    """The model is registered and promoted, and its holdout metric shows it learnt the known relation."""
    example = journey.example
    out = journey.outputs["model"].stdout
    assert re.search(rf"registered {example.model} version \S+ .*: promoted", out), out
    if example.folder == "driver_ranking":
        auc = re.search(r"ROC AUC\s*\S\s*([0-9.]+)", out)
        assert auc is not None, out
        assert float(auc.group(1)) > 0.7
    else:
        r2 = re.search(r"holdout R2 ([0-9.-]+)", journey.outputs["train_script"].stdout)
        assert r2 is not None, journey.outputs["train_script"].stdout
        assert float(r2.group(1)) > 0.8
        inputs = "bikes_available, docks_available, temperature_c, rain_mm"  # checked against the service
        assert inputs in out


def test_batch_predict_publishes_every_entity(journey: Journey) -> None:
    """One published run of the model holding a score for every entity of the example's data."""
    example = journey.example
    assert f"{example.model}: published run" in journey.outputs["batch_predict"].stdout
    with psycopg.connect(journey.database.url()) as conn:
        runs = conn.execute(
            "SELECT r.status, r.rows, count(p.*) FROM tandem.prediction_runs r "
            "JOIN tandem.batch_predictions p ON p.run_id = r.run_id WHERE r.model_name = %s "
            "GROUP BY r.run_id, r.status, r.rows",
            (example.model,),
        ).fetchall()
    assert runs == [("published", example.entities, example.entities)]


def test_untouched_entity_is_served_from_the_batch_run(journey: Journey) -> None:
    """An entity whose features did not move since the batch run gets its stored score: `batch_fresh`."""
    example = journey.example
    single = journey.answers["get_untouched"]
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["entity"] == {example.join_key: example.untouched}
    assert (body["source"], body["reason"], body["degraded"]) == ("batch", "batch_fresh", False)
    first = _predictions(journey)[0]
    assert (first["source"], first["reason"], first["score"]) == ("batch", "batch_fresh", body["score"])


def test_pushed_entity_is_rescored_live_and_unknown_one_is_named(journey: Journey) -> None:
    """After a push, that entity is re-scored live (`features_newer`); an unknown id gets its own error item."""
    example = journey.example
    push = journey.answers["push"]
    assert push.status_code in (200, 201), push.text
    assert push.json()["written_online"] == 1
    _, pushed, unknown = _predictions(journey)
    assert pushed["entity"] == {example.join_key: example.pushed}
    assert (pushed["source"], pushed["reason"]) == ("live", "features_newer")
    assert isinstance(pushed["score"], float)
    assert unknown == {"entity": {example.join_key: UNKNOWN_ID}, "error": "unknown_entity"}


def test_check_skew_finds_parity_on_every_unchanged_entity(journey: Journey) -> None:
    """`tandem check-skew --model NAME` exits 0: report ok, parity ok, 0 disagreements on unchanged entities,
    and the pushed entity counted as changed."""
    done = journey.outputs["check_skew"]
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    unchanged = journey.example.entities - 1
    assert f"unchanged since the batch run: {unchanged:,} agree, 0 disagree" in out, out
    assert "changed since the batch run: 1 entities" in out
    assert re.search(r"report \d+\s+ok .*parity ok", out), out


# examples/store_stock: two models on one deployment, a string key (store_code) and a composite key
# (store_code, sku), a categorical String feature and a Bool one; its own journey, since it serves two models.
STORE_STOCK_DATA_ARGS = ("--stores", "60", "--products", "20", "--days", "3")
UNKNOWN_SHELF = {"store_code": "Zürich-1", "sku": UNKNOWN_ID}  # both parts exist, never together


@dataclass(frozen=True)
class ServedModel:
    """One model of examples/store_stock: its service, entity count, and the entities the journey touches."""

    feature_service: str
    entities: int
    untouched: dict[str, Any]
    pushed: dict[str, Any]
    unknown: dict[str, Any]
    push_source: str
    table: str
    push_features: dict[str, Any]


STORE_STOCK_MODELS = {
    "store_visits": ServedModel(  # keyed by store_code (STRING), trained by train.py, registered
        feature_service="store_traffic_v1",
        entities=60,
        untouched={"store_code": "S-001"},
        pushed={"store_code": "Zürich-1"},
        unknown={"store_code": "S-999"},
        push_source="store_traffic_push",
        table="public.store_traffic",
        push_features={"footfall": 420, "region": "alps", "avg_basket": 31.5},
    ),
    "stockout_risk": ServedModel(  # keyed by (store_code, sku): composite; trained by tandem train
        feature_service="stockout_v1",
        entities=60 * 20,
        untouched={"store_code": "Zürich-1", "sku": 4001},
        pushed={"store_code": "S-002", "sku": 4002},
        unknown=UNKNOWN_SHELF,
        push_source="shelf_status_push",
        table="public.shelf_status",
        push_features={"stock": 0, "price": 4.5, "on_promo": True, "days_since_restock": 6.5},
    ),
}


@dataclass
class StoreStockJourney:
    """What each step of examples/store_stock's journey printed or answered, and the rows it pushed."""

    database: PostgresEndpoint
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    pushed_rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def _store_stock_models(journey: StoreStockJourney, env: dict[str, str], models_dir: Path) -> None:
    """`store_visits` by the example's train.py + `tandem models register`; `stockout_risk` by `tandem train`."""
    feast_env = env | _exported(_run(journey, "env", _tandem("env"), env))
    artifact = models_dir / "store_visits.joblib"
    _run(journey, "train_script", _python("examples/store_stock/train.py", "--out", str(artifact)), feast_env)
    command = (
        f"models register {shlex.quote(str(artifact))} --name store_visits "
        "--feature-service store_traffic_v1 --task regression --promote"
    )
    _run(journey, "register", _tandem(*shlex.split(command)), env)
    command = (
        "train --name stockout_risk --feature-service stockout_v1 "
        "--labels public.stockout_labels --label-column stockout --promote"
    )
    _run(journey, "train", _tandem(*shlex.split(command)), env)


def _store_stock_serve_and_ask(journey: StoreStockJourney, env: dict[str, str]) -> None:
    """One `tandem serve` for both models: untouched entities (GET and POST), a push per model, then again."""
    with _served(env) as client:
        journey.answers["ready"] = client.get("/health/ready")
        for name, model in STORE_STOCK_MODELS.items():
            journey.answers[f"get_untouched_{name}"] = client.get(
                f"/v1/predict/{name}", params=model.untouched
            )
        for name, model in STORE_STOCK_MODELS.items():
            row = {
                **model.pushed,
                "event_timestamp": datetime.now(UTC).isoformat(),
                **model.push_features,
            }
            journey.pushed_rows[name] = row
            journey.answers[f"push_{name}"] = client.post(
                f"/v1/push/{model.push_source}", json={"rows": [row]}, headers={"X-API-Key": API_KEY}
            )
        for name, model in STORE_STOCK_MODELS.items():
            entities = [model.untouched, model.pushed, model.unknown]
            journey.answers[f"predict_{name}"] = client.post(
                "/v1/predict", json={"model": name, "entities": entities}
            )
            journey.answers[f"get_pushed_{name}"] = client.get(f"/v1/predict/{name}", params=model.pushed)
            journey.answers[f"get_unknown_{name}"] = client.get(f"/v1/predict/{name}", params=model.unknown)


@pytest.fixture(scope="module")
def store_stock(
    servers: tuple[PostgresEndpoint, RedisEndpoint], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreStockJourney]:
    """examples/store_stock's README, run from an empty database to two skew-checked models."""
    admin, redis_endpoint = servers
    project = f"ex{uuid.uuid4().hex[:10]}"
    with private_database(admin) as database:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")},
            "TANDEM_POSTGRES_URL": database.url(),
            "TANDEM_REDIS_URL": redis_endpoint.url(),
            "TANDEM_FEAST_PROJECT": project,
            "TANDEM_FEATURE_REPO": str(PROJECT_ROOT / "examples" / "store_stock" / "feature_repo"),
            "TANDEM_HOME": str(tmp_path_factory.mktemp("home")),
            "TANDEM_MODEL_SIGNING_KEY": TEST_SIGNING_KEY,  # configured stores: the README's key
            "COLUMNS": "200",
        }
        journey = StoreStockJourney(database=database)
        try:
            _run(journey, "apply", _tandem("apply"), env)
            _run(journey, "seed", _python("examples/store_stock/data.py", *STORE_STOCK_DATA_ARGS), env)
            _store_stock_models(journey, env, tmp_path_factory.mktemp("models"))
            _run(journey, "materialize", _tandem("materialize"), env)
            for name in STORE_STOCK_MODELS:
                _run(journey, f"batch_predict_{name}", _tandem("batch-predict", "--model", name), env)
            _store_stock_serve_and_ask(journey, env)
            for name in STORE_STOCK_MODELS:
                command = _tandem("check-skew", "--model", name)
                _run(journey, f"check_skew_{name}", command, env, check=False)
            yield journey
        finally:
            purge_feast_project(redis_endpoint, project)


def _store_stock_items(journey: StoreStockJourney, name: str) -> list[dict[str, Any]]:
    answer = journey.answers[f"predict_{name}"]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == name
    items: list[dict[str, Any]] = body["predictions"]
    return items


def test_store_stock_apply_registers_both_views_and_predictions_views(store_stock: StoreStockJourney) -> None:
    """`tandem apply` registers store_traffic, shelf_status and both models' predictions views, no warnings."""
    out = store_stock.outputs["apply"].stdout
    assert "feast apply: 4 feature views registered" in out, out
    for view in ("shelf_status", "store_traffic", "stockout_risk_predictions", "store_visits_predictions"):
        assert view in out
    assert "warning:" not in out


def test_store_stock_models_learn_the_known_relations_and_are_promoted(
    store_stock: StoreStockJourney,
) -> None:
    """The registered regression (categorical `region` one-hot encoded) and the trained classifier on a
    composite key both learn their hidden relation, and both are promoted."""
    script = store_stock.outputs["train_script"].stdout
    r2 = re.search(r"holdout R2 ([0-9.-]+)", script)
    assert r2 is not None, script
    assert float(r2.group(1)) > 0.8
    registered = store_stock.outputs["register"].stdout
    assert re.search(r"registered store_visits version \S+ .*: promoted", registered), registered
    assert "footfall, region, avg_basket" in registered  # checked against the service
    trained = store_stock.outputs["train"].stdout
    assert re.search(r"registered stockout_risk version \S+ .*: promoted", trained), trained
    auc = re.search(r"ROC AUC\s*\S\s*([0-9.]+)", trained)
    assert auc is not None, trained
    assert float(auc.group(1)) > 0.7


def test_store_stock_batch_predict_publishes_every_store_and_shelf(store_stock: StoreStockJourney) -> None:
    """One published run per model with a score for every store (60) and every store x product (1,200),
    stored under the entity ids of core/features/keys.py (UTF-8 kept, composite in join-key-name order)."""
    with psycopg.connect(store_stock.database.url()) as conn:
        for name, model in STORE_STOCK_MODELS.items():
            assert f"{name}: published run" in store_stock.outputs[f"batch_predict_{name}"].stdout
            runs = conn.execute(
                "SELECT r.status, r.rows, count(p.*) FROM tandem.prediction_runs r "
                "JOIN tandem.batch_predictions p ON p.run_id = r.run_id WHERE r.model_name = %s "
                "GROUP BY r.run_id, r.status, r.rows",
                (name,),
            ).fetchall()
            assert runs == [("published", model.entities, model.entities)]
        keys = conn.execute(
            "SELECT r.model_name, p.entity_key FROM tandem.batch_predictions p "
            "JOIN tandem.prediction_runs r ON r.run_id = p.run_id WHERE p.entity_key LIKE %s ORDER BY 1, 2",
            ("%Zürich-1%",),
        ).fetchall()
    assert keys[0] == ("stockout_risk", '[4001,"Zürich-1"]')
    assert len(keys) == 21
    assert keys[-1] == ("store_visits", "Zürich-1")


def test_store_stock_one_serve_answers_both_models_from_the_batch_run(store_stock: StoreStockJourney) -> None:
    """One `tandem serve` loads both models; an untouched store (string key) and an untouched store x product
    (composite key, non-ASCII store code in the query string) get their stored scores, GET and POST alike."""
    ready = store_stock.answers["ready"]
    assert ready.status_code == 200, ready.text
    assert sorted(ready.json()["models"]) == sorted(STORE_STOCK_MODELS)
    for name, model in STORE_STOCK_MODELS.items():
        single = store_stock.answers[f"get_untouched_{name}"]
        assert single.status_code == 200, single.text
        body = single.json()
        assert body["entity"] == model.untouched
        assert (body["source"], body["reason"], body["degraded"]) == ("batch", "batch_fresh", False)
        first = _store_stock_items(store_stock, name)[0]
        assert first["entity"] == model.untouched
        assert (first["source"], first["reason"], first["score"]) == ("batch", "batch_fresh", body["score"])


def test_store_stock_pushes_are_appended_offline_and_rescored_live(store_stock: StoreStockJourney) -> None:
    """A push for a store (string key) and for a store x product (composite key) is appended to its offline
    table and written online; each of those entities is then re-scored live (`features_newer`)."""
    with psycopg.connect(store_stock.database.url()) as conn:
        for name, model in STORE_STOCK_MODELS.items():
            push = store_stock.answers[f"push_{name}"]
            assert push.status_code in (200, 201), push.text
            assert push.json()["written_online"] == 1
            row = store_stock.pushed_rows[name]
            columns = [*model.pushed, "event_timestamp", *model.push_features]
            where = " AND ".join(f"{key} = %s" for key in model.pushed)
            appended = conn.execute(
                f"SELECT {', '.join(columns)} FROM {model.table} WHERE {where} "  # noqa: S608 - test constants
                "ORDER BY event_timestamp DESC LIMIT 1",
                tuple(model.pushed.values()),
            ).fetchone()
            assert appended is not None
            expected = {**row, "event_timestamp": datetime.fromisoformat(row["event_timestamp"])}
            assert dict(zip(columns, appended, strict=True)) == expected
            _, pushed, _ = _store_stock_items(store_stock, name)
            assert pushed["entity"] == model.pushed
            assert (pushed["source"], pushed["reason"]) == ("live", "features_newer")
            assert isinstance(pushed["score"], float)
            single = store_stock.answers[f"get_pushed_{name}"]
            assert single.status_code == 200, single.text
            assert (single.json()["entity"], single.json()["reason"]) == (model.pushed, "features_newer")


def test_store_stock_unknown_entities_are_named(store_stock: StoreStockJourney) -> None:
    """An unknown store, and a store x product pair that doesn't exist (both parts exist), get their own
    `unknown_entity` item in a batch request, and a 404 naming the key on GET."""
    for name, model in STORE_STOCK_MODELS.items():
        *_, unknown = _store_stock_items(store_stock, name)
        assert unknown == {"entity": model.unknown, "error": "unknown_entity"}
        single = store_stock.answers[f"get_unknown_{name}"]
        assert single.status_code == 404, single.text
        assert "unknown" in single.json()["detail"]


def test_store_stock_check_skew_finds_parity_for_both_models(store_stock: StoreStockJourney) -> None:
    """`tandem check-skew --model NAME` exits 0 for both models: parity ok, every unchanged entity agrees,
    the pushed entity counted as changed."""
    for name, model in STORE_STOCK_MODELS.items():
        done = store_stock.outputs[f"check_skew_{name}"]
        assert done.returncode == 0, done.stderr + done.stdout
        out = done.stdout
        unchanged = model.entities - 1
        assert f"unchanged since the batch run: {unchanged:,} agree, 0 disagree" in out, out
        assert "changed since the batch run: 1 entities" in out
        assert re.search(r"report \d+\s+ok .*parity ok", out), out
