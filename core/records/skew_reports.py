"""Skew reports in `tandem.skew_reports` / `tandem.skew_findings`: save, list, read, acknowledge.

The checker writes, the service and the command line read, all through these functions. Functions take the
session first, the rest keyword-only, and never commit: the caller owns the transaction, so a report and its
findings are written together or not at all (`with session.begin(): save_report(session, report=...)`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import AlreadyAcknowledgedError, NotFoundError
from core.records.skew_models import (
    FindingInfo,
    NewSkewReport,
    SkewReportInfo,
    SkewReportSummary,
    utc_or_none,
)
from core.records.tables import SkewFinding, SkewReport

__all__ = [
    "FindingInfo",
    "NewSkewReport",
    "SkewReportInfo",
    "SkewReportSummary",
    "ack_report",
    "check_ack_text",
    "get_report",
    "list_reports",
    "save_report",
]


def _info(row: SkewReport, findings: list[SkewFinding]) -> SkewReportInfo:
    return SkewReportInfo(
        id=row.id,
        created_at=row.created_at.astimezone(UTC),
        finished_at=utc_or_none(row.finished_at),
        feature_service=row.feature_service,
        model_name=row.model_name,
        model_version=row.model_version,
        watermark=row.watermark.astimezone(UTC),
        sample_size=row.sample_size,
        entities_checked=row.entities_checked,
        status=row.status,
        summary=dict(row.summary or {}),
        parity=dict(row.parity or {}),
        job_run_id=row.job_run_id,
        acked_at=utc_or_none(row.acked_at),
        acked_by=row.acked_by,
        ack_comment=row.ack_comment,
        findings=tuple(FindingInfo.of(finding) for finding in findings),
    )


def save_report(session: Session, *, report: NewSkewReport) -> SkewReportInfo:
    """Insert a report and its findings (flushed, not committed)."""
    row = SkewReport(
        created_at=report.created_at,
        finished_at=report.finished_at,
        feature_service=report.feature_service,
        model_name=report.model_name,
        model_version=report.model_version,
        watermark=report.watermark,
        sample_size=report.sample_size,
        entities_checked=report.entities_checked,
        status=report.status,
        summary=report.summary,
        parity=report.parity,
        job_run_id=report.job_run_id,
    )
    session.add(row)
    session.flush()
    findings = [
        SkewFinding(
            report_id=row.id,
            feature_view=finding.feature_view,
            feature=finding.feature,
            counts=dict(finding.counts),
            mismatch_rate=finding.mismatch_rate,
            mean_abs_diff=finding.mean_abs_diff,
            max_abs_diff=finding.max_abs_diff,
            psi=finding.psi,
            js_distance=finding.js_distance,
            status=finding.status,
            examples=list(finding.examples),
            histogram=dict(finding.histogram),
        )
        for finding in report.findings
    ]
    session.add_all(findings)
    session.flush()
    return _info(row, findings)


def _row(session: Session, report_id: int) -> SkewReport:
    row = session.get(SkewReport, report_id)
    if row is None:
        raise NotFoundError(f"skew report {report_id} does not exist (see `tandem skew list`)")
    return row


def get_report(session: Session, *, report_id: int) -> SkewReportInfo:
    """The report with its findings, or NotFoundError naming the id."""
    row = _row(session, report_id)
    findings = list(
        session.scalars(
            select(SkewFinding).where(SkewFinding.report_id == report_id).order_by(SkewFinding.id)
        )
    )
    return _info(row, findings)


def list_reports(
    session: Session, *, limit: int = 50, feature_service: str | None = None, model_name: str | None = None
) -> list[SkewReportSummary]:
    """The newest reports first (of one model, or one feature service), each with its overall and worst
    per-feature mismatch rate."""
    worst_rate = (
        select(func.max(SkewFinding.mismatch_rate))
        .where(SkewFinding.report_id == SkewReport.id)
        .scalar_subquery()
    )
    query = select(SkewReport, worst_rate).order_by(SkewReport.created_at.desc(), SkewReport.id.desc())
    if feature_service is not None:
        query = query.where(SkewReport.feature_service == feature_service)
    if model_name is not None:
        query = query.where(SkewReport.model_name == model_name)
    summaries = []
    for row, max_rate in session.execute(query.limit(limit)).all():
        summary, parity = dict(row.summary or {}), dict(row.parity or {})
        summaries.append(
            SkewReportSummary(
                id=row.id,
                created_at=row.created_at.astimezone(UTC),
                feature_service=row.feature_service,
                model_name=row.model_name,
                model_version=row.model_version,
                watermark=row.watermark.astimezone(UTC),
                entities_checked=row.entities_checked,
                status=row.status,
                mismatch_rate=float(summary.get("mismatch_rate", 0.0)),
                max_feature_mismatch_rate=float(max_rate or 0.0),
                parity_status=parity.get("status"),
                acked_at=utc_or_none(row.acked_at),
                acked_by=row.acked_by,
            )
        )
    return summaries


ACK_TEXT_MAX = 2_000


def check_ack_text(by: str, comment: str) -> None:
    """ValueError naming the field when `by` is blank, or either text is longer than ACK_TEXT_MAX characters
    or holds control characters (a NUL PostgreSQL refuses, a terminal escape); tabs and newlines are fine."""
    if not by.strip():
        raise ValueError("field 'by' must name who acknowledges the report (an acknowledgement needs a name)")
    for name, text in (("by", by), ("comment", comment)):
        if any(ord(char) < 32 and char not in "\t\n" for char in text) or len(text) > ACK_TEXT_MAX:
            raise ValueError(
                f"field {name!r} must be at most {ACK_TEXT_MAX:,} characters without control characters"
            )


def ack_report(
    session: Session,
    *,
    report_id: int,
    by: str,
    comment: str,
    at: datetime | None = None,
    replace: bool = True,
) -> SkewReportInfo:
    """Record who acknowledged the report, when, and why: the one acknowledgement path of the API and the
    command line. Bad text is a ValueError naming the field (`check_ack_text`), an unknown id NotFoundError;
    a report already acknowledged is acknowledged again (the later ack replaces the earlier one) with
    `replace`, else AlreadyAcknowledgedError naming who did it and when."""
    check_ack_text(by, comment)
    who = by.strip()
    if at is not None and at.tzinfo is None:
        raise ValueError("at must be timezone-aware (UTC)")
    row = _row(session, report_id)
    if row.acked_at is not None and not replace:
        raise AlreadyAcknowledgedError(
            f"skew report {report_id} is already acknowledged by {row.acked_by} at "
            f"{row.acked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (pass --replace to replace it)"
        )
    row.acked_by = who
    row.ack_comment = comment.strip()
    row.acked_at = at or datetime.now(UTC)
    session.flush()
    return get_report(session, report_id=report_id)
