"""API keys for write routes: `X-API-Key` against TANDEM_API_KEYS, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

__all__ = ["API_KEY_HEADER", "SECURITY", "ApiKeys", "require_api_key"]

API_KEY_HEADER = "X-API-Key"
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}]


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """Accepted keys: plain entries, or `sha256:<hex>` entries holding a key's hash."""

    digests: tuple[bytes, ...]

    @classmethod
    def parse(cls, configured: str) -> ApiKeys:
        """From the comma-separated setting; blank entries are ignored."""
        digests = []
        for entry in (part.strip() for part in configured.split(",")):
            if not entry:
                continue
            if entry.startswith("sha256:"):
                digests.append(bytes.fromhex(entry.removeprefix("sha256:")))
            else:
                digests.append(hashlib.sha256(entry.encode()).digest())
        return cls(tuple(digests))

    def accepts(self, presented: str | None) -> bool:
        """True when `presented` matches a key; every configured key is compared (constant time)."""
        if not presented or not self.digests:
            return False
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard: 401 unless the request carries an accepted `X-API-Key`."""
    keys: ApiKeys = connection.app.state.api_keys
    if not keys.digests:
        raise NotAuthorizedException("write routes are disabled: no API key is configured (TANDEM_API_KEYS)")
    if not keys.accepts(connection.headers.get(API_KEY_HEADER)):
        raise NotAuthorizedException(f"missing or invalid {API_KEY_HEADER} header")
