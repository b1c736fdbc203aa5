"""No 500 for any input: schemathesis over `/schema/openapi.json` of the real app on real stores (seeded,
materialized, a promoted model, a published run, a saved skew report, an API key sent on every request),
with every answer conforming to the schema; and by hand, the requests that once gave 500s."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis import GenerationMode
from schemathesis.python.asgi import get_client, shutdown_lifespans
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.skew_reports import save_report
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.names import DEMO_MODEL
from tests.integration.service_world import API_KEY, World, build_world
from tests.skew_samples import sample_report

HEADERS = {"X-API-Key": API_KEY}
EXAMPLES_PER_OPERATION = 50


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> World:
    """Seeded, materialized, a promoted model and a published batch run."""
    return build_world(settings, stores, engine, customers=120)


@pytest.fixture(scope="module")
def report_id(engine: Engine) -> int:
    """A saved skew report."""
    with Session(engine) as session, session.begin():
        return save_report(session, report=sample_report(entities=200, seed=3, skew=0.02)).id


def _push_row(customer_id: int) -> dict[str, Any]:
    """A valid row of the demo's push source, dated now."""
    return {
        "customer_id": customer_id,
        "event_timestamp": datetime.now(UTC).isoformat(),
        "txn_count_24h": 4,
        "txn_amount_24h": 300.0,
        "max_amount_24h": 120.0,
        "txn_count_7d": 20,
        "avg_amount_30d": 80.0,
        "foreign_txn_ratio_7d": 0.1,
        "distinct_merchants_7d": 9,
    }


