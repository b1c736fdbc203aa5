"""JSON API of skew reports: list, read one, acknowledge one.

- `GET /v1/skew/reports?limit=N` -> `{"reports": [...]}`, newest first;
- `GET /v1/skew/reports/{id}` -> the report with its findings and parity (404 for an unknown id);
- `GET /v1/skew/steering` -> `{"policy": ..., "models": [...]}`: what the skew policy does to each model
  now, from its latest report (as the API's watcher computes it);
- `POST /v1/skew/reports/{id}/ack` `{"by": "...", "comment": "..."}` -> the acknowledged report. The write
  guard (API key) is the app's: pass it as `write_guards` to `skew_api_controller`.

Handlers read through `core.records.skew_reports` with the `db_engine` dependency the app provides; domain errors
become HTTP errors here: NotFoundError -> 404, bad text (`core.records.skew_reports.check_ack_text`) -> 400, both as `{"detail", "status_code"}`
(the app's exception handlers may reshape them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.spec import SecurityRequirement
from litestar.params import JSONBody, Parameter, QueryParameter
from litestar.types import Guard
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.records.skew_reports import ack_report, check_ack_text, get_report, list_reports
from core.serving.blend import SkewPolicy
from core.serving.steering import steering_overview
from core.settings import Settings
from service.errors import NAME_PATTERN

__all__ = ["AckRequest", "ReportId", "skew_api_controller"]

ReportId = Annotated[int, Parameter(ge=1, le=2**63 - 1, description="A skew report's id")]
"""A report id as the path carries it: bounded like PostgreSQL's bigint (a larger one is a 400, not a 500)."""


@dataclass(frozen=True, slots=True)
class AckRequest:
    """Who acknowledges a report, and why."""

    by: str
    comment: str = ""


def _not_found(exc: NotFoundError) -> NotFoundException:
    return NotFoundException(detail=str(exc))


def skew_api_controller(
    *, write_guards: Sequence[Guard] = (), write_security: Sequence[SecurityRequirement] | None = None
) -> type[Controller]:
    """The controller class; `write_guards` protect the acknowledgement route (e.g. the API-key guard) and
    `write_security` documents it in the OpenAPI schema (e.g. `[{"apiKey": []}]`)."""

    class SkewApiController(Controller):
        """Skew reports as JSON."""

        path = "/v1/skew"
        tags = ["skew"]  # noqa: RUF012 - Litestar reads a plain class attribute

        @get("/reports", sync_to_thread=True, summary="Skew reports, newest first")
        def list_skew_reports(
            self,
            db_engine: NamedDependency[Engine],
            limit: Annotated[int, QueryParameter(ge=1, le=500, description="How many reports")] = 50,
            model: Annotated[
                str | None, QueryParameter(pattern=NAME_PATTERN, description="Only this model's reports")
            ] = None,
        ) -> dict[str, Any]:
            """Each report's model, status, mismatch rates (overall and worst feature), parity status and ack."""
            with Session(db_engine) as session:
                reports = list_reports(session, limit=limit, model_name=model)
            return {"reports": [report.to_json() for report in reports]}

        @get("/steering", sync_to_thread=True, summary="What the skew policy does to each model")
        def skew_steering(
            self,
            db_engine: NamedDependency[Engine],
            settings: NamedDependency[Settings],
            model: Annotated[
                str | None, QueryParameter(pattern=NAME_PATTERN, description="Only this model")
            ] = None,
        ) -> dict[str, Any]:
            """Per model: whether its latest report steers its `auto` answers (`active`, policy enforce) or
            only names the row in them (`advised`, policy annotate), the reason, the report and since when,
            and whether an acknowledgement stopped it. API workers apply a change within
            `TANDEM_MODEL_POLL_S`."""
            with Session(db_engine) as session:
                overview = steering_overview(
                    session,
                    policy=SkewPolicy(settings.skew_policy),
                    ack_stops=settings.skew_ack_stops_steering,
                    default_breach=settings.mismatch_rate_breach,
                )
            return {
                "policy": settings.skew_policy,
                "ack_stops_steering": settings.skew_ack_stops_steering,
                "models": [item.to_json() for item in overview if model is None or item.model == model],
            }

        @get("/reports/{report_id:int}", sync_to_thread=True, summary="One skew report")
        def get_skew_report(self, db_engine: NamedDependency[Engine], report_id: ReportId) -> dict[str, Any]:
            """The report with per-feature findings (counts, distances, examples, histograms) and parity."""
            try:
                with Session(db_engine) as session:
                    return get_report(session, report_id=report_id).to_json()
            except NotFoundError as exc:
                raise _not_found(exc) from None

        @post(
            "/reports/{report_id:int}/ack",
            guards=list(write_guards),
            security=write_security,
            sync_to_thread=True,
            status_code=200,
            summary="Acknowledge a skew report",
        )
        def ack_skew_report(
            self, db_engine: NamedDependency[Engine], report_id: ReportId, data: JSONBody[AckRequest]
        ) -> dict[str, Any]:
            """Record who acknowledged the report and a comment (a later ack replaces an earlier one). An
            acknowledged report stops steering answers while `TANDEM_SKEW_ACK_STOPS_STEERING` holds (within
            `TANDEM_MODEL_POLL_S` on every API worker)."""
            try:
                check_ack_text(data.by, data.comment)  # before the database: a NUL never reaches it
                with Session(db_engine) as session, session.begin():
                    return ack_report(
                        session, report_id=report_id, by=data.by, comment=data.comment
                    ).to_json()
            except ValueError as exc:
                raise ValidationException(detail=str(exc)) from None
            except NotFoundError as exc:
                raise _not_found(exc) from None

    return SkewApiController
