"""`GET /v1/jobs/runs` and `POST /v1/jobs/{name}/run`: job history and on-demand runs for the scheduler.

A failed run's `error` is `Type: message` in PostgreSQL; the message may hold hosts, paths, SQL or data, so
the API shows it to admin keys only, and to everyone else the exception type alone (enough to tell a store
outage from a bug; `tandem runs` on the operator's machine shows the whole line).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.records.job_runs import JobRunInfo, forecast_batch_deadline, list_job_runs, request_job_run
from core.settings import Settings
from service.auth import SECURITY, Scope, principal_of, require_api_key
from service.errors import NAME_PATTERN

__all__ = ["JobsController", "error_for"]

_PLAIN = re.compile(r"[a-z][a-z ]{0,40}")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def error_for(error: str | None, *, admin: bool) -> str | None:
    """The error as the caller may see it: whole for admins, else the exception type before the first ':'."""
    if error is None or admin:
        return error
    if _PLAIN.fullmatch(error):  # Tandem's own words (e.g. "process died"), not an exception's text
        return error
    head, colon, _ = error.partition(":")
    return head.strip() if colon and head.strip().isidentifier() else "error"


def _run(run: JobRunInfo, *, admin: bool) -> dict[str, Any]:
    return {
        "id": run.id,
        "job": run.job,
        "trigger": run.trigger,
        "status": run.status,
        "requested_at": _iso(run.requested_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": run.duration_s,
        "rows": run.rows,
        "attempt": run.attempt,
        "error": error_for(run.error, admin=admin),
    }


class JobsController(Controller):
    """The scheduler's record, read from PostgreSQL; run requests are picked up by its leader."""

    tags = ["jobs"]  # noqa: RUF012 - Litestar reads class attributes

    @get("/v1/jobs/runs", sync_to_thread=True, summary="Job run history and the batch deadline forecast")
    def runs(
        self,
        request: Request[Any, Any, Any],
        db_engine: NamedDependency[Engine],
        settings: NamedDependency[Settings],
        job: Annotated[
            str | None, QueryParameter(pattern=NAME_PATTERN, description="Only this job's runs")
        ] = None,
        limit: FromQuery[int] = 50,
    ) -> dict[str, Any]:
        """Newest runs first, with durations, rows, status; and when batch predictions will be ready. A failed
        run's error text is shown to admin keys; others see its exception type."""
        admin = principal_of(request).scope == Scope.ADMIN
        with Session(db_engine) as session:
            runs = list_job_runs(session, job=job, limit=max(1, min(limit, 500)))
            forecast = forecast_batch_deadline(session, settings=settings, now=datetime.now(UTC))
        return {
            "runs": [_run(run, admin=admin) for run in runs],
            "deadline": {
                "next_start": _iso(forecast.next_start),
                "expected_finish": _iso(forecast.expected_finish),
                "deadline": _iso(forecast.deadline),
                "slack_s": forecast.slack_s,
                "late": forecast.late,
                "samples": forecast.samples,
            },
        }

    @post(
        "/v1/jobs/{name:str}/run",
        guards=[require_api_key],
        security=SECURITY,
        sync_to_thread=True,
        status_code=202,
        summary="Ask the scheduler to run a job now",
    )
    def request_run(self, db_engine: NamedDependency[Engine], name: FromPath[str]) -> dict[str, Any]:
        """Records a request; the scheduler's leader claims and runs it within seconds."""
        with Session(db_engine) as session, session.begin():
            run_id = request_job_run(session, job=name, requested_by="api")
        return {"id": run_id, "job": name, "status": "requested"}