@pytest.fixture(scope="module")
def served(world: World, report_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Per operation, values that name what is served (the model, an entity, a push source, a report, a
    job), so that generated requests also reach the answers behind them, not only the 404s."""
    return {
        ("GET", "/v1/predict/{model}"): {
            "path_parameters": {"model": DEMO_MODEL},
            "query": {"customer_id": "7"},
        },
        ("POST", "/v1/predict"): {
            "body": {"model": DEMO_MODEL, "entities": [{"customer_id": 3}, {"customer_id": 10**9}]}
        },
        ("POST", "/v1/push/{push_source}"): {
            "path_parameters": {"push_source": "customer_txn_stats_push"},
            "body": {"rows": [_push_row(5)]},
        },
        ("GET", "/v1/skew/reports/{report_id}"): {"path_parameters": {"report_id": report_id}},
        ("POST", "/v1/skew/reports/{report_id}/ack"): {"path_parameters": {"report_id": report_id}},
        ("POST", "/v1/jobs/{name}/run"): {"path_parameters": {"name": "materialize"}},
    }


@pytest.fixture
def app(world: World) -> Iterator[Litestar]:
    """The app as `tandem serve` builds it, for the world's stores and API key; a fresh one per test, as
    schemathesis' pytest plugin ends every ASGI lifespan after each test."""
    yield create_app(world.settings)
    shutdown_lifespans()  # closes the app's pools (the plugin would too) before anything else is torn down


@pytest.fixture
def api_schema(app: Litestar) -> Any:
    """The app's own OpenAPI document, loaded through the app (which starts its lifespan)."""
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation; the document does not depend on the stores."""
    paths = create_app(Settings()).openapi_schema.to_schema()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_every_route_answers_without_server_errors_and_as_documented(
    api_schema: Any, served: dict[tuple[str, str], dict[str, Any]], method: str, path: str
) -> None:
    """Generated valid and invalid requests to every route (and valid ones naming what is served) get no
    5xx, and every answer's status, content type, headers and body conform to the OpenAPI document."""
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        operation.as_strategy(GenerationMode.POSITIVE, **served.get((method, path), {})),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # a fixed seed: the same cases every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Any) -> None:
        # Every check but "valid data is accepted": what a valid entity or row is depends on the served
        # models and push sources (their join keys and features), which a static document cannot say.
        response = case.call_and_validate(
            headers=HEADERS, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
        statuses.add(response.status_code)

    statuses: set[int] = set()
    answers_as_documented()
    assert any(200 <= status < 300 for status in statuses), statuses  # the served answers were reached
    if path.startswith("/v1/"):
        assert any(400 <= status < 500 for status in statuses), statuses  # and so were the refusals


def test_error_answers_are_documented_with_their_body() -> None:
    """Every /v1 route documents its error answers (access, limits, stores; bodies: 413 and 415) with the
    `{"detail", "status_code"}` body, so a client generated from the document knows them."""
    document = create_app(Settings()).openapi_schema.to_schema()
    body = document["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["detail", "status_code"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if not path.startswith("/v1/"):
                continue
            expected = {"400", "401", "403", "409", "429", "503"} | (
                {"413", "415", "404"} if method == "post" else set()
            )
            assert expected <= set(responses), (method, path, sorted(responses))
            for code in expected:
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
    assert "503" in document["paths"]["/health/ready"]["get"]["responses"]


@pytest.fixture
def client(app: Litestar) -> Iterator[requests.Session]:
    """A plain HTTP client on the same app, in the event loop its lifespan (started by schemathesis) runs
    in."""
    with get_client(app) as session:  # type: ignore[arg-type]  # Litestar types its ASGI __call__ precisely
        yield session


BIG = 2**63
NESTED = b"[" * 100_000


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/v1/predict", f'{{"entities": [{{"customer_id": {BIG}}}]}}'.encode(), None, 400),
        ("POST", "/v1/predict", f'{{"entities": [{{"customer_id": {-BIG - 1}}}]}}'.encode(), None, 400),
        ("POST", "/v1/predict", b'{"entities": [{"customer_id": "42"}]}', None, 400),
        ("POST", "/v1/predict", b'{"entities": [{"customer_id": 42.0}]}', None, 400),
        ("POST", "/v1/predict", b'{"entities": [{"customer_id": 42}]}', "text/plain", 415),
        ("POST", "/v1/predict", NESTED, None, 400),
        ("POST", "/v1/push/customer_txn_stats_push", NESTED, None, 400),
        ("GET", f"/v1/predict/customer_risk?customer_id={BIG}", None, None, 400),
        ("GET", "/v1/predict/customer_risk?customer_id=%2B42", None, None, 400),
        ("GET", "/v1/predict/customer_risk?customer_id=4_2", None, None, 400),
        ("GET", "/v1/predict/customer_risk?customer_id=%D9%A4%D9%A2", None, None, 400),
        ("GET", "/v1/predict/customer_risk?customer_id=%2042%20", None, None, 400),
        ("GET", "/v1/skew/reports/99999999999999999999", None, None, 400),
        ("GET", "/skew/99999999999999999999", None, None, 400),
        ("POST", "/v1/skew/reports/1/ack", b'{"by": "ana\\u0000"}', None, 400),
        ("GET", "/v1/jobs/runs?job=%00", None, None, 400),
        ("GET", "/v1/skew/reports?model=run%00", None, None, 400),
    ],
)
def test_inputs_that_once_gave_500s_are_4xx(
    client: requests.Session,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
) -> None:
    """Out-of-range ids, strings and floats as integer keys, non-JSON bodies, odd digits in a query id,
    report ids beyond bigint, NUL in an ack or a query and 100,000 nested `[` are each a 4xx with the error
    body."""
    headers = {**HEADERS, "content-type": content_type or "application/json"}
    response = client.request(method, path, data=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["status_code"] == status
    assert isinstance(answer["detail"], str)
    assert answer["detail"]


LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/v1/skew/reports", "get"): {
        "ReadReport": {
            "operationId": "V1SkewReportsReportIdGetSkewReport",
            "parameters": {"report_id": "$response.body#/reports/0/id"},
        },
        "AckReport": {
            "operationId": "V1SkewReportsReportIdAckAckSkewReport",
            "parameters": {"report_id": "$response.body#/reports/0/id"},
        },
    },
    ("/v1/jobs/{name}/run", "post"): {
        "ItsRuns": {"operationId": "V1JobsRunsRuns", "parameters": {"job": "$response.body#/job"}},
    },
    ("/v1/predict", "post"): {
        "OneEntity": {
            "operationId": "V1PredictModelPredictOne",
            "parameters": {"model": "$response.body#/model"},
        },
    },
}
"""Links between operations (the document has none): a listed report is read and acknowledged, a requested
job's runs are listed, a predicting model is asked again for one entity."""


def test_linked_calls_answer_as_documented(app: Litestar, client: requests.Session, report_id: int) -> None:
    """Sequences of linked calls (list the reports, one saved -> read -> acknowledge; request a job -> its
    runs; predict -> predict one) get no 5xx and answers that conform to the document."""
    document = client.get("/schema/openapi.json").json()
    for (path, method), links in LINKS.items():
        for response in document["paths"][path][method]["responses"].values():
            response["links"] = links
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app
    excluded = [schemathesis.checks.positive_data_acceptance]

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]  # built at run time
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": HEADERS}

        def validate_response(self, response: Any, case: Any, *_: Any, **kwargs: Any) -> None:
            case.validate_response(response, excluded_checks=excluded, transport_kwargs=kwargs or None)
            seen.add((case.operation.label, response.status_code))

    seen: set[tuple[str, int]] = set()

    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            stateful_step_count=6,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert ("GET /v1/skew/reports/{report_id}", 200) in seen, sorted(seen)  # the links were followed
    assert ("POST /v1/skew/reports/{report_id}/ack", 200) in seen, sorted(seen)
