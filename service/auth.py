"""API keys with scopes, and the guards that check them.

`TANDEM_API_KEYS` is comma-separated; each entry is `[scope:]key` or `[scope:]sha256:<64 hex digits>` (the
hash of the key instead of the key). Scopes are ordered: `read` < `write` < `admin` (a key may do what the
scopes below its own allow); an entry without a scope is a `write` key, as before scopes existed.

Which scope a route needs comes from its method and path (`required_scope`): health, metrics and the
OpenAPI schema are public; GET routes and `POST /v1/predict` read; any other method writes. Reads are open
to requests without a key unless `TANDEM_READ_KEYS_REQUIRED` is set. A missing or unknown key is 401, a key
without the scope 403; keys are compared in constant time over every configured key. Each request is then
counted against its key (or, without a key, its client address) by the rate limiter: 429 with
`Retry-After` over the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from core.errors import ConfigurationError
from service.rate_limit import RateLimiter

__all__ = [
    "API_KEY_HEADER",
    "EXAMPLE_KEYS",
    "SECURITY",
    "AccessPolicy",
    "ApiKeys",
    "Principal",
    "Scope",
    "access_guard",
    "principal_of",
    "require_api_key",
    "required_scope",
]

API_KEY_HEADER = "X-API-Key"
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}]
EXAMPLE_KEYS = ("change-me",)
"""Keys published in `.env.example`: anyone can read them, so they are refused as keys."""

_HEX = re.compile(r"[0-9a-fA-F]{64}")
_PUBLIC_PREFIXES = ("/health/", "/schema")
_PUBLIC_PATHS = frozenset({"/metrics", "/schema"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_READ_POSTS = frozenset({"/v1/predict"})  # a POST that only reads
_STATE_KEY = "tandem_principal"


class Scope(IntEnum):
    """What a key may do; a higher scope includes the lower ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a key's scope (None: no key) and the rate limiter's bucket (never the key)."""

    scope: Scope | None
    bucket: str


def _entry(position: int, entry: str) -> tuple[bytes, Scope]:
    """One entry as (sha256 of the key, scope); errors name the position, never the value."""
    where = f"TANDEM_API_KEYS entry {position}"
    scope = Scope.WRITE
    head, colon, rest = entry.partition(":")
    if colon and head.upper() in Scope.__members__:
        scope, entry = Scope[head.upper()], rest.strip()
    elif colon and head != "sha256":
        raise ConfigurationError(
            f"{where}: the part before ':' must be a scope (read, write, admin) or sha256; a key holds no ':'"
        )
    if entry.startswith("sha256:"):
        hex_digest = entry.removeprefix("sha256:").strip()
        if not _HEX.fullmatch(hex_digest):
            raise ConfigurationError(
                f"{where}: a sha256 entry needs exactly 64 hex digits (the key's sha256)"
            )
        digest = bytes.fromhex(hex_digest)
    elif not entry:
        raise ConfigurationError(f"{where}: the key after the scope is empty")
    else:
        digest = hashlib.sha256(entry.encode()).digest()
    if any(digest == hashlib.sha256(example.encode()).digest() for example in EXAMPLE_KEYS):
        raise ConfigurationError(f"{where} is the example key of .env.example: set a secret key of your own")
    return digest, scope


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """Accepted keys as (sha256 of the key, scope)."""

    entries: tuple[tuple[bytes, Scope], ...]

    @classmethod
    def parse(cls, configured: str) -> ApiKeys:
        """From the comma-separated setting; blank entries are ignored, a malformed one raises
        ConfigurationError naming its position (1-based) and never its value."""
        entries = [
            _entry(position, part.strip())
            for position, part in enumerate(configured.split(","), start=1)
            if part.strip()
        ]
        return cls(tuple(entries))

    @property
    def digests(self) -> tuple[bytes, ...]:
        """The configured keys' hashes."""
        return tuple(digest for digest, _ in self.entries)

    def match(self, presented: str | None) -> tuple[bytes, Scope] | None:
        """The entry `presented` matches, or None; every configured key is compared (constant time)."""
        if not presented or not self.entries:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: tuple[bytes, Scope] | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry[0]) and found is None:
                found = entry
        return found

    def accepts(self, presented: str | None, scope: Scope = Scope.WRITE) -> bool:
        """True when `presented` is a key with `scope` or a higher one."""
        entry = self.match(presented)
        return entry is not None and entry[1] >= scope


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The deployment's keys, and whether reads need one."""

    keys: ApiKeys
    read_keys_required: bool = False

    @classmethod
    def from_settings(cls, keys: str, *, read_keys_required: bool) -> AccessPolicy:
        """Validated at start-up: a bad entry, or closed reads without any key, is one ConfigurationError."""
        parsed = ApiKeys.parse(keys)
        if read_keys_required and not parsed.entries:
            raise ConfigurationError(
                "TANDEM_READ_KEYS_REQUIRED is set but TANDEM_API_KEYS holds no key: every read would be refused"
            )
        return cls(parsed, read_keys_required)


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a route needs: None for public routes (health, metrics, schema)."""
    if path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES):
        return None
    if method.upper() in _READ_METHODS or path.rstrip("/") in _READ_POSTS:
        return Scope.READ
    return Scope.WRITE


def _client(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return f"addr:{connection.client.host}" if connection.client else "addr:unknown"


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Who sent the request (cached on the request); 401 for a presented key that matches none."""
    known = connection.state.get(_STATE_KEY)
    if isinstance(known, Principal):
        return known
    policy: AccessPolicy = connection.app.state.access
    presented = connection.headers.get(API_KEY_HEADER)
    if not presented:
        principal = Principal(None, _client(connection))
    else:
        entry = policy.keys.match(presented)
        if entry is None:
            raise NotAuthorizedException(f"invalid {API_KEY_HEADER} header")
        principal = Principal(entry[1], f"key:{entry[0].hex()[:24]}")
    connection.state[_STATE_KEY] = principal
    return principal


def _check_scope(policy: AccessPolicy, principal: Principal, needed: Scope) -> None:
    if principal.scope is None:
        if needed == Scope.READ and not policy.read_keys_required:
            return
        if not policy.keys.entries:
            raise NotAuthorizedException(
                "write routes are disabled: no API key is configured (TANDEM_API_KEYS)"
            )
        raise NotAuthorizedException(f"missing {API_KEY_HEADER} header")
    if principal.scope < needed:
        raise PermissionDeniedException(f"this API key lacks scope {needed.name.lower()}")


async def _limit(connection: ASGIConnection[Any, Any, Any, Any], bucket: str, *, keyed: bool) -> None:
    limiter: RateLimiter | None = connection.app.state.get("rate_limiter")
    if limiter is None:
        return
    retry_after = await limiter.retry_after(bucket, keyed=keyed)
    if retry_after is not None:
        raise TooManyRequestsException(
            "rate limit exceeded: retry after the Retry-After header's seconds",
            headers={"Retry-After": str(retry_after)},
        )


async def access_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """App-wide guard: the route's scope (see `required_scope`), then the caller's rate limit."""
    needed = required_scope(str(connection.scope.get("method", "GET")), connection.scope["path"])
    if needed is None:
        return
    try:
        principal = principal_of(connection)
    except NotAuthorizedException:
        await _limit(connection, _client(connection), keyed=False)  # guessing keys costs the address
        raise
    _check_scope(connection.app.state.access, principal, needed)
    await _limit(connection, principal.bucket, keyed=principal.scope is not None)


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Route guard of write routes: 401 without an accepted key, 403 for a key without scope write."""
    _check_scope(connection.app.state.access, principal_of(connection), Scope.WRITE)
