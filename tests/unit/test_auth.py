"""API keys, scopes, route access, the rate limiter's decisions, and job-run error text, without I/O."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from typing import Any

import pytest

from core.errors import ConfigurationError
from service.auth import AccessPolicy, ApiKeys, Scope, required_scope
from service.jobs import error_for
from service.rate_limit import RateLimiter, RateLimits


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_todays_entries_are_write_keys() -> None:
    """A plain key and a `sha256:<hex>` entry (the format before scopes) both grant write, not admin."""
    keys = ApiKeys.parse(f"first-secret, sha256:{_sha('second-secret')}")
    for key in ("first-secret", "second-secret"):
        assert keys.accepts(key, Scope.WRITE)
        assert keys.accepts(key, Scope.READ)
        assert not keys.accepts(key, Scope.ADMIN)
    assert keys.match("third-secret") is None
    assert keys.match("") is None
    assert keys.match(None) is None


def test_scoped_entries_and_the_scope_order() -> None:
    """`read:`, `write:`, `admin:` prefixes set the scope, for plain and hashed keys; admin includes all."""
    keys = ApiKeys.parse(f"read:reader-key,admin:sha256:{_sha('boss-key')}, write:writer-key")
    assert keys.match("reader-key") == (bytes.fromhex(_sha("reader-key")), Scope.READ)
    assert keys.accepts("reader-key", Scope.READ)
    assert not keys.accepts("reader-key", Scope.WRITE)
    assert keys.accepts("writer-key", Scope.WRITE)
    assert not keys.accepts("writer-key", Scope.ADMIN)
    assert all(keys.accepts("boss-key", scope) for scope in Scope)
    assert keys.match("read:reader-key") is None  # the scope is not part of the key


def test_blank_entries_are_ignored() -> None:
    """Empty entries (trailing comma, spaces) configure nothing."""
    assert ApiKeys.parse(" , ,").entries == ()
    assert len(ApiKeys.parse("one-key,,").entries) == 1


@pytest.mark.parametrize(
    ("configured", "position", "says"),
    [
        ("good-key,sha256:zz", 2, "64 hex digits"),
        ("sha256:abcd", 1, "64 hex digits"),
        (f"a,b,sha256:{'g' * 64}", 3, "64 hex digits"),
        ("change-me", 1, ".env.example"),
        ("ok-key, read:change-me", 2, ".env.example"),
        (f"admin:sha256:{_sha('change-me')}", 1, ".env.example"),
        ("reed:typo-in-scope", 1, "scope (read, write, admin)"),
        ("write:", 1, "empty"),
    ],
)
def test_bad_entries_refuse_to_start_naming_the_position_only(
    configured: str, position: int, says: str
) -> None:
    """Bad hex, a wrong length, the example key (plain or hashed), an unknown scope, an empty key: one line
    naming the entry's position and never its value."""
    with pytest.raises(ConfigurationError) as caught:
        ApiKeys.parse(configured)
    message = str(caught.value)
    assert f"entry {position}" in message
    assert says in message
    assert "\n" not in message
    for secret in ("zz", "abcd", "change-me", "typo-in-scope", "good-key", "g" * 64):
        assert secret not in message


def test_closed_reads_without_any_key_refuse_to_start() -> None:
    """Requiring read keys while none is configured would refuse every read: a configuration error."""
    with pytest.raises(ConfigurationError, match="TANDEM_READ_KEYS_REQUIRED"):
        AccessPolicy.from_settings("", read_keys_required=True)
    assert AccessPolicy.from_settings("read:r-key", read_keys_required=True).read_keys_required


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/health/live", None),
        ("GET", "/health/ready", None),
        ("GET", "/metrics", None),
        ("GET", "/schema/openapi.json", None),
        ("GET", "/schema", None),
        ("POST", "/v1/predict", Scope.READ),
        ("GET", "/v1/predict/eta", Scope.READ),
        ("GET", "/v1/skew/reports/3", Scope.READ),
        ("GET", "/skew", Scope.READ),
        ("GET", "/v1/jobs/runs", Scope.READ),
        ("POST", "/v1/push/stats_push", Scope.WRITE),
        ("POST", "/v1/skew/reports/3/ack", Scope.WRITE),
        ("POST", "/v1/jobs/materialize/run", Scope.WRITE),
        ("DELETE", "/v1/anything", Scope.WRITE),
        ("POST", "/healthcheck", Scope.WRITE),  # only the /health/ folder is public
    ],
)
def test_each_route_needs_its_scope(method: str, path: str, scope: Scope | None) -> None:
    """Public, read and write routes by method and path; an unknown non-GET route writes (deny by default)."""
    assert required_scope(method, path) == scope


