"""The skew policy's rows of the blend (online_skewed, parity_breached), exhaustively: every combination of
the blend's inputs and of the steering report's facts, against an oracle written apart from the policy."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from core.records.skew_steering import SteeringReport, online_wrong_rate, steering_report
from core.serving.blend import (
    BlendDecision,
    BlendInput,
    Mode,
    Reason,
    SkewPolicy,
    Source,
    Steer,
    StoredScore,
    decide,
)
from core.serving.steering import model_steering, steer_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SNAP = {"profile": NOW - timedelta(hours=10), "txn": NOW - timedelta(hours=9)}
LIVE_MODEL = "v2"
READS = ("profile:age", "txn:amount")  # the serving model's features
MAX_STALENESS_S = 86_400.0


@dataclass(frozen=True)
class Case:
    """One combination of every input."""

    stored: bool
    other_version: bool
    stale: bool
    newer: bool
    online_up: bool
    online_features: bool
    model_loaded: bool
    mode: Mode
    policy: SkewPolicy
    breach_read: bool  # a feature the model reads is online-skewed
    breach_unread: bool  # a feature of the service the model does not read is online-skewed
    parity: bool
    parity_same_version: bool  # the report's parity compared the version now serving
    acked: bool
    ack_stops: bool


_FLAGS = [f for f in Case.__dataclass_fields__ if f not in ("mode", "policy")]
CASES = [
    Case(mode=mode, policy=policy, **dict(zip(_FLAGS, flags, strict=True)))
    for flags in itertools.product([False, True], repeat=len(_FLAGS))
    for mode in Mode
    for policy in SkewPolicy
]


def _report(case: Case) -> SteeringReport:
    skewed = {"txn:amount"} if case.breach_read else set()
    if case.breach_unread:
        skewed.add("merchant:country")
    return SteeringReport(
        model_name="m",
        report_id=7,
        report_at=NOW - timedelta(hours=1),
        model_version=LIVE_MODEL if case.parity_same_version else "v1",
        status="breach",
        skewed_refs=frozenset(skewed),
        parity_breached=case.parity,
        acked_at=NOW if case.acked else None,
        acked_by="ana" if case.acked else None,
    )


def _input(case: Case) -> BlendInput:
    steering = model_steering(
        "m",
        _report(case),
        policy=case.policy,
        ack_stops=case.ack_stops,
        model_version=LIVE_MODEL if case.model_loaded else None,
        feature_refs=READS if case.model_loaded else None,
    )
    stored = None
    if case.stored:
        age = MAX_STALENESS_S + 1 if case.stale else 3600.0
        stored = StoredScore("v1" if case.other_version else LIVE_MODEL, NOW - timedelta(seconds=age), SNAP)
    if not case.online_up:
        online: dict[str, datetime | None] = {}
    elif not case.online_features:
        online = {"profile": None, "txn": None}
    else:
        online = {**SNAP, "txn": SNAP["txn"] + timedelta(seconds=1)} if case.newer else dict(SNAP)
    return BlendInput(
        stored=stored,
        online_ts=online,
        live_model_version=LIVE_MODEL if case.model_loaded else None,
        max_staleness_s=MAX_STALENESS_S,
        now=NOW,
        online_available=case.online_up,
        mode=case.mode,
        steer=steering.steer,
        skew_policy=case.policy,
    )


def oracle(c: Case) -> BlendDecision | None:
    """README's table, read row by row: the plain decision first, then the skew policy's overlay."""
    batch, live_source = Source.BATCH, Source.LIVE
    live_ok = c.online_up and c.online_features and c.model_loaded
    if c.mode is Mode.BATCH:
        return BlendDecision(batch, Reason.FORCED, degraded=not c.online_up) if c.stored else None
    if c.mode is Mode.LIVE:
        return BlendDecision(live_source, Reason.FORCED) if live_ok else None

    def live(reason: Reason, steered: Reason | None = None) -> BlendDecision | None:
        if live_ok:
            return BlendDecision(live_source, reason, steered_by=steered)
        if c.stored:
            return BlendDecision(batch, Reason.LIVE_UNAVAILABLE, degraded=True, steered_by=steered)
        return None

    if not c.online_up:
        return BlendDecision(batch, Reason.ONLINE_UNAVAILABLE, degraded=True) if c.stored else None
    if not c.stored:
        return live(Reason.BATCH_MISSING)  # no stored score: live whatever the report says
    if c.other_version or not c.model_loaded:
        return live(Reason.MODEL_MISMATCH)  # a stored score of another version is never steered to
    if c.stale:
        return live(Reason.BATCH_STALE)  # the caller's staleness bound is never relaxed by the policy
    # The model's steering: off, or an ack that stops it, means none; online skew of a feature the model
    # reads wins over parity; parity counts only for the version now serving.
    steering_on = c.policy is not SkewPolicy.OFF and not (c.acked and c.ack_stops)
    online_skewed = steering_on and c.breach_read
    parity = steering_on and not online_skewed and c.parity and c.parity_same_version
    enforce = c.policy is SkewPolicy.ENFORCE
    newer = c.online_features and c.newer
    if newer:
        if online_skewed and enforce:
            return BlendDecision(batch, Reason.ONLINE_SKEWED, steered_by=Reason.ONLINE_SKEWED)
        return live(Reason.FEATURES_NEWER, Reason.ONLINE_SKEWED if online_skewed else None)
    if parity:
        if enforce:
            return live(Reason.PARITY_BREACHED, Reason.PARITY_BREACHED)
        return BlendDecision(batch, Reason.BATCH_FRESH, steered_by=Reason.PARITY_BREACHED)
    return BlendDecision(batch, Reason.BATCH_FRESH)


def test_every_combination_matches_the_oracle() -> None:
    """Over every combination (stored present/absent, version, staleness, newer features, stores up, online
    features, model loaded, mode, policy, breaches read/unread, parity and its version, ack, ack setting), the
    policy decides exactly what the table says."""
    assert len(CASES) == 2**13 * 9
    wrong = [
        (case, decide(_input(case)), oracle(case)) for case in CASES if decide(_input(case)) != oracle(case)
    ]
    assert not wrong, wrong[:3]


def test_every_reason_is_reached() -> None:
    """The enumeration reaches every reason, the two steering rows among them, under both policies."""
    reasons = {d.reason for d in map(decide, map(_input, CASES)) if d is not None}
    assert reasons == set(Reason)
    steered = {
        (c.policy, d.steered_by) for c in CASES if (d := decide(_input(c))) is not None and d.steered_by
    }
    assert steered == {
        (policy, reason)
        for policy in (SkewPolicy.ANNOTATE, SkewPolicy.ENFORCE)
        for reason in (Reason.ONLINE_SKEWED, Reason.PARITY_BREACHED)
    }


def test_annotate_never_changes_a_decision() -> None:
    """Under annotate, source, reason and degraded are exactly those of policy off: only steered_by is added."""
    for case in CASES:
        if case.policy is SkewPolicy.ANNOTATE:
            annotated = decide(_input(case))
            plain = decide(_input(Case(**{**case.__dict__, "policy": SkewPolicy.OFF})))
            if plain is None:
                assert annotated is None
            else:
                assert annotated is not None
                assert (annotated.source, annotated.reason, annotated.degraded) == (
                    plain.source,
                    plain.reason,
                    plain.degraded,
                )


NEWER = {**SNAP, "txn": SNAP["txn"] + timedelta(seconds=1)}


def _enforced(steer: Steer, **overrides: object) -> BlendDecision | None:
    fields: dict[str, object] = {
        "stored": StoredScore(LIVE_MODEL, NOW - timedelta(hours=1), SNAP),
        "online_ts": dict(NEWER),
        "live_model_version": LIVE_MODEL,
        "max_staleness_s": MAX_STALENESS_S,
        "now": NOW,
        "steer": steer,
        "skew_policy": SkewPolicy.ENFORCE,
    }
    fields.update(overrides)
    return decide(BlendInput(**fields))  # type: ignore[arg-type]


def test_the_rows_one_by_one() -> None:
    """online_skewed replaces features_newer only; parity_breached replaces batch_fresh only (and falls back to
    the stored score, degraded, when live scoring cannot run); no stored score is live whatever the steer."""
    assert _enforced(Steer.BATCH) == BlendDecision(
        Source.BATCH, Reason.ONLINE_SKEWED, steered_by=Reason.ONLINE_SKEWED
    )
    assert _enforced(Steer.BATCH, online_ts=dict(SNAP)) == BlendDecision(Source.BATCH, Reason.BATCH_FRESH)
    assert _enforced(Steer.BATCH, stored=None) == BlendDecision(Source.LIVE, Reason.BATCH_MISSING)
    assert _enforced(Steer.BATCH, max_staleness_s=0.0) == BlendDecision(Source.LIVE, Reason.BATCH_STALE)
    assert _enforced(Steer.LIVE, online_ts=dict(SNAP)) == BlendDecision(
        Source.LIVE, Reason.PARITY_BREACHED, steered_by=Reason.PARITY_BREACHED
    )
    assert _enforced(Steer.LIVE) == BlendDecision(Source.LIVE, Reason.FEATURES_NEWER)
    assert _enforced(Steer.LIVE, online_ts={"profile": None, "txn": None}) == BlendDecision(
        Source.BATCH, Reason.LIVE_UNAVAILABLE, degraded=True, steered_by=Reason.PARITY_BREACHED
    )


@pytest.mark.parametrize(
    ("policy", "skewed", "parity", "acked", "stops", "want"),
    [
        (SkewPolicy.OFF, True, True, False, True, Steer.NONE),
        (SkewPolicy.ENFORCE, True, True, False, True, Steer.BATCH),
        (SkewPolicy.ENFORCE, False, True, False, True, Steer.LIVE),
        (SkewPolicy.ENFORCE, False, False, False, True, Steer.NONE),
        (SkewPolicy.ENFORCE, True, False, True, True, Steer.NONE),
        (SkewPolicy.ENFORCE, True, False, True, False, Steer.BATCH),
        (SkewPolicy.ANNOTATE, False, True, True, False, Steer.LIVE),
    ],
)
def test_steer_of(
    policy: SkewPolicy, skewed: bool, parity: bool, acked: bool, stops: bool, want: Steer
) -> None:
    """Off or an ack that stops: none; online skew before parity."""
    assert (
        steer_of(policy=policy, online_skewed=skewed, parity_breached=parity, acked=acked, ack_stops=stops)
        is want
    )


def test_model_steering_says_what_and_since_when() -> None:
    """The steering names the report and its time; an ack that stops it says so; a breach of a feature the
    model does not read never steers it."""
    report = steering_report(
        model_name="m", report_id=3, report_at=NOW, model_version=LIVE_MODEL, status="breach",
        summary={"thresholds": {"mismatch_rate_breach": 0.01}}, parity={"status": "ok"},
        findings=[("txn", "amount", {"match": 90, "value_mismatch": 10}), ("other", "x", {"match": 100})],
        default_breach=0.5,
    )  # fmt: skip
    assert report.skewed_refs == frozenset({"txn:amount"})
    steering = model_steering(
        "m", report, policy=SkewPolicy.ENFORCE, ack_stops=True, model_version=LIVE_MODEL, feature_refs=READS
    )
    assert (steering.steer, steering.active, steering.reason, steering.since) == (
        Steer.BATCH, True, Reason.ONLINE_SKEWED, NOW,
    )  # fmt: skip
    assert "report 3" in steering.describe()
    assert "txn" in steering.describe()
    unread = model_steering(
        "m", report, policy=SkewPolicy.ENFORCE, ack_stops=True, model_version=LIVE_MODEL, feature_refs=["p:a"]
    )
    assert unread.steer is Steer.NONE
    acked = dataclasses.replace(report, acked_at=NOW, acked_by="ana")
    stopped = model_steering(
        "m", acked, policy=SkewPolicy.ENFORCE, ack_stops=True, model_version=LIVE_MODEL, feature_refs=READS
    )
    assert stopped.stopped_by_ack
    assert stopped.steer is Steer.NONE
    assert "acknowledged by ana" in stopped.describe()
    advised = model_steering(
        "m", report, policy=SkewPolicy.ANNOTATE, ack_stops=True, model_version=LIVE_MODEL, feature_refs=READS
    )
    assert advised.advised
    assert not advised.active


@pytest.mark.parametrize(
    ("counts", "breach", "skewed"),
    [
        ({"match": 99, "value_mismatch": 1}, 0.01, True),  # at the threshold
        ({"match": 991, "stale_online": 9}, 0.01, False),
        ({"match": 90, "missing_online": 5, "expired_online": 5}, 0.1, True),
        ({"match": 50, "fresher_online": 50}, 0.01, False),  # pushes are not skew
        ({"match": 50, "online_only_fresh": 50}, 0.01, False),  # offline lost the value: online is right
        ({}, 0.01, False),
        ({"match": 10}, 0.0, False),  # a zero threshold never steers on nothing
    ],
)
def test_online_skewed_features(counts: dict[str, int], breach: float, skewed: bool) -> None:
    """A feature is online-skewed when the share of wrong online values (value, missing, stale, expired)
    reaches the report's breach threshold; fresher and online-only rows never steer."""
    report = steering_report(
        model_name="m", report_id=1, report_at=NOW, model_version=None, status="breach",
        summary={"thresholds": {"mismatch_rate_breach": breach}}, parity={},
        findings=[("v", "f", counts)], default_breach=0.9,
    )  # fmt: skip
    assert bool(report.skewed_refs) is skewed
    assert 0.0 <= online_wrong_rate(counts) <= 1.0
