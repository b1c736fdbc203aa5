"""Skew report persistence on the session database: all-or-nothing saves, newest-first lists, reads,
acknowledgements, and the Prometheus gauges set from a report."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from core.records.skew_metrics import record_skew_metrics
from core.records.skew_reports import ack_report, get_report, list_reports, save_report
from core.records.tables import SkewFinding, SkewReport
from tests.skew_samples import sample_report


def test_a_failing_save_leaves_no_report(engine: Engine) -> None:
    """A finding that cannot be written (a duplicate feature) rolls back the report row too."""
    marker = f"svc_{uuid.uuid4().hex[:8]}"
    report = dataclasses.replace(sample_report(entities=200), feature_service=marker)
    broken = dataclasses.replace(report, findings=(*report.findings, report.findings[0]))
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        save_report(session, report=broken)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).where(SkewReport.feature_service == marker)) == 0
        orphans = (
            select(func.count()).select_from(SkewFinding).outerjoin(SkewReport).where(SkewReport.id.is_(None))
        )
        assert session.scalar(orphans) == 0


def test_save_list_get_ack(engine: Engine) -> None:
    """A saved report reads back equal; the list is newest first and limited; ack records who, when, why,
    and a later ack replaces it; unknown ids and nameless acks are refused."""
    with Session(engine) as session, session.begin():
        first = save_report(session, report=sample_report(entities=300, seed=4))
    with Session(engine) as session, session.begin():
        second = save_report(session, report=sample_report(entities=300, seed=5))
    with Session(engine) as session:
        assert get_report(session, report_id=first.id) == first
        listed = list_reports(session, limit=2)
        assert [item.id for item in listed] == [second.id, first.id]
        assert listed[0].max_feature_mismatch_rate == max(f.mismatch_rate for f in second.findings)
        assert listed[0].mismatch_rate == pytest.approx(second.mismatch_rate)
        with pytest.raises(NotFoundError, match="987654321"):
            get_report(session, report_id=987654321)
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        acked = ack_report(session, report_id=first.id, by=" ana ", comment=" known lag ", at=at)
    assert (acked.acked_by, acked.ack_comment, acked.acked_at) == ("ana", "known lag", at)
    with Session(engine) as session, session.begin():
        again = ack_report(session, report_id=first.id, by="bo", comment="fixed")
        assert again.acked_by == "bo"
        assert again.acked_at is not None
        assert again.acked_at > at
        with pytest.raises(ValueError, match="who acknowledges"):
            ack_report(session, report_id=first.id, by="  ", comment="")
        with pytest.raises(NotFoundError):
            ack_report(session, report_id=987654321, by="ana", comment="")


def test_metrics_follow_the_latest_report(engine: Engine) -> None:
    """The skew ratio gauge per (model, view, feature) and the model's status gauge (0 ok, 1 warn, 2 breach)."""
    with Session(engine) as session, session.begin():
        report = save_report(session, report=sample_report(entities=300, seed=6, skew=0.05))
    record_skew_metrics(report)
    finding = report.findings[0]
    model = {"model": "customer_risk"}
    ratio = REGISTRY.get_sample_value(
        "tandem_feature_skew_ratio", {**model, "view": finding.feature_view, "feature": finding.feature}
    )
    assert ratio == pytest.approx(finding.mismatch_rate)
    assert (
        REGISTRY.get_sample_value("tandem_skew_report_status", model)
        == {"ok": 0, "warn": 1, "breach": 2}[report.status]
    )
    assert REGISTRY.get_sample_value("tandem_skew_report_timestamp_seconds", model) == pytest.approx(
        report.finished_at.timestamp() if report.finished_at else 0
    )