def _run(check: Coroutine[Any, Any, int | None]) -> int | None:
    return asyncio.run(check)


class _Counter:
    """Fixed windows in memory on a settable clock; `down` fails like an unreachable Redis."""

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.windows, self.down, self.calls = clock, dict[str, tuple[int, float]](), False, 0

    async def hit(self, bucket: str, *, window_ms: int) -> tuple[int, int]:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        count, ends = self.windows.get(bucket, (0, 0.0))
        if self.clock[0] >= ends:
            count, ends = 0, self.clock[0] + window_ms / 1000
        self.windows[bucket] = (count + 1, ends)
        return count + 1, int((ends - self.clock[0]) * 1000)

    async def close(self) -> None:
        return None


def test_limiter_allows_the_limit_per_window_then_says_when_to_retry() -> None:
    """3 per 10 s: the 4th hit is refused with the window's remaining whole seconds; other buckets and the
    next window are unaffected."""
    clock = [100.0]
    limiter = RateLimiter(
        _Counter(clock), RateLimits(per_key=3, anonymous=1, window_s=10), clock=lambda: clock[0]
    )
    assert [_run(limiter.retry_after("key:a", keyed=True)) for _ in range(3)] == [None, None, None]
    clock[0] += 2.5
    assert _run(limiter.retry_after("key:a", keyed=True)) == 8  # ceil(7.5)
    assert _run(limiter.retry_after("key:b", keyed=True)) is None
    assert _run(limiter.retry_after("addr:1.2.3.4", keyed=False)) is None
    assert _run(limiter.retry_after("addr:1.2.3.4", keyed=False)) == 10  # its own window, from its first hit
    clock[0] += 7.5
    assert _run(limiter.retry_after("key:a", keyed=True)) is None


def test_limiter_fails_open_and_backs_off_when_the_counter_fails() -> None:
    """Counter down: requests pass; the counter is not asked again during the back-off, and is after it."""
    clock = [0.0]
    counter = _Counter(clock)
    limiter = RateLimiter(
        counter, RateLimits(per_key=1, anonymous=1, window_s=60), backoff_s=2.0, clock=lambda: clock[0]
    )
    counter.down = True
    assert [_run(limiter.retry_after("key:a", keyed=True)) for _ in range(5)] == [None] * 5
    assert counter.calls == 1
    counter.down = False
    clock[0] += 2.0
    assert _run(limiter.retry_after("key:a", keyed=True)) is None
    assert _run(limiter.retry_after("key:a", keyed=True)) == 60
    assert counter.calls == 3


def test_limits_from_requests_per_second() -> None:
    """Rate times window, at least 1 when set; 0 is off; anonymous falls back to the per-key rate."""
    from core.settings import Settings

    limits = RateLimits.from_settings(Settings(rate_limit_per_s=5, rate_limit_window_s=2))
    assert (limits.per_key, limits.anonymous, limits.enabled) == (10, 10, True)
    limits = RateLimits.from_settings(Settings(rate_limit_per_s=0.1, rate_limit_anonymous_per_s=0))
    assert (limits.per_key, limits.anonymous) == (1, 0)
    assert not RateLimits.from_settings(Settings()).enabled


@pytest.mark.parametrize(
    ("stored", "admin", "shown"),
    [
        ("StoreUnavailableError: PostgreSQL at db.internal:5432 is unreachable", False, "StoreUnavailableError"),
        ("StoreUnavailableError: PostgreSQL at db.internal:5432 is unreachable", True,
         "StoreUnavailableError: PostgreSQL at db.internal:5432 is unreachable"),
        ("process died", False, "process died"),
        ("/srv/secret/path failed: boom", False, "error"),
        (None, False, None),
    ],
)  # fmt: skip
def test_job_run_errors_show_their_text_to_admins_only(
    stored: str | None, admin: bool, shown: str | None
) -> None:
    """Others see the exception type (or Tandem's own plain words), never the message."""
    assert error_for(stored, admin=admin) == shown


@pytest.mark.parametrize(
    "configured", ["valid-key,sha256:zz", "valid-key,sha256:abcd", "valid-key,change-me"]
)
def test_the_app_refuses_to_start_on_a_bad_key_entry(configured: str) -> None:
    """`create_app` (what uvicorn calls in each worker) raises the one-line ConfigurationError: no request is
    served with a key entry that crashes or silently never matches."""
    from pydantic import SecretStr

    from core.settings import Settings
    from service.app import create_app

    with pytest.raises(ConfigurationError, match="TANDEM_API_KEYS entry 2"):
        create_app(Settings(api_keys=SecretStr(configured)))
