"""The blend policy, row by row as in DESIGN.md, and exhaustively over every combination of its inputs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from core.serving.blend import BlendDecision, BlendInput, Mode, Reason, Source, StoredScore, decide

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SNAP = {"profile": NOW - timedelta(hours=10), "txn": NOW - timedelta(hours=9)}
LIVE_MODEL = "v2"


def stored(*, version: str = LIVE_MODEL, age_s: float = 3600.0) -> StoredScore:
    return StoredScore(
        model_version=version, scored_at=NOW - timedelta(seconds=age_s), feature_snapshot_ts=SNAP
    )


def blend(**overrides: object) -> BlendDecision | None:
    fields: dict[str, object] = {
        "stored": stored(),
        "online_ts": dict(SNAP),
        "live_model_version": LIVE_MODEL,
        "max_staleness_s": 86_400.0,
        "now": NOW,
    }
    fields.update(overrides)
    return decide(BlendInput(**fields))  # type: ignore[arg-type]


def test_fresh_stored_score_is_served_from_batch() -> None:
    """Same model, no newer features, within staleness: batch, batch_fresh."""
    assert blend() == BlendDecision(Source.BATCH, Reason.BATCH_FRESH)


def test_newer_online_features_rescore_live() -> None:
    """A view's online event time newer than the one the score used: live, features_newer."""
    online = {**SNAP, "txn": SNAP["txn"] + timedelta(seconds=1)}
    assert blend(online_ts=online) == BlendDecision(Source.LIVE, Reason.FEATURES_NEWER)


def test_late_arriving_data_counts_as_newer() -> None:
    """A view the score used no row of, which now has one online (late data): features_newer."""
    snapshot = {"profile": SNAP["profile"], "txn": None}
    score = StoredScore(LIVE_MODEL, NOW - timedelta(hours=1), snapshot)
    assert blend(stored=score) == BlendDecision(Source.LIVE, Reason.FEATURES_NEWER)


def test_older_or_missing_online_rows_are_not_newer() -> None:
    """Online rows older than the snapshot, or gone online, do not trigger a live re-score."""
    online = {"profile": SNAP["profile"] - timedelta(days=1), "txn": None}
    assert blend(online_ts=online) == BlendDecision(Source.BATCH, Reason.BATCH_FRESH)


def test_no_stored_prediction_rescores_live() -> None:
    """No stored score: live, batch_missing."""
    assert blend(stored=None) == BlendDecision(Source.LIVE, Reason.BATCH_MISSING)


def test_stale_stored_prediction_rescores_live() -> None:
    """Older than max staleness: live, batch_stale; exactly at the limit is still fresh."""
    assert blend(stored=stored(age_s=90_000)) == BlendDecision(Source.LIVE, Reason.BATCH_STALE)
    assert blend(stored=stored(age_s=86_400)) == BlendDecision(Source.BATCH, Reason.BATCH_FRESH)
    assert blend(max_staleness_s=0.0) == BlendDecision(Source.LIVE, Reason.BATCH_STALE)


def test_other_model_version_rescores_live() -> None:
    """Stored by another model version: never served as fresh, live with model_mismatch."""
    assert blend(stored=stored(version="v1")) == BlendDecision(Source.LIVE, Reason.MODEL_MISMATCH)


def test_online_store_down_serves_stored_score_degraded() -> None:
    """Redis unreachable, stored row from PostgreSQL: batch, degraded, online_unavailable."""
    decision = blend(online_available=False, online_ts={})
    assert decision == BlendDecision(Source.BATCH, Reason.ONLINE_UNAVAILABLE, degraded=True)


def test_live_impossible_falls_back_to_stored_score_degraded() -> None:
    """Live needed but no online features (or no model): batch, degraded, live_unavailable."""
    expected = BlendDecision(Source.BATCH, Reason.LIVE_UNAVAILABLE, degraded=True)
    assert blend(stored=stored(age_s=90_000), online_ts={"profile": None, "txn": None}) == expected
    assert blend(stored=stored(version="v1"), live_model_version=None) == expected


def test_nothing_to_serve_is_none() -> None:
    """No stored score and no online features, or both stores down: nothing (the API answers 404/503)."""
    assert blend(stored=None, online_ts={"profile": None, "txn": None}) is None
    assert blend(stored=None, online_available=False, online_ts={}) is None


def test_forced_modes() -> None:
    """Mode batch serves any stored score; mode live re-scores whenever features exist."""
    assert blend(mode=Mode.BATCH, stored=stored(version="v1", age_s=1e9)) == BlendDecision(
        Source.BATCH, Reason.FORCED
    )
    assert blend(mode=Mode.BATCH, stored=None) is None
    assert blend(mode=Mode.LIVE) == BlendDecision(Source.LIVE, Reason.FORCED)
    assert blend(mode=Mode.LIVE, online_ts={"profile": None, "txn": None}) is None
    assert blend(mode=Mode.BATCH, online_available=False) == BlendDecision(
        Source.BATCH, Reason.FORCED, degraded=True
    )


# The exhaustive check: an independent statement of the table, evaluated over every combination.
STORED = {"none": None, "fresh": stored(), "stale": stored(age_s=90_000), "other": stored(version="v1")}
ONLINE = {
    "same": dict(SNAP),
    "newer": {**SNAP, "profile": SNAP["profile"] + timedelta(minutes=1)},
    "empty": {"profile": None, "txn": None},
}


def reference(stored_key: str, online_key: str, online_up: bool, model_loaded: bool) -> BlendDecision | None:
    has_stored = stored_key != "none"
    live_ok = online_up and model_loaded and online_key != "empty"
    if not online_up:
        return BlendDecision(Source.BATCH, Reason.ONLINE_UNAVAILABLE, True) if has_stored else None
    wanted = [
        (stored_key == "none", Reason.BATCH_MISSING),
        (stored_key == "other" or (has_stored and not model_loaded), Reason.MODEL_MISMATCH),
        (stored_key == "stale", Reason.BATCH_STALE),
        (online_key == "newer", Reason.FEATURES_NEWER),
    ]
    for holds, reason in wanted:
        if holds:
            if live_ok:
                return BlendDecision(Source.LIVE, reason)
            return BlendDecision(Source.BATCH, Reason.LIVE_UNAVAILABLE, True) if has_stored else None
    return BlendDecision(Source.BATCH, Reason.BATCH_FRESH)


@pytest.mark.parametrize(
    ("stored_key", "online_key", "online_up", "model_loaded"),
    list(itertools.product(STORED, ONLINE, [True, False], [True, False])),
)
def test_every_combination_follows_the_table(
    stored_key: str, online_key: str, online_up: bool, model_loaded: bool
) -> None:
    """Every combination of stored score, online timestamps, store health and model gets the table's answer."""
    decision = blend(
        stored=STORED[stored_key],
        online_ts=ONLINE[online_key] if online_up else {},
        online_available=online_up,
        live_model_version=LIVE_MODEL if model_loaded else None,
    )
    assert decision == reference(stored_key, online_key, online_up, model_loaded)
