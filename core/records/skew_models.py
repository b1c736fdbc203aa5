"""The values of skew reports as the checker builds them and readers get them: detached, JSON-ready.

Persistence lives in `core.records.skew_reports`; these dataclasses carry no session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from core.records.tables import SkewFinding

__all__ = [
    "CLASSES",
    "ONLINE_WRONG_CLASSES",
    "SKEW_CLASSES",
    "FindingInfo",
    "NewSkewReport",
    "SkewClass",
    "SkewReportInfo",
    "SkewReportSummary",
    "utc_or_none",
]


SkewClass = Literal[
    "match",
    "value_mismatch",
    "missing_online",
    "stale_online",
    "fresher_online",
    "expired_online",
    "online_only_fresh",
]
CLASSES: tuple[SkewClass, ...] = (
    "match",
    "value_mismatch",
    "missing_online",
    "stale_online",
    "fresher_online",
    "expired_online",
    "online_only_fresh",
)
"""Every class, in report order; `classify_column` returns indices into this tuple (new classes go last:
saved reports keep their meaning)."""
SKEW_CLASSES: frozenset[SkewClass] = frozenset(
    {"value_mismatch", "missing_online", "stale_online", "expired_online", "online_only_fresh"}
)
"""The classes that count toward a feature's mismatch rate."""
ONLINE_WRONG_CLASSES: frozenset[SkewClass] = frozenset(
    {"value_mismatch", "missing_online", "stale_online", "expired_online"}
)
"""The skew classes where the online store serves a wrong value (what steers serving to stored scores).
`online_only_fresh` is skew too, but there online holds the newest value and the offline store lost it."""


def utc_or_none(moment: datetime | None) -> datetime | None:
    """The moment in UTC, None stays None."""
    return moment.astimezone(UTC) if moment is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class FindingInfo:
    """One feature of a report: counts per class, distances, status, examples and chart histogram."""

    feature_view: str
    feature: str
    counts: dict[str, int]
    mismatch_rate: float
    mean_abs_diff: float | None
    max_abs_diff: float | None
    psi: float | None
    js_distance: float | None
    status: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    histogram: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """`view:feature`."""
        return f"{self.feature_view}:{self.feature}"

    @classmethod
    def of(cls, row: SkewFinding) -> FindingInfo:
        """Copy an ORM row into a detached value."""
        return cls(
            feature_view=row.feature_view,
            feature=row.feature,
            counts={str(k): int(v) for k, v in row.counts.items()},
            mismatch_rate=row.mismatch_rate,
            mean_abs_diff=row.mean_abs_diff,
            max_abs_diff=row.max_abs_diff,
            psi=row.psi,
            js_distance=row.js_distance,
            status=row.status,
            examples=list(row.examples or []),
            histogram=dict(row.histogram or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "feature_view": self.feature_view,
            "feature": self.feature,
            "counts": dict(self.counts),
            "mismatch_rate": self.mismatch_rate,
            "mean_abs_diff": self.mean_abs_diff,
            "max_abs_diff": self.max_abs_diff,
            "psi": self.psi,
            "js_distance": self.js_distance,
            "status": self.status,
            "examples": list(self.examples),
            "histogram": dict(self.histogram),
        }


@dataclass(frozen=True, slots=True)
class NewSkewReport:
    """What the checker saves: one report and its findings."""

    feature_service: str
    model_name: str | None
    model_version: str | None
    watermark: datetime
    sample_size: int
    entities_checked: int
    status: str
    summary: dict[str, Any]
    parity: dict[str, Any]
    findings: tuple[FindingInfo, ...]
    created_at: datetime
    finished_at: datetime
    job_run_id: int | None = None


@dataclass(frozen=True, slots=True)
class SkewReportInfo:
    """A saved report with its findings (feature service order), detached from any session."""

    id: int
    created_at: datetime
    finished_at: datetime | None
    feature_service: str
    model_name: str | None
    model_version: str | None
    watermark: datetime
    sample_size: int
    entities_checked: int
    status: str
    summary: dict[str, Any]
    parity: dict[str, Any]
    job_run_id: int | None
    acked_at: datetime | None
    acked_by: str | None
    ack_comment: str | None
    findings: tuple[FindingInfo, ...]

    @property
    def mismatch_rate(self) -> float:
        """Skewed (entity, feature) pairs over all checked pairs."""
        return float(self.summary.get("mismatch_rate", 0.0))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the API's report body)."""
        return {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at),
            "feature_service": self.feature_service,
            "model": self.model_name,
            "model_version": self.model_version,
            "watermark": _iso(self.watermark),
            "sample_size": self.sample_size,
            "entities_checked": self.entities_checked,
            "status": self.status,
            "mismatch_rate": self.mismatch_rate,
            "summary": dict(self.summary),
            "parity": dict(self.parity),
            "job_run_id": self.job_run_id,
            "ack": {"at": _iso(self.acked_at), "by": self.acked_by, "comment": self.ack_comment},
            "findings": [finding.to_json() for finding in self.findings],
        }


@dataclass(frozen=True, slots=True)
class SkewReportSummary:
    """A report's list entry: status, rates for the trend, ack state."""

    id: int
    created_at: datetime
    feature_service: str
    model_name: str | None
    model_version: str | None
    watermark: datetime
    entities_checked: int
    status: str
    mismatch_rate: float
    max_feature_mismatch_rate: float
    parity_status: str | None
    acked_at: datetime | None
    acked_by: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (an item of the API's report list)."""
        return {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "feature_service": self.feature_service,
            "model": self.model_name,
            "model_version": self.model_version,
            "watermark": _iso(self.watermark),
            "entities_checked": self.entities_checked,
            "status": self.status,
            "mismatch_rate": self.mismatch_rate,
            "max_feature_mismatch_rate": self.max_feature_mismatch_rate,
            "parity_status": self.parity_status,
            "ack": {"at": _iso(self.acked_at), "by": self.acked_by},
        }
