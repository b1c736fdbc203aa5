"""What the skew policy needs of each model's latest skew report: which features are served wrong online,
whether parity is breached, and whether someone acknowledged the report.

A feature is *online-skewed* when the share of sampled entities whose online value is wrong (classes
`ONLINE_WRONG_CLASSES`: value mismatch, missing, stale, expired) reaches the report's
`mismatch_rate_breach` threshold. Distribution distances (PSI, JS) alone never steer: pushes after the
watermark move the online distribution legitimately. Parity is breached when the report's parity status is
`breach` (stored scores disagree with live re-scores of entities whose inputs did not change).

`steering_report` is pure; `latest_steering_reports` reads the newest report of each model (no examples or
histograms) and, like every function here, takes the session first and never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.records.skew_models import ONLINE_WRONG_CLASSES, utc_or_none
from core.records.tables import SkewFinding, SkewReport

__all__ = ["SteeringReport", "latest_steering_reports", "online_wrong_rate", "steering_report"]


@dataclass(frozen=True, slots=True)
class SteeringReport:
    """A model's latest skew report, as far as steering is concerned."""

    model_name: str
    report_id: int
    report_at: datetime  # when the report finished (or was created): the steering's "since"
    model_version: str | None  # the version whose stored scores parity compared
    status: str
    skewed_refs: frozenset[str]  # "view:feature" whose online values are wrong beyond the breach threshold
    parity_breached: bool
    acked_at: datetime | None = None
    acked_by: str | None = None
    ack_comment: str | None = None

    @property
    def acked(self) -> bool:
        """Whether someone acknowledged the report."""
        return self.acked_at is not None

    @property
    def skewed_views(self) -> tuple[str, ...]:
        """The feature views of the online-skewed features, sorted."""
        return tuple(sorted({ref.split(":", 1)[0] for ref in self.skewed_refs}))


def online_wrong_rate(counts: Mapping[str, Any]) -> float:
    """Share of checked entities whose online value of the feature is wrong (0 when none were checked)."""
    checked = sum(int(count) for count in counts.values())
    wrong = sum(int(counts.get(name, 0)) for name in ONLINE_WRONG_CLASSES)
    return wrong / checked if checked else 0.0


def steering_report(
    *,
    model_name: str,
    report_id: int,
    report_at: datetime,
    model_version: str | None,
    status: str,
    summary: Mapping[str, Any],
    parity: Mapping[str, Any],
    findings: Iterable[tuple[str, str, Mapping[str, Any]]],
    default_breach: float,
    acked_at: datetime | None = None,
    acked_by: str | None = None,
    ack_comment: str | None = None,
) -> SteeringReport:
    """The steering view of one report; `findings` are (view, feature, counts per class), `default_breach`
    the threshold when the report does not record the one it was judged by."""
    thresholds = summary.get("thresholds") or {}
    breach = float(thresholds.get("mismatch_rate_breach", default_breach))
    skewed = frozenset(
        f"{view}:{feature}"
        for view, feature, counts in findings
        if (rate := online_wrong_rate(counts)) > 0 and rate >= breach
    )
    return SteeringReport(
        model_name=model_name,
        report_id=report_id,
        report_at=report_at.astimezone(UTC),
        model_version=model_version,
        status=status,
        skewed_refs=skewed,
        parity_breached=parity.get("status") == "breach",
        acked_at=utc_or_none(acked_at),
        acked_by=acked_by,
        ack_comment=ack_comment,
    )


def latest_steering_reports(
    session: Session, *, default_breach: float, model_names: Sequence[str] | None = None
) -> dict[str, SteeringReport]:
    """Each model's newest report (of the models in `model_names`, or every model), by model name."""
    rank = (
        func.row_number()
        .over(
            partition_by=SkewReport.model_name,
            order_by=(SkewReport.created_at.desc(), SkewReport.id.desc()),
        )
        .label("rank")
    )
    newest = select(SkewReport.id, rank).where(SkewReport.model_name.is_not(None))
    if model_names is not None:
        newest = newest.where(SkewReport.model_name.in_(list(model_names)))
    ranked = newest.subquery()
    query = (
        select(SkewReport)
        .join(ranked, ranked.c.id == SkewReport.id)
        .where(ranked.c.rank == 1)
        .order_by(SkewReport.model_name)
    )
    reports = list(session.scalars(query))
    findings: dict[int, list[tuple[str, str, Mapping[str, Any]]]] = {row.id: [] for row in reports}
    if reports:
        rows = session.execute(
            select(SkewFinding.report_id, SkewFinding.feature_view, SkewFinding.feature, SkewFinding.counts)
            .where(SkewFinding.report_id.in_(list(findings)))
            .order_by(SkewFinding.id)
        )
        for report_id, view, feature, counts in rows:
            findings[report_id].append((view, feature, dict(counts or {})))
    return {
        str(row.model_name): steering_report(
            model_name=str(row.model_name),
            report_id=row.id,
            report_at=row.finished_at or row.created_at,
            model_version=row.model_version,
            status=row.status,
            summary=dict(row.summary or {}),
            parity=dict(row.parity or {}),
            findings=findings[row.id],
            default_breach=default_breach,
            acked_at=row.acked_at,
            acked_by=row.acked_by,
            ack_comment=row.ack_comment,
        )
        for row in reports
    }
