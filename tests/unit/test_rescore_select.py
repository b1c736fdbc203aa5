"""The stream re-score's selection: exactly the entities the blend policy would re-score live, rows taken
as the live path takes them (TTL applied), and snapshots in the batch run's format."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.batch.snapshots import snapshot_json
from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.decoding import decode_snapshot
from core.online.rows import OnlineRow, StoredPrediction
from core.rescore.select import SKIPPED_UNKNOWN, select_changed, snapshot_text, snapshot_texts

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SCORED = NOW - timedelta(hours=2)
PROFILE_TS = NOW - timedelta(days=3)
STATS_TS = NOW - timedelta(hours=3)
PROFILE = ViewSpec(
    "profile", "p", EntityKey.single("customer_id"), "ts", None, 0, (FeatureSpec("age", "int64"),)
)
STATS = ViewSpec(
    "stats", "s", EntityKey.single("customer_id"), "ts", None, 86_400, (FeatureSpec("count", "int64"),)
)
SERVICE = ServiceSpec("risk_v1", (PROFILE, STATS), ("profile:age", "stats:count"))
VERSION = "v1"


def _stored(
    *, version: str = VERSION, scored_at: datetime = SCORED, stats: datetime | None = STATS_TS
) -> StoredPrediction:
    return StoredPrediction(0.5, version, "run-1", scored_at, {"profile": PROFILE_TS, "stats": stats})


def _row(
    entity_id: int,
    *,
    stats: datetime | None = STATS_TS,
    profile: datetime | None = PROFILE_TS,
    stored: StoredPrediction | None = None,
) -> OnlineRow:
    return OnlineRow(
        entity_id,
        {"profile:age": 40 if profile else None, "stats:count": 3 if stats else None},
        {"profile": profile, "stats": stats},
        stored,
    )


CASES = [
    # (row, selected, reason)
    (_row(1, stored=_stored()), False, "batch_fresh"),
    (_row(2, stats=STATS_TS + timedelta(minutes=1), stored=_stored()), True, "features_newer"),
    (_row(3), True, "batch_missing"),
    (_row(4, stored=_stored(version="v0")), True, "model_mismatch"),
    (_row(5, stored=_stored(scored_at=NOW - timedelta(days=2))), True, "batch_stale"),
    (_row(6, stats=None, profile=None), False, SKIPPED_UNKNOWN),
    (_row(7, stats=None, profile=None, stored=_stored(version="v0")), False, "live_unavailable"),
    # a late row: online event time older than the one the score used is not "moved past"
    (_row(8, stats=STATS_TS - timedelta(minutes=5), stored=_stored()), False, "batch_fresh"),
    # a view the stored score had no row of, present online now
    (_row(9, stored=_stored(stats=None)), True, "features_newer"),
]


@pytest.mark.parametrize(("row", "selected", "reason"), CASES, ids=[str(case[0].entity_id) for case in CASES])
def test_each_policy_row_selects_or_skips(row: OnlineRow, selected: bool, reason: str) -> None:
    """An entity is re-scored exactly when the blend policy would re-score it live now, for each reason."""
    selection = select_changed([row], service=SERVICE, model_version=VERSION, now=NOW, max_staleness_s=86_400)
    assert selection.entity_ids == ([row.entity_id] if selected else [])
    assert selection.reasons == {reason: 1}


def test_all_cases_at_once_keep_order_and_count_reasons() -> None:
    """Many touched entities: the selected ones in input order, each entity once, every reason counted."""
    rows = [case[0] for case in CASES]
    selection = select_changed(
        [*rows, rows[1]], service=SERVICE, model_version=VERSION, now=NOW, max_staleness_s=86_400
    )
    assert selection.entity_ids == [case[0].entity_id for case in CASES if case[1]]
    assert sum(selection.reasons.values()) == len(CASES)
    assert selection.reasons["features_newer"] == 2


def test_a_view_past_its_ttl_is_absent_as_on_the_live_path() -> None:
    """A view whose online row is older than its TTL counts as absent: it is not "newer", and a selected
    row is scored with its features null, exactly what a live re-score would use."""
    expired = NOW - timedelta(days=2)
    fresh_profile = PROFILE_TS + timedelta(hours=1)
    row = _row(1, stats=expired, profile=fresh_profile, stored=_stored(stats=None))
    selection = select_changed([row], service=SERVICE, model_version=VERSION, now=NOW, max_staleness_s=86_400)
    (chosen,) = selection.rows
    assert chosen.event_ts == {"profile": fresh_profile, "stats": None}
    assert chosen.values == {"profile:age": 40, "stats:count": None}
    unchanged = _row(2, stats=expired, stored=_stored(stats=None))
    skipped = select_changed(
        [unchanged], service=SERVICE, model_version=VERSION, now=NOW, max_staleness_s=86_400
    )
    assert skipped.rows == ()


def test_snapshot_text_is_the_batch_format_and_decodes_to_the_event_times() -> None:
    """A stream score's snapshot is the JSON a batch run writes for the same event times, and decodes back
    to exactly the online event times (so the API finds the score fresh)."""
    row = _row(1, stats=None, profile=PROFILE_TS + timedelta(microseconds=7))
    text = snapshot_text(row, SERVICE)
    micros = int((PROFILE_TS + timedelta(microseconds=7)).timestamp() * 1_000_000)
    assert text == snapshot_json(("profile", "stats"), (micros, -1))
    assert decode_snapshot(text) == row.event_ts


def test_snapshot_texts_equal_snapshot_text_row_by_row() -> None:
    """The many-row snapshot builder gives exactly `snapshot_text` of each row: present and absent views,
    repeated and distinct event times, microseconds or none, and times in another zone (made UTC)."""
    rng = random.Random(3)
    plus_two = timezone(timedelta(hours=2))

    def stamp() -> datetime | None:
        choice = rng.random()
        if choice < 0.2:
            return None
        if choice < 0.4:
            return PROFILE_TS
        moment = NOW - timedelta(
            seconds=rng.randint(0, 10**6), microseconds=rng.choice([0, rng.randint(1, 999_999)])
        )
        return moment.astimezone(plus_two) if choice < 0.5 else moment

    rows = [_row(i, stats=stamp(), profile=stamp()) for i in range(2_000)]
    assert snapshot_texts(rows, SERVICE) == [snapshot_text(row, SERVICE) for row in rows]
    assert snapshot_texts([], SERVICE) == []
