"""`GET /health/live`, `GET /health/ready` and `GET /metrics`."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from service.state import Services

__all__ = ["METRICS_DIR_ENV", "HealthController", "check_stores", "metrics"]


METRICS_DIR_ENV = "TANDEM_PROMETHEUS_DIR"
"""Set by `tandem serve --workers N`: where every worker's metric values live (Tandem's own variable: Feast
sets PROMETHEUS_MULTIPROC_DIR to a directory of its own when it is imported)."""


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics() -> Response[bytes]:
    """Prometheus exposition: this worker's registry, or every worker's with `tandem serve --workers N`."""
    directory = os.environ.get(METRICS_DIR_ENV)
    registry = REGISTRY
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def check_stores(services: Services) -> None:
    """Ping both stores with their short timeouts and record the answers."""
    online, offline = await asyncio.gather(services.probe.online_ok(), services.probe.offline_ok())
    services.models.health.mark(online=online, offline=offline)


class HealthController(Controller):
    """Liveness and readiness."""

    tags = ["health"]  # noqa: RUF012 - Litestar reads class attributes

    @get("/health/live", summary="The process is up")
    async def live(self) -> dict[str, str]:
        """Always 200 while the event loop runs."""
        return {"status": "live"}

    @get("/health/ready", summary="Ready to serve: model loaded and warmed, stores answering or degraded")
    async def ready(self, services: NamedDependency[Services]) -> Response[dict[str, Any]]:
        """200 when the model is loaded and warmed up and at least one store answers (degraded if one is down)."""
        await check_stores(services)
        health = services.models.health
        loaded = {name: prediction.model.version for name, prediction in services.models if prediction.model}
        down = [
            name for name, ok in (("redis", health.online_ok), ("postgresql", health.offline_ok)) if not ok
        ]
        problems = []
        refused = dict(services.models.refused)
        if not loaded:
            problems.append(
                "no promoted model is loaded"
                + (
                    ""
                    if services.models.synced
                    else ": PostgreSQL, which holds the models, has not answered yet"
                )
                + "".join(f"; model {name} is refused: {why}" for name, why in sorted(refused.items()))
            )
        elif not services.warmed_up:
            problems.append("warming up")
        if len(down) == 2:
            problems.append("both stores are unreachable")
        body: dict[str, Any] = {
            "ready": not problems,
            "models": loaded,
            "redis": "ok" if health.online_ok else "down",
            "postgresql": "ok" if health.offline_ok else "down",
            "checked_at": health.checked_at.isoformat(),
            "degraded": bool(down),
            "refused_models": refused,
            "degraded_mode": (
                "online_unavailable: stored predictions from PostgreSQL"
                if down == ["redis"]
                else "registry_unavailable: live path only"
                if down == ["postgresql"]
                else None
            ),
        }
        if problems:
            body["detail"] = "; ".join(problems)
            body["status_code"] = 503
        return Response(body, status_code=503 if problems else 200)
