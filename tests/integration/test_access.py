"""Access on the real app and stores: scoped keys on every kind of route, a rate limit that two app
instances share through the real Redis (and that fails open when Redis is down or stalled), job-run errors
by scope, and the security headers of the skew pages."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.job_runs import finish_job_run, start_job_run
from core.records.skew_reports import save_report
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from service.rate_limit import BUCKET_PREFIX
from tests.skew_samples import sample_report

SUFFIX = uuid.uuid4().hex[:12]  # keys unique to this run: their rate-limit buckets are too
READER, WRITER, ADMIN = f"reader-{SUFFIX}", f"writer-{SUFFIX}", f"admin-{SUFFIX}"
KEYS = f"read:{READER},{WRITER},admin:{ADMIN}"
INTERNAL_ERROR = "StoreUnavailableError: PostgreSQL at db.internal.example:5432 is unreachable"


def _settings(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update={"api_keys": SecretStr(KEYS), "redis_timeout_s": 0.2, **update})


def _purge_anonymous(stores: Stores, settings: Settings) -> None:
    """TestClient requests come from address `testclient`: start each test with its bucket empty (buckets
    are per Feast project, and the session's project is its own)."""
    client = redis.Redis.from_url(stores.redis.url())
    try:
        client.delete(f"{BUCKET_PREFIX}{settings.feast_project}:addr:testclient")
    finally:
        client.close()


@pytest.fixture(scope="module")
def failed_run(engine: Engine) -> int:
    """A job run that failed with a message naming an internal host."""
    with Session(engine) as session, session.begin():
        run_id = start_job_run(session, job="materialize", trigger="schedule")
        finish_job_run(session, run_id=run_id, status="failed", error=INTERNAL_ERROR)
    return run_id


@pytest.fixture(scope="module")
def report_id(engine: Engine) -> int:
    """One skew report for the pages."""
    with Session(engine) as session, session.begin():
        return save_report(session, report=sample_report(seed=3, skew=0.02)).id


@pytest.fixture(scope="module")
def closed(settings: Settings, engine: Engine) -> Iterator[TestClient[Any]]:
    """An app whose reads need a key."""
    with TestClient(create_app(_settings(settings, read_keys_required=True))) as client:
        yield client


def test_closed_reads_need_a_read_key_and_writes_a_write_key(closed: TestClient[Any]) -> None:
    """Reads: 401 without or with a wrong key, 200 with read/write/admin keys. Writes: 403 for a read key,
    202 for write and admin keys. Health, metrics and the schema stay public."""
    for path in ("/v1/jobs/runs", "/v1/skew/reports", "/skew"):
        assert closed.get(path).status_code == 401, path
        assert closed.get(path, headers={"X-API-Key": "nope"}).status_code == 401, path
        for key in (READER, WRITER, ADMIN):
            assert closed.get(path, headers={"X-API-Key": key}).status_code == 200, (path, key)
    refused = closed.post("/v1/predict", json={"entities": [{"driver_id": 1}]})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "missing X-API-Key header", "status_code": 401}
    assert closed.get("/v1/predict/anything", params={"id": 1}).status_code == 401
    forbidden = closed.post("/v1/jobs/materialize/run", headers={"X-API-Key": READER})
    assert forbidden.status_code == 403
    assert "scope write" in forbidden.json()["detail"]
    for key in (WRITER, ADMIN):
        assert closed.post("/v1/jobs/materialize/run", headers={"X-API-Key": key}).status_code == 202
    assert (
        closed.post("/v1/push/any_source", json={"rows": [{}]}, headers={"X-API-Key": READER}).status_code
        == 403
    )
    assert closed.post("/v1/skew/reports/1/ack", json={"by": "x"}).status_code == 401
    for path in ("/health/live", "/metrics", "/schema/openapi.json"):
        assert closed.get(path).status_code == 200, path


