"""HTML review pages of skew reports: `GET /skew` (what the skew policy does to each model and since which
report, reports, status badges, mismatch-rate trend) and `GET /skew/{id}` (whether the report steers its
model now or an ack stopped it, per-feature bars, offline vs online histograms, examples, parity,
acknowledgement).

Server-rendered with Litestar's Jinja templates (`service/templates/skew/`); charts are inline SVG whose
geometry `service.skew.charts` computes. The app provides a SQLAlchemy `Engine` as dependency `db_engine`,
the `Settings` as `settings` (the policy and its thresholds), and a template config on `TEMPLATES_DIR` (see `skew_template_config`).

Every page carries a Content-Security-Policy that allows no script at all and only the page's own `<style>`
block (a fresh nonce per answer; the templates hold no `style` attribute), refuses framing
(`frame-ancestors 'none'`, `X-Frame-Options: DENY`), sniffing and referrers.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Controller, MediaType, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.records.skew_models import CLASSES, SKEW_CLASSES, SkewReportInfo
from core.records.skew_reports import get_report, list_reports
from core.serving.blend import SkewPolicy
from core.serving.steering import ModelSteering, steering_overview
from core.settings import Settings
from service.skew.api import ReportId
from service.skew.charts import histogram_chart, mismatch_bars, percent, trend_chart

__all__ = ["TEMPLATES_DIR", "SkewPagesController", "page_headers", "report_context", "skew_template_config"]

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
_TREND_REPORTS = 60


def skew_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja templates from `service/templates` (the app may use its own config on the same folder)."""
    return TemplateConfig(directory=TEMPLATES_DIR, engine=JinjaTemplateEngine)


def page_headers(nonce: str) -> dict[str, str]:
    """The security headers of an HTML page whose `<style>` carries `nonce`."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _page(template_name: str, context: dict[str, Any]) -> Template:
    nonce = secrets.token_urlsafe(18)
    return Template(
        template_name=template_name, context={**context, "csp_nonce": nonce}, headers=page_headers(nonce)
    )


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _moment(iso: str | None) -> str:
    """An ISO time from an example as `YYYY-MM-DD HH:MM:SS[.ffffff]` UTC, '-' for none."""
    if not iso:
        return "-"
    return (
        datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f").removesuffix(".000000")
    )


def _overview(session: Session, settings: Settings) -> list[ModelSteering]:
    return steering_overview(
        session,
        policy=SkewPolicy(settings.skew_policy),
        ack_stops=settings.skew_ack_stops_steering,
        default_breach=settings.mismatch_rate_breach,
    )


def _policy_context(settings: Settings, steering: list[ModelSteering]) -> dict[str, Any]:
    return {
        "policy": settings.skew_policy,
        "ack_stops": settings.skew_ack_stops_steering,
        "poll_s": settings.model_poll_s,
        "steering": steering,
    }


def report_context(
    report: SkewReportInfo, *, settings: Settings | None = None, steering: ModelSteering | None = None
) -> dict[str, Any]:
    """Everything the report template draws (`steering`: what the policy does to the report's model now)."""
    thresholds = report.summary.get("thresholds", {})
    findings = [
        {
            "info": finding,
            "rate": percent(finding.mismatch_rate),
            "skewed": sum(finding.counts.get(name, 0) for name in SKEW_CLASSES),
            "chart": histogram_chart(finding.histogram),
        }
        for finding in report.findings
    ]
    examples = [
        {
            "ref": finding.ref,
            **example,
            "offline_text": _format(example.get("offline")),
            "online_text": _format(example.get("online")),
            "offline_ts_text": _moment(example.get("offline_ts")),
            "online_ts_text": _moment(example.get("online_ts")),
        }
        for finding in report.findings
        for example in finding.examples
    ]
    return {
        "report": report,
        "classes": CLASSES,
        "skew_classes": SKEW_CLASSES,
        "totals": report.summary.get("counts", {}),
        "mismatch_rate": percent(report.mismatch_rate),
        "findings": findings,
        "bars": mismatch_bars(
            [(f.ref, f.mismatch_rate, f.status) for f in report.findings],
            warn=float(thresholds.get("mismatch_rate_warn", 0.001)),
            breach=float(thresholds.get("mismatch_rate_breach", 0.01)),
        ),
        "thresholds": thresholds,
        "examples": examples,
        "parity": report.parity,
        "fmt": _format,
        "model_steering": steering,
        "steers_now": steering is not None
        and steering.report is not None
        and steering.report.report_id == report.id,
        **(_policy_context(settings, [steering] if steering else []) if settings is not None else {}),
    }


class SkewPagesController(Controller):
    """The skew review pages (HTML; not part of the OpenAPI schema)."""

    path = "/skew"
    include_in_schema = False

    @get("/", media_type=MediaType.HTML, sync_to_thread=True)
    def reports_page(
        self, db_engine: NamedDependency[Engine], settings: NamedDependency[Settings]
    ) -> Template:
        """What the skew policy does to each model and since which report; newest reports first, with
        status badges and a mismatch-rate trend."""
        with Session(db_engine) as session:
            reports = list_reports(session, limit=_TREND_REPORTS)
            steering = _overview(session, settings)
        trend = trend_chart([(r.id, r.created_at, r.mismatch_rate, r.status) for r in reports])
        return _page(
            "skew/list.html",
            {"reports": reports, "trend": trend, "percent": percent, **_policy_context(settings, steering)},
        )

    @get("/{report_id:int}", media_type=MediaType.HTML, sync_to_thread=True)
    def report_page(
        self, db_engine: NamedDependency[Engine], settings: NamedDependency[Settings], report_id: ReportId
    ) -> Template:
        """One report: what the policy does with it, bars, histograms, examples, parity, acknowledgement."""
        try:
            with Session(db_engine) as session:
                report = get_report(session, report_id=report_id)
                steering = next(
                    (s for s in _overview(session, settings) if s.model == report.model_name), None
                )
        except NotFoundError as exc:
            raise NotFoundException(detail=str(exc)) from None
        return _page("skew/report.html", report_context(report, settings=settings, steering=steering))
