"""Skew reports over HTTP on the session database: the JSON API (list, read, 404s, guarded acknowledgement)
and the server-rendered pages with their inline-SVG charts."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.skew_reports import save_report
from tests.skew_samples import sample_report, skew_app

KEY = "test-key"


def _api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """A stand-in for the app's API-key guard."""
    if connection.headers.get("x-api-key") != KEY:
        raise NotAuthorizedException(detail="missing or wrong X-API-Key")


@pytest.fixture(scope="module")
def report_ids(engine: Engine) -> list[int]:
    """Two saved reports (older then newer)."""
    ids = []
    for seed in (1, 2):
        with Session(engine) as session, session.begin():
            ids.append(save_report(session, report=sample_report(seed=seed, skew=0.02 * seed)).id)
    return ids


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient[Litestar]]:
    """A test client on the skew app."""
    with TestClient(app=skew_app(engine, write_guards=[_api_key])) as test_client:
        yield test_client


def test_list_is_newest_first(client: TestClient[Litestar], report_ids: list[int]) -> None:
    """GET /v1/skew/reports lists the newest first with status, mismatch rates and parity status."""
    body = client.get("/v1/skew/reports", params={"limit": 500}).json()
    ids = [item["id"] for item in body["reports"]]
    assert ids.index(report_ids[1]) < ids.index(report_ids[0])
    item = next(item for item in body["reports"] if item["id"] == report_ids[1])
    assert item["status"] in {"ok", "warn", "breach"}
    assert 0 < item["mismatch_rate"] <= item["max_feature_mismatch_rate"]
    assert item["parity_status"] == "ok"


def test_one_report_has_findings(client: TestClient[Litestar], report_ids: list[int]) -> None:
    """GET /v1/skew/reports/{id} returns every finding with counts, distances, examples and histogram."""
    response = client.get(f"/v1/skew/reports/{report_ids[0]}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == report_ids[0]
    assert len(body["findings"]) == 5
    finding = body["findings"][0]
    assert set(finding) >= {
        "counts",
        "mismatch_rate",
        "psi",
        "js_distance",
        "status",
        "examples",
        "histogram",
    }
    assert body["ack"] == {"at": None, "by": None, "comment": None}


@pytest.mark.parametrize("path", ["/v1/skew/reports/987654321", "/skew/987654321"])
def test_unknown_report_is_404(client: TestClient[Litestar], report_ids: list[int], path: str) -> None:
    """An unknown report id: 404 with {"detail": ..., "status_code": 404} naming the id."""
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {
        "detail": "skew report 987654321 does not exist (see `tandem skew list`)",
        "status_code": 404,
    }


def test_bad_limit_is_400(client: TestClient[Litestar]) -> None:
    """A limit out of range is a 400 naming the parameter, never a 500."""
    response = client.get("/v1/skew/reports", params={"limit": 0})
    assert response.status_code == 400
    assert "limit" in response.text


def test_ack_needs_the_key_and_records_who_and_why(
    client: TestClient[Litestar], report_ids: list[int]
) -> None:
    """Without the key: 401 and nothing recorded; with it: who, when and the comment are stored and shown."""
    path = f"/v1/skew/reports/{report_ids[0]}/ack"
    denied = client.post(path, json={"by": "mallory", "comment": "x"})
    assert denied.status_code == 401
    assert client.get(f"/v1/skew/reports/{report_ids[0]}").json()["ack"]["by"] is None
    done = client.post(path, json={"by": "ana", "comment": "known: push lag"}, headers={"X-API-Key": KEY})
    assert done.status_code == 200, done.text
    ack = done.json()["ack"]
    assert ack["by"] == "ana"
    assert ack["comment"] == "known: push lag"
    assert ack["at"] is not None
    listed = client.get("/v1/skew/reports", params={"limit": 500}).json()["reports"]
    assert next(r for r in listed if r["id"] == report_ids[0])["ack"]["by"] == "ana"
    page = client.get(f"/skew/{report_ids[0]}").text
    assert "Acknowledged by <strong>ana</strong>" in page


@pytest.mark.parametrize(
    ("body", "status"), [({"by": "  ", "comment": ""}, 400), ({"comment": "no name"}, 400), ({"by": 5}, 400)]
)
def test_bad_ack_body_is_400(
    client: TestClient[Litestar], report_ids: list[int], body: dict[str, object], status: int
) -> None:
    """An ack without a name (missing, blank or not a string) is a 400 naming the field."""
    response = client.post(f"/v1/skew/reports/{report_ids[1]}/ack", json=body, headers={"X-API-Key": KEY})
    assert response.status_code == status
    assert response.json()["status_code"] == 400
    assert "by" in response.json()["detail"]


def test_ack_of_unknown_report_is_404(client: TestClient[Litestar]) -> None:
    """Acknowledging a report that doesn't exist: 404."""
    response = client.post("/v1/skew/reports/987654321/ack", json={"by": "ana"}, headers={"X-API-Key": KEY})
    assert response.status_code == 404


def test_pages_render_charts(client: TestClient[Litestar], report_ids: list[int]) -> None:
    """/skew has the trend SVG with one point per report and a badge per report; /skew/{id} has the bars,
    one histogram per feature, the examples table and the parity section."""
    listing = client.get("/skew")
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("text/html")
    assert '<svg id="trend"' in listing.text
    assert len(re.findall(r'<circle class="point', listing.text)) >= 2
    assert f'href="/skew/{report_ids[1]}"' in listing.text
    page = client.get(f"/skew/{report_ids[1]}").text
    assert '<svg id="mismatch-bars"' in page
    assert page.count('class="histogram"') == 5
    assert 'id="examples"' in page
    assert 'id="parity"' in page
    assert "Not acknowledged" in page


@pytest.mark.parametrize(
    "path", ["/v1/skew/reports/99999999999999999999", "/v1/skew/reports/0", "/skew/9223372036854775808"]
)
def test_report_ids_beyond_bigint_are_400(client: TestClient[Litestar], path: str) -> None:
    """A report id PostgreSQL's bigint cannot hold is the client's mistake (400), never a database error."""
    response = client.get(path)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("by", ["ana\x00", "ana\x1b[31m", "a" * 2_001])
def test_ack_text_with_control_characters_is_400(
    client: TestClient[Litestar], report_ids: list[int], by: str
) -> None:
    """A NUL (which PostgreSQL refuses) or a terminal escape in `by` is refused before the database."""
    response = client.post(
        f"/v1/skew/reports/{report_ids[0]}/ack", json={"by": by}, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 400, response.text
    assert "'by'" in response.json()["detail"]
