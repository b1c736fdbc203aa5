"""The app factory: routes, access (scoped API keys, rate limit), error mapping, OpenAPI with the API-key
scheme, Prometheus middleware."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.datastructures import ResponseHeader, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig
from sqlalchemy import Engine

from core.errors import StoreUnavailableError
from core.push.service import PushService
from core.settings import Settings
from service.auth import API_KEY_HEADER, SECURITY, AccessPolicy, access_guard, require_api_key
from service.errors import EXCEPTION_HANDLERS, document_errors
from service.health import HealthController, metrics
from service.jobs import JobsController
from service.lifespan import lifespan
from service.metrics import PREDICT_ROUTES
from service.predict import PredictController
from service.push import PushController
from service.rate_limit import rate_limit_lifespan
from service.skew.api import skew_api_controller
from service.skew.pages import SkewPagesController, skew_template_config
from service.state import Services

__all__ = ["create_app"]

NOSNIFF = [ResponseHeader(name="X-Content-Type-Options", value="nosniff")]


def _services(state: State) -> Services:
    services: Services = state.tandem
    return services


def _push(state: State) -> PushService:
    return _services(state).push


def _settings(state: State) -> Settings:
    return _services(state).settings


def _db_engine(state: State) -> Engine:
    """The worker's SQLAlchemy engine, for handlers that read Tandem's tables."""
    engine = _services(state).engine
    if engine is None:
        raise StoreUnavailableError("PostgreSQL is not configured for Tandem's tables")
    return engine


async def _json_bodies_only(request: Request[Any, Any, Any]) -> None:
    """A request body must say it is JSON: `text/plain` and friends are a 415, not parsed anyway."""
    if request.method in {"POST", "PUT", "PATCH"} and request.headers.get("content-length", "0") not in {
        "",
        "0",
    }:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(
                status_code=415, detail=f"content-type: expected application/json, got {media_type or 'none'}"
            )


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Litestar:
    """A Tandem API for `settings` (read from the environment when omitted).

    The lifespan opens the configured stores and builds the services; `services` given here are used as
    they are (handler tests on in-memory fakes), and stay the caller's to close. A malformed API-key setting
    raises ConfigurationError here, before anything is served.
    """
    settings = settings or (services.settings if services is not None else Settings())
    prometheus = PrometheusConfig(
        app_name="tandem", prefix="tandem_http", group_path=True, exclude=list(PREDICT_ROUTES)
    )
    openapi = OpenAPIConfig(
        title="Tandem",
        version="0.1.0",
        description="Batch and live predictions from one Feast feature definition.",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="apiKey", name=API_KEY_HEADER, security_scheme_in="header")
            }
        ),
    )
    config = AppConfig(
        route_handlers=[
            SkewPagesController,
            skew_api_controller(write_guards=[require_api_key], write_security=SECURITY),
            PredictController,
            PushController,
            JobsController,
            HealthController,
            metrics,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "push_service": Provide(_push, sync_to_thread=False),
            "settings": Provide(_settings, sync_to_thread=False),
            "db_engine": Provide(_db_engine, sync_to_thread=False),
        },
        template_config=skew_template_config(),
        lifespan=[lifespan, rate_limit_lifespan],
        guards=[access_guard],
        response_headers=NOSNIFF,
        middleware=[prometheus.middleware],
        openapi_config=openapi,
        state=State(
            {
                "settings": settings,
                "access": AccessPolicy.from_settings(
                    settings.api_keys.get_secret_value(), read_keys_required=settings.read_keys_required
                ),
                **({"tandem": services} if services is not None else {}),
            }
        ),
        request_max_body_size=settings.max_body_bytes,
        before_request=_json_bodies_only,
    )
    app = Litestar.from_config(config)
    document_errors(app)
    return app
