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


def _run(journey: Journey, step: str, args: list[str], env: dict[str, str], *, check: bool = True) -> str:
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


def _serve_and_ask(journey: Journey, env: dict[str, str]) -> None:
    """`tandem serve`, then: the untouched entity, a push for another, and both (plus an unknown one) again."""
    example, port = journey.example, free_port()
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
    finally:
        server.terminate()
        server.communicate(timeout=30)


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
