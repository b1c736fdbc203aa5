"""The one place that maps domain errors and validation failures to HTTP answers.

Every error body is `{"detail": "...", "status_code": N}`; a validation failure names the field at fault.
An unexpected exception's text never reaches the answer (it is logged): the body says "internal error".
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from core.errors import NotFoundError, StoreUnavailableError, TandemError

__all__ = ["EXCEPTION_HANDLERS", "RequestError"]

logger = logging.getLogger(__name__)


class RequestError(TandemError):
    """A client mistake found after decoding (e.g. a wrong join key): 400 naming the field."""


def _body(detail: str, status_code: int, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response({"detail": detail, "status_code": status_code}, status_code=status_code, headers=headers)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    parts = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key, message = item.get("key"), item.get("message")
            parts.append(f"{key}: {message}" if key else str(message))
    detail = "; ".join(parts) or exc.detail
    return _body(detail, 400)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """The exception's detail and headers (e.g. `Retry-After` of a 429); a 500's detail is never shown."""
    if exc.status_code == HTTP_500_INTERNAL_SERVER_ERROR:
        logger.error("internal error: %s", exc.detail)
        return _body("internal error", HTTP_500_INTERNAL_SERVER_ERROR)
    return _body(str(exc.detail), exc.status_code, exc.headers)


def _domain(_: Request[Any, Any, Any], exc: TandemError) -> Response[dict[str, Any]]:
    if isinstance(exc, NotFoundError):
        return _body(str(exc), 404)
    if isinstance(exc, StoreUnavailableError):
        return _body(str(exc), 503)
    if isinstance(exc, RequestError):
        return _body(str(exc), 400)
    return _body(str(exc), 409)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error", exc_info=exc)
    return _body("internal error", HTTP_500_INTERNAL_SERVER_ERROR)


def _too_deep(_: Request[Any, Any, Any], __: RecursionError) -> Response[dict[str, Any]]:
    # msgspec refuses a body nested deeper than it can decode (e.g. 100,000 `[`) with RecursionError
    return _body("body: JSON nested too deeply", 400)


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    RecursionError: _too_deep,
    ValidationException: _validation,
    HTTPException: _http,
    TandemError: _domain,
    Exception: _unexpected,
}
