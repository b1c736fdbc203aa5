"""A served model's steering: what its latest skew report makes the blend prefer, under the skew policy.

Pure: the report (`core.records.skew_steering.SteeringReport`, loaded off the request path by the API's
watcher) plus the serving model's version and the features it reads give a `ModelSteering`, whose `steer`
goes into every `auto` decision of the model (`core.serving.blend`). Rules, first match wins:

1. policy `off`, or no report -> no steering;
2. the report is acknowledged and acknowledgements stop steering (`TANDEM_SKEW_ACK_STOPS_STEERING`) ->
   none (`stopped_by_ack`);
3. a feature the model reads is online-skewed -> prefer stored scores (`batch`, reason `online_skewed`);
   this wins over a parity breach in the same report, which online values that are wrong cause by
   themselves (parity re-scores on the online row);
4. parity is breached and the report compared the model version now serving -> prefer live (`live`,
   reason `parity_breached`); a breach of another version's stored scores says nothing of this one's;
5. otherwise none.

`active` is true when the policy is `enforce` and the model is steered; with `annotate` the same steer only
names itself in answers (`advised`). `steering_overview` reads what the review pages show (the only function
here that reads a store).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.records.skew_steering import SteeringReport, latest_steering_reports
from core.records.tables import ModelVersion
from core.serving.blend import Reason, SkewPolicy, Steer

__all__ = ["ModelSteering", "model_steering", "steer_of", "steering_overview"]


def steer_of(
    *, policy: SkewPolicy, online_skewed: bool, parity_breached: bool, acked: bool, ack_stops: bool
) -> Steer:
    """Rules 1-5 above on booleans (the report's own facts, already narrowed to the serving model)."""
    if policy is SkewPolicy.OFF or (acked and ack_stops):
        return Steer.NONE
    if online_skewed:
        return Steer.BATCH
    if parity_breached:
        return Steer.LIVE
    return Steer.NONE


@dataclass(frozen=True, slots=True)
class ModelSteering:
    """What the skew policy does to one model's answers, and which report made it so."""

    model: str
    policy: SkewPolicy
    steer: Steer
    report: SteeringReport | None = None
    skewed_refs: tuple[str, ...] = ()  # the online-skewed features this model reads
    parity_breached: bool = False  # of the version now serving
    stopped_by_ack: bool = False  # the report would steer, but it was acknowledged

    @property
    def reason(self) -> Reason | None:
        """The reason of the policy's row for this model (None: not steered)."""
        if self.steer is Steer.BATCH:
            return Reason.ONLINE_SKEWED
        if self.steer is Steer.LIVE:
            return Reason.PARITY_BREACHED
        return None

    @property
    def active(self) -> bool:
        """Whether the policy changes answers now (`enforce` and steered)."""
        return self.policy is SkewPolicy.ENFORCE and self.steer is not Steer.NONE

    @property
    def advised(self) -> bool:
        """Whether answers only name the row (`annotate` and steered)."""
        return self.policy is SkewPolicy.ANNOTATE and self.steer is not Steer.NONE

    @property
    def since(self) -> datetime | None:
        """When the report that steers (or would steer) finished."""
        return self.report.report_at if self.report is not None else None

    @property
    def skewed_views(self) -> tuple[str, ...]:
        """The feature views of `skewed_refs`, sorted."""
        return tuple(sorted({ref.split(":", 1)[0] for ref in self.skewed_refs}))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the API's steering overview)."""
        report = self.report
        return {
            "model": self.model,
            "policy": self.policy.value,
            "steer": self.steer.value,
            "reason": self.reason.value if self.reason is not None else None,
            "active": self.active,
            "advised": self.advised,
            "stopped_by_ack": self.stopped_by_ack,
            "skewed_features": list(self.skewed_refs),
            "parity_breached": self.parity_breached,
            "report_id": report.report_id if report is not None else None,
            "since": report.report_at.isoformat() if report is not None else None,
            "ack": {
                "at": report.acked_at.isoformat() if report is not None and report.acked_at else None,
                "by": report.acked_by if report is not None else None,
            },
            "summary": self.describe(),
        }

    def describe(self) -> str:
        """One line for people: what the policy does to this model and why."""
        if self.report is None:
            return "no skew report yet: not steered"
        where = f"report {self.report.report_id} ({self.report.report_at:%Y-%m-%d %H:%M:%S} UTC)"
        if self.policy is SkewPolicy.OFF:
            return "skew policy off: not steered"
        if self.stopped_by_ack:
            return f"not steered: {where} was acknowledged by {self.report.acked_by}"
        if self.steer is Steer.BATCH:
            what = f"online values of {', '.join(self.skewed_views)} are wrong: stored scores preferred"
        elif self.steer is Steer.LIVE:
            what = "stored scores disagree with live ones: live re-scores preferred"
        else:
            return f"not steered: {where} has no breach that steers"
        verb = "steering" if self.active else "advising only (annotate)"
        return f"{verb} since {where}: {what}"


def model_steering(
    model: str,
    report: SteeringReport | None,
    *,
    policy: SkewPolicy,
    ack_stops: bool,
    model_version: str | None,
    feature_refs: Collection[str] | None,
) -> ModelSteering:
    """The steering of `model` (serving `model_version`, reading `feature_refs`; None: every feature of the
    report) from its latest report."""
    if report is None:
        return ModelSteering(model, policy, Steer.NONE)
    reads = report.skewed_refs if feature_refs is None else report.skewed_refs & frozenset(feature_refs)
    skewed = tuple(sorted(reads))
    parity = report.parity_breached and model_version is not None and report.model_version == model_version
    facts = {"online_skewed": bool(skewed), "parity_breached": parity}
    steer = steer_of(policy=policy, acked=report.acked, ack_stops=ack_stops, **facts)
    unacked = steer_of(policy=policy, acked=False, ack_stops=ack_stops, **facts)
    return ModelSteering(
        model=model,
        policy=policy,
        steer=steer,
        report=report,
        skewed_refs=skewed,
        parity_breached=parity,
        stopped_by_ack=steer is Steer.NONE and unacked is not Steer.NONE,
    )


def steering_overview(
    session: Session, *, policy: SkewPolicy, ack_stops: bool, default_breach: float
) -> list[ModelSteering]:
    """The steering of every model with a promoted version or a skew report, by name, as the API's watcher
    computes it (the promoted version and the features it reads; a model without a promoted version is
    judged on every feature of its report)."""
    promoted = {
        str(name): (str(version), tuple(str(ref) for ref in refs or ()))
        for name, version, refs in session.execute(
            select(ModelVersion.model_name, ModelVersion.version, ModelVersion.feature_refs).where(
                ModelVersion.promoted
            )
        )
    }
    reports = latest_steering_reports(session, default_breach=default_breach)
    overview = []
    for name in sorted(set(promoted) | set(reports)):
        version, refs = promoted.get(name, (None, None))
        overview.append(
            model_steering(
                name,
                reports.get(name),
                policy=policy,
                ack_stops=ack_stops,
                model_version=version,
                feature_refs=refs,
            )
        )
    return overview
