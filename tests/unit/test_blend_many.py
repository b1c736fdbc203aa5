"""The blend policy decided for many rows at once (core.serving.blend_many, through the stream re-score's
`select_changed`) equals `decide` row by row, over every combination of the inputs it reads: stored score or
none, its version, its age around the staleness limit, and per view its snapshot time and the online event
time (absent, older, equal, newer, past the view's TTL)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np

from core.features.keys import EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.online.rows import OnlineRow, StoredPrediction, apply_ttl
from core.rescore.select import SKIPPED_UNKNOWN, select_changed
from core.serving.blend import BlendInput, Source, StoredScore, decide
from core.serving.blend_many import CODES, BlendColumns, decide_many

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
USED = NOW - timedelta(hours=5)
STALENESS_S = 86_400.0
KEY = EntityKey.single("customer_id")
FOREVER = ViewSpec("forever", "f", KEY, "ts", None, 0, (FeatureSpec("x", "int64"),))
DAILY = ViewSpec("daily", "d", KEY, "ts", None, 6 * 3_600, (FeatureSpec("y", "float64"),))  # 6 h TTL
SERVICE = ServiceSpec("svc", (FOREVER, DAILY), ("forever:x", "daily:y"))
ONLINE = [
    None,
    USED - timedelta(microseconds=1),
    USED,
    USED + timedelta(microseconds=1),
    NOW - timedelta(hours=7),
]
SNAPSHOT = ["missing", None, USED]
AGES = [timedelta(hours=1), timedelta(seconds=STALENESS_S), timedelta(seconds=STALENESS_S, microseconds=1)]


def _rows() -> list[OnlineRow]:
    rows: list[OnlineRow] = []
    stored_options: list[tuple[str, timedelta, object, object] | None] = [None]
    stored_options += list(itertools.product(["v1", "v0"], AGES, SNAPSHOT, SNAPSHOT))
    for online_f, online_d, stored in itertools.product(ONLINE, ONLINE, stored_options):
        prediction = None
        if stored is not None:
            version, age, used_f, used_d = stored
            snapshot = {
                name: used for name, used in (("forever", used_f), ("daily", used_d)) if used != "missing"
            }
            prediction = StoredPrediction(0.5, version, "run", NOW - age, snapshot)  # type: ignore[arg-type]
        rows.append(
            OnlineRow(
                len(rows),
                {"forever:x": 1 if online_f else None, "daily:y": 2.0 if online_d else None},
                {"forever": online_f, "daily": online_d},
                prediction,
            )
        )
    return rows


def _decide(row: OnlineRow) -> tuple[OnlineRow, object]:
    fresh = apply_ttl(row, SERVICE, now=NOW)
    stored = fresh.stored
    score = (
        None
        if stored is None
        else StoredScore(stored.model_version, stored.scored_at, stored.feature_snapshot_ts)
    )
    inputs = BlendInput(
        stored=score, online_ts=fresh.event_ts, live_model_version="v1", max_staleness_s=STALENESS_S, now=NOW
    )
    return fresh, decide(inputs)


def test_select_changed_is_decide_row_by_row_over_every_combination() -> None:
    """Every combination: the same rows selected (TTL applied, in order) and the same reasons counted."""
    rows = _rows()
    assert len(rows) > 1_000
    expected_rows, reasons = [], Counter[str]()
    for row in rows:
        fresh, decision = _decide(row)
        reasons[decision.reason.value if decision is not None else SKIPPED_UNKNOWN] += 1  # type: ignore[attr-defined]
        if decision is not None and decision.source is Source.LIVE:  # type: ignore[attr-defined]
            expected_rows.append(fresh)
    selection = select_changed(
        rows + rows[:5], service=SERVICE, model_version="v1", now=NOW, max_staleness_s=STALENESS_S
    )
    assert list(selection.rows) == expected_rows
    assert selection.reasons == dict(reasons)
    assert set(reasons) >= {"batch_missing", "model_mismatch", "batch_stale", "features_newer", "batch_fresh",
                            "live_unavailable", SKIPPED_UNKNOWN}  # fmt: skip


def test_decide_many_over_every_flag_combination() -> None:
    """Every possible combination of the five flags (a feature view can only be newer online when some view
    has an online row): live exactly where `decide` re-scores live, and its reason."""
    combinations = [flags for flags in itertools.product([False, True], repeat=5) if flags[4] or not flags[3]]
    flags = np.array(combinations, dtype=bool)
    live, codes = decide_many(BlendColumns(*(flags[:, i] for i in range(5))))
    for (stored, same, stale, newer, possible), is_live, code in zip(
        flags.tolist(), live, codes, strict=True
    ):
        online = {"forever": USED + timedelta(hours=1) if newer else USED} if possible else {"forever": None}
        score = StoredScore("v1" if same else "v0", NOW - (AGES[2] if stale else AGES[0]), {"forever": USED})
        decision = decide(
            BlendInput(stored=score if stored else None, online_ts=online, live_model_version="v1",
                       max_staleness_s=STALENESS_S, now=NOW)
        )  # fmt: skip
        if decision is None:
            assert code == -1
            assert not is_live
        else:
            assert CODES[code] is decision.reason
            assert bool(is_live) == (decision.source is Source.LIVE)
