"""The one place that maps domain errors and validation failures to HTTP answers.

Every error body is `{"detail": "...", "status_code": N}`; a validation failure names the field at fault.
An unexpected exception's text never reaches the answer (it is logged): the body says "internal error".
`document_errors` lists each route's error answers, with that body, in the OpenAPI schema.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from core.errors import NotFoundError, StoreUnavailableError, TandemError

__all__ = ["EXCEPTION_HANDLERS", "NAME_PATTERN", "ErrorBody", "RequestError", "document_errors"]

NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
"""A name in a query (job, model): no control characters (PostgreSQL refuses NUL: a 400, not a 500)."""

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


class ErrorBody(msgspec.Struct):
    """Every error answer's body."""

    detail: str
    status_code: int


_WHY = {
    400: "Bad request: the detail names the field at fault",
    401: "Missing or unknown X-API-Key",
    403: "The API key lacks the route's scope",
    404: "Unknown model, entity, push source, job or report",
    409: "The request conflicts with Tandem's state (a domain rule refused it)",
    413: "Request body too large",
    415: "The request body is not application/json",
    429: "Rate limit exceeded: retry after the Retry-After header's seconds",
    503: "A store (PostgreSQL or Redis) is unreachable, or no model is served",
}
_PUBLIC = ("/health/", "/schema", "/metrics")


def _codes(method: str, path: str) -> set[int]:
    """The error statuses a route can answer: access (every /v1 route), bodies, lookups, stores."""
    if path == "/health/ready":
        return {503}  # not ready: the readiness body, with `detail` and `status_code`
    if path.startswith(_PUBLIC):
        return set()
    codes = {400, 401, 403, 409, 429, 503}
    if method in {"POST", "PUT", "PATCH"}:
        codes |= {413, 415}
    if "{" in path or method == "POST":
        codes.add(404)
    return codes


def document_errors(app: Litestar) -> None:
    """Document in the OpenAPI schema the error answers every route can give, each with `ErrorBody`
    (a handler's own `responses` win). Call before the schema is first served."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler):
                continue
            documented = {
                code: ResponseSpec(data_container=ErrorBody, description=_WHY[code], generate_examples=False)
                for method in handler.http_methods
                for code in _codes(method, route.path)
            }
            handler.responses = {**documented, **(handler.responses or {})}
