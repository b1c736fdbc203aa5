"""The stream rescorer's coalescing: touched entities wait per model and are re-scored together, every
`max_delay_s` or `max_entities`, once per entity, one call per model; failures stay contained."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.features.keys import EntityId, EntityKey
from core.features.specs import FeatureSpec, ServiceSpec, ViewSpec
from core.model.registry import LoadedModel
from core.online.wire import ReadLayout
from core.rescore.rescorer import StreamRescorer
from core.rescore.run import RescoreResult
from core.rescore.targets import RescoreTarget

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _view(name: str, *features: str) -> ViewSpec:
    return ViewSpec(
        name,
        name,
        EntityKey.single("customer_id"),
        "ts",
        None,
        0,
        tuple(FeatureSpec(f, "float64") for f in features),
    )


SCORES = ViewSpec(
    "m_predictions", "(select 1)", EntityKey.single("customer_id"), "scored_at", None, 0,
    (FeatureSpec("score", "float64"), FeatureSpec("model_version", "string"), FeatureSpec("run_id", "string"),
     FeatureSpec("feature_snapshot_ts", "string")),
)  # fmt: skip


def _target(name: str, *views: ViewSpec) -> RescoreTarget:
    refs = tuple(f"{view.name}:{feature.name}" for view in views for feature in view.features)
    model = LoadedModel(
        version=f"{name}-v1", model_name=name, feature_refs=refs, estimator=None, sha256="", metrics={},
        created_at=NOW,
    )  # fmt: skip
    layout = ReadLayout(project="p", service=ServiceSpec(f"{name}_fs", views, refs), predictions=SCORES)
    return RescoreTarget(model=model, feature_service=f"{name}_fs", layout=layout)


PROFILE, TXN, CLICKS = _view("profile", "age"), _view("txn", "count"), _view("clicks", "n")
RISK, ADS = _target("risk", PROFILE, TXN), _target("ads", CLICKS, PROFILE)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A fake re-score: records each call; `fail` names models whose re-score raises."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, list[EntityId]]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, target: RescoreTarget, ids: list[EntityId]) -> RescoreResult:
        with self.lock:
            self.calls.append((target.name, list(ids)))
        if target.name in self.fail:
            raise RuntimeError("Redis (online store): connection refused")
        return RescoreResult(target.name, None, NOW, touched=len(ids), rescored=len(ids) // 2)


def _rescorer(recorder: Recorder, clock: FakeClock, **kwargs: object) -> StreamRescorer:
    options: dict[str, object] = {"max_delay_s": 0.25, "max_entities": 100, "clock": clock, **kwargs}
    return StreamRescorer([RISK, ADS], recorder, **options)  # type: ignore[arg-type]


def test_a_burst_is_coalesced_into_one_rescore_per_model_after_the_delay() -> None:
    """Events within the delay wait; then each model re-scores its touched entities once, in arrival order,
    and only the models whose feature service reads the view."""
    recorder, clock = Recorder(), FakeClock()
    rescorer = _rescorer(recorder, clock)
    rescorer.on_committed("txn", [3, 1])
    clock.now = 0.1
    rescorer.on_committed("txn", [1, 2, 3])
    assert rescorer.touched("unknown_view", [9]) == 0
    assert rescorer.pending() == 3
    assert recorder.calls == []
    clock.now = 0.25
    assert rescorer.touched("profile", [4]) == 2
    results = rescorer.flush_if_due()
    assert sorted(recorder.calls) == [("ads", [4]), ("risk", [3, 1, 2, 4])]
    assert {result.model_name for result in results} == {"risk", "ads"}
    assert rescorer.pending() == 0
    rescorer.on_committed("txn", [])
    assert rescorer.flush_if_due() == []


def test_enough_entities_flush_at_once_in_chunks_of_max_entities() -> None:
    """A model with max_entities waiting re-scores from the stream's hook without waiting for the delay,
    max_entities per call."""
    recorder, clock = Recorder(), FakeClock()
    rescorer = _rescorer(recorder, clock, max_entities=4)
    rescorer.on_committed("txn", [1, 2, 3])
    assert recorder.calls == []
    rescorer.on_committed("txn", [4, 5, 6, 7, 8, 9])
    assert recorder.calls == [("risk", [1, 2, 3, 4]), ("risk", [5, 6, 7, 8]), ("risk", [9])]


def test_one_failing_model_does_not_stop_the_others_and_its_entities_are_dropped() -> None:
    """A failing re-score is counted and logged; the other model is still re-scored; nothing is retried."""
    recorder, clock = Recorder(fail=frozenset({"risk"})), FakeClock()
    rescorer = _rescorer(recorder, clock)
    rescorer.touched("profile", [1, 2])
    results = rescorer.flush()
    assert [result.model_name for result in results] == ["ads"]
    assert rescorer.failures == 1
    assert rescorer.flush() == []
    assert len(recorder.calls) == 2


def test_close_flushes_what_waits_and_releases_once() -> None:
    """close() re-scores the waiting entities at once and calls the release hook once."""
    recorder, clock = Recorder(), FakeClock()
    released: list[bool] = []
    rescorer = _rescorer(recorder, clock, on_close=lambda: released.append(True))
    rescorer.touched("clicks", [5])
    assert [result.model_name for result in rescorer.close()] == ["ads"]
    rescorer.close()
    assert released == [True]


def test_the_ticker_flushes_without_further_events() -> None:
    """With the background ticker, an entity touched once is re-scored after the delay with no other call."""
    recorder = Recorder()
    rescorer = StreamRescorer([RISK], recorder, max_delay_s=0.02, max_entities=100)
    rescorer.start()
    try:
        rescorer.touched("txn", [42])
        deadline = time.monotonic() + 5
        while not recorder.calls and time.monotonic() < deadline:
            time.sleep(0.005)
        assert recorder.calls == [("risk", [42])]
    finally:
        rescorer.close()


def test_a_newly_promoted_set_of_models_is_picked_up_on_reload() -> None:
    """Every reload_s the rescorer asks for new targets: waiting entities of a dropped model are forgotten,
    a new one is re-scored from the next flush."""
    recorder, clock = Recorder(), FakeClock()
    asked: list[list[str]] = []

    def reload(current: object) -> list[RescoreTarget] | None:
        asked.append([target.name for target in current])  # type: ignore[attr-defined]
        return [ADS]

    rescorer = _rescorer(recorder, clock, reload=reload, reload_s=10.0)
    rescorer.touched("txn", [1])
    rescorer.flush()
    assert asked == []
    clock.now = 10.0
    rescorer.touched("txn", [2])
    rescorer.touched("clicks", [3])
    rescorer.flush()
    assert asked == [["ads", "risk"]]
    assert recorder.calls == [("risk", [1]), ("ads", [3])]
    assert [target.name for target in rescorer.targets] == ["ads"]


def test_bad_settings_are_refused() -> None:
    """A negative delay or an entity count below one is a ValueError."""
    with pytest.raises(ValueError, match="max_delay_s"):
        StreamRescorer([RISK], Recorder(), max_delay_s=-0.1)
    with pytest.raises(ValueError, match="max_entities"):
        StreamRescorer([RISK], Recorder(), max_entities=0)


def test_no_delay_rescores_each_micro_batch_at_once() -> None:
    """With a delay of 0 and no thread started, each `on_committed` re-scores its entities before returning
    (at most `max_entities` per call)."""
    recorder, clock = Recorder(), FakeClock()
    rescorer = _rescorer(recorder, clock, max_delay_s=0, max_entities=2)
    rescorer.on_committed("txn", [3, 1, 2])
    assert recorder.calls == [("risk", [3, 1]), ("risk", [2])]
    rescorer.on_committed("txn", [1])
    assert recorder.calls[-1] == ("risk", [1])
    assert rescorer.pending() == 0


def test_no_delay_with_a_thread_rescores_as_soon_as_entities_arrive() -> None:
    """With a delay of 0 and the thread started, `on_committed` returns at once and the thread re-scores the
    entities right away; `close()` stops it."""
    recorder = Recorder()
    rescorer = StreamRescorer([RISK], recorder, max_delay_s=0, max_entities=100)
    rescorer.start()
    rescorer.on_committed("txn", [5, 6])
    deadline = time.monotonic() + 5
    while not recorder.calls and time.monotonic() < deadline:
        time.sleep(0.001)
    assert recorder.calls == [("risk", [5, 6])]
    rescorer.close()
    assert rescorer._ticker is None


class SlowRecorder(Recorder):
    """A fake re-score that takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, target: RescoreTarget, ids: list[EntityId]) -> RescoreResult:
        time.sleep(self.seconds)
        return super().__call__(target, ids)


def test_no_delay_holds_the_stream_back_when_rescoring_falls_behind() -> None:
    """With the thread busy re-scoring, entities pile up; once a model has `max_entities` waiting,
    `on_committed` re-scores them itself before returning (the stream never runs ahead of re-scoring)."""
    recorder = SlowRecorder(0.2)
    rescorer = StreamRescorer([RISK], recorder, max_delay_s=0, max_entities=2)
    rescorer.start()
    rescorer.on_committed("txn", [1])  # the thread takes it
    time.sleep(0.05)
    rescorer.on_committed("txn", [2])  # one waiting: the thread will take it
    assert ("risk", [2]) not in recorder.calls
    rescorer.on_committed("txn", [3])  # two waiting: re-scored here, after the thread's flush
    assert ("risk", [2, 3]) in recorder.calls
    rescorer.close()
    assert recorder.calls == [("risk", [1]), ("risk", [2, 3])]


def test_the_hook_has_the_streams_signature() -> None:
    """`on_committed` is a `(view_name, entity_ids) -> None` hook, the stream's `OnCommitted` type."""
    hook: Callable[[str, list[Any]], None] = StreamRescorer([RISK], Recorder()).on_committed
    hook("txn", [1])