def test_open_reads_serve_anonymous_callers_but_not_wrong_keys(settings: Settings, stores: Stores) -> None:
    """Without TANDEM_READ_KEYS_REQUIRED reads need no key; a presented wrong key is still 401; writes 401."""
    _purge_anonymous(stores, settings)
    with TestClient(create_app(_settings(settings))) as client:
        assert client.get("/v1/jobs/runs").status_code == 200
        assert client.get("/skew").status_code == 200
        assert client.get("/v1/jobs/runs", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.post("/v1/jobs/materialize/run").status_code == 401


def test_job_run_errors_are_shown_whole_to_admins_only(closed: TestClient[Any], failed_run: int) -> None:
    """A read or write key sees the exception type; an admin key the stored line."""
    errors = {}
    for key in (READER, WRITER, ADMIN):
        runs = closed.get("/v1/jobs/runs", headers={"X-API-Key": key}).json()["runs"]
        errors[key] = next(run["error"] for run in runs if run["id"] == failed_run)
    assert errors == {READER: "StoreUnavailableError", WRITER: "StoreUnavailableError", ADMIN: INTERNAL_ERROR}


def test_rate_limit_holds_across_two_app_instances(settings: Settings, stores: Stores) -> None:
    """4 requests per 30 s window per key, counted in Redis: alternating between two apps, the 5th request of a
    key is 429 with a Retry-After within the window, on either app; another key and public routes pass;
    anonymous callers are limited per address the same way."""
    _purge_anonymous(stores, settings)
    limited = _settings(settings, rate_limit_per_s=4 / 30, rate_limit_window_s=30)
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:
        apps = [first, second]
        answers = [
            apps[i % 2].get("/v1/jobs/runs", headers={"X-API-Key": WRITER}).status_code for i in range(4)
        ]
        assert answers == [200] * 4
        for app in apps:
            refused = app.get("/v1/jobs/runs", headers={"X-API-Key": WRITER})
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 30
            assert refused.json()["status_code"] == 429
        assert first.post("/v1/jobs/materialize/run", headers={"X-API-Key": WRITER}).status_code == 429
        assert second.get("/v1/jobs/runs", headers={"X-API-Key": READER}).status_code == 200
        assert first.get("/health/live").status_code == 200
        anonymous = [apps[i % 2].get("/v1/skew/reports").status_code for i in range(5)]
        assert anonymous == [200, 200, 200, 200, 429]
    counters = redis.Redis.from_url(stores.redis.url())
    try:
        names = [name.decode() for name in counters.scan_iter(f"{BUCKET_PREFIX}{settings.feast_project}:*")]
        assert len([name for name in names if ":key:" in name]) == 2  # the writer's and the reader's
        assert not any(key in name for name in names for key in (READER, WRITER))  # hashes, never keys
        assert all(0 < int(counters.pttl(name)) <= 30_000 for name in names)  # type: ignore[arg-type]  # sync client
    finally:
        counters.close()


class _Stalled:
    """A TCP port that accepts connections and never answers: a stalled Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("fault", ["refused", "stalled"])
@pytest.mark.usefixtures("engine")  # schema at head: the route reads tandem.job_runs
def test_rate_limiter_fails_open_when_redis_does_not_answer(settings: Settings, fault: str) -> None:
    """Redis refusing or stalling: every request is served (no 429, no 500), and after the first timeout the
    limiter backs off, so 30 requests take well under one timeout each."""
    stalled = _Stalled() if fault == "stalled" else None
    port = stalled.port if stalled is not None else _closed_port()
    broken = _settings(
        settings,
        redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"),
        rate_limit_per_s=1,
        rate_limit_window_s=60,
    )
    try:
        with TestClient(create_app(broken)) as client:
            started = time.perf_counter()
            codes = {
                client.get("/v1/jobs/runs", headers={"X-API-Key": READER}).status_code for _ in range(30)
            }
            elapsed = time.perf_counter() - started
    finally:
        if stalled is not None:
            stalled.close()
    assert codes == {200}
    assert elapsed < 0.2 * 30 / 3, f"30 requests took {elapsed:.2f} s: the limiter did not back off"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_skew_pages_carry_csp_and_frame_headers(closed: TestClient[Any], report_id: int) -> None:
    """Both pages: a CSP without unsafe-eval or unsafe-inline whose style nonce is the page's <style> nonce
    (fresh per answer), no style attribute, framing refused, no sniffing, no referrer."""
    nonces = set()
    for path in ("/skew", f"/skew/{report_id}", f"/skew/{report_id}"):
        page = closed.get(path, headers={"X-API-Key": READER})
        assert page.status_code == 200, path
        policy = page.headers["Content-Security-Policy"]
        assert "unsafe-eval" not in policy
        assert "unsafe-inline" not in policy
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        nonce = re.search(r"style-src 'nonce-([^']+)'", policy)
        assert nonce is not None
        assert f'<style nonce="{nonce.group(1)}">' in page.text
        assert " style=" not in page.text
        assert "<script" not in page.text
        nonces.add(nonce.group(1))
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "no-referrer"
    assert len(nonces) == 3
    assert closed.get("/health/live").headers["X-Content-Type-Options"] == "nosniff"
