"""Coalescing touched entities into stream re-scores: per model, every `max_delay_s` or `max_entities`.

The stream process calls `on_committed(view_name, entity_ids)` after each micro-batch has landed in both
stores. Each model whose feature service reads that view collects the ids; a flush re-scores every model's
collected ids (core.rescore.run: one read, one scoring call, one stream run per model per flush). A flush
happens when a model has `max_entities` ids waiting, when the oldest waiting id is `max_delay_s` old (checked
on every call and by a background ticker, `start()`), and on `close()`. With `max_delay_s` 0 there is no
wait: a started rescorer's thread flushes as soon as ids arrive (while it re-scores, the stream goes on and
the ids that arrive make its next flush; if `max_entities` pile up meanwhile, `on_committed` flushes them
itself, holding the stream back to the pace of re-scoring), an unstarted one flushes in `on_committed`. A burst of events for one entity
costs one re-score. A model whose re-score fails has its ids dropped (logged, counted): the API re-scores
those entities live (`features_newer`) until their next event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from core.features.keys import EntityId
from core.metrics import STREAM_RESCORE_SECONDS, STREAM_RESCORED
from core.rescore.run import RescoreResult
from core.rescore.targets import RescoreTarget

__all__ = ["Rescore", "StreamRescorer"]

logger = logging.getLogger(__name__)

Rescore = Callable[[RescoreTarget, list[EntityId]], RescoreResult]
"""Re-score some touched entities of one model (core.rescore.run.rescore_entities with its stores bound)."""


class StreamRescorer:
    """Touched entities per model, flushed into stream re-scores (see the module doc). Thread-safe."""

    def __init__(
        self,
        targets: Sequence[RescoreTarget],
        rescore: Rescore,
        *,
        max_delay_s: float = 0.25,
        max_entities: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], None] | None = None,
        reload: Callable[[Sequence[RescoreTarget]], Sequence[RescoreTarget] | None] | None = None,
        reload_s: float = 5.0,
    ) -> None:
        if max_delay_s < 0 or max_entities < 1:
            raise ValueError("max_delay_s must not be negative and max_entities must be at least 1")
        self.rescore = rescore
        self.max_delay_s = max_delay_s
        self.max_entities = max_entities
        self.clock = clock
        self.failures = 0
        self._targets: dict[str, RescoreTarget] = {}
        self._pending: dict[str, dict[EntityId, None]] = {}  # model -> ids in arrival order
        self._oldest: float | None = None  # clock() of the oldest waiting id
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # with no delay: entities are waiting for the ticker
        self._ticker: threading.Thread | None = None
        self._on_close = on_close
        self._reload, self.reload_s = reload, reload_s
        self._reloaded_at = clock()
        self.set_targets(targets)

    def set_targets(self, targets: Iterable[RescoreTarget]) -> None:
        """Re-score these models from now on (a newly promoted version, a model added or dropped)."""
        with self._lock:
            self._targets = {target.name: target for target in targets}
            self._pending = {name: ids for name, ids in self._pending.items() if name in self._targets}

    @property
    def targets(self) -> list[RescoreTarget]:
        """The models re-scored, by name."""
        return [self._targets[name] for name in sorted(self._targets)]

    def touched(self, view_name: str, entity_ids: Iterable[EntityId]) -> int:
        """Note fresh events of `view_name` for `entity_ids`; returns how many models read that view."""
        with self._lock:
            readers = [name for name, target in self._targets.items() if target.reads(view_name)]
            if not readers:
                return 0
            ids = list(entity_ids)
            if not ids:
                return len(readers)
            for name in readers:
                self._pending.setdefault(name, {}).update(dict.fromkeys(ids))
            if self._oldest is None:
                self._oldest = self.clock()
            return len(readers)

    def pending(self) -> int:
        """Entities waiting, summed over models."""
        with self._lock:
            return sum(len(ids) for ids in self._pending.values())

    def due(self) -> bool:
        """Whether a flush is due: a model has `max_entities` waiting, or the oldest waited `max_delay_s`."""
        with self._lock:
            if self._oldest is None:
                return False
            return self._full() or self.clock() - self._oldest >= self.max_delay_s

    def _full(self) -> bool:
        """Whether a model has `max_entities` waiting (under the lock)."""
        return any(len(ids) >= self.max_entities for ids in self._pending.values())

    def on_committed(self, view_name: str, entity_ids: Sequence[EntityId]) -> None:
        """The stream's hook after a micro-batch of `view_name` landed in both stores
        (`streaming`'s `OnCommitted`): note the entities, and flush when due (with no delay and a started
        ticker: wake the ticker, which flushes at once while the stream goes on, unless a model has
        `max_entities` waiting: then the stream flushes them itself, so it never runs ahead of re-scoring)."""
        if self.touched(view_name, entity_ids) and self.max_delay_s == 0 and self._ticker is not None:
            with self._lock:
                behind = self._full()
            if not behind:
                self._wake.set()
                return
        self.flush_if_due()

    def flush_if_due(self) -> list[RescoreResult]:
        """Flush when due."""
        return self.flush() if self.due() else []

    def flush(self) -> list[RescoreResult]:
        """Re-score every model's waiting entities now (one run per model with changed entities)."""
        with self._flushing:
            self._maybe_reload()
            with self._lock:
                work = [(self._targets[name], list(ids)) for name, ids in self._pending.items() if ids]
                self._pending, self._oldest = {}, None
            results = []
            for target, ids in work:
                for start in range(0, len(ids), self.max_entities):
                    result = self._rescore(target, ids[start : start + self.max_entities])
                    if result is not None:
                        results.append(result)
            return results

    def _maybe_reload(self) -> None:
        """Every `reload_s`, ask `reload(current targets)` for new ones (None: unchanged)."""
        if self._reload is None or self.clock() - self._reloaded_at < self.reload_s:
            return
        self._reloaded_at = self.clock()
        try:
            fresh = self._reload(self.targets)
        except Exception:  # the registry is unreachable: keep re-scoring with what is loaded
            logger.exception("could not check the promoted models; keeping the loaded ones")
            return
        if fresh is not None:
            self.set_targets(fresh)
            logger.info("stream re-score now serves %s", [(t.name, t.model.version) for t in fresh])

    def _rescore(self, target: RescoreTarget, ids: list[EntityId]) -> RescoreResult | None:
        started = time.perf_counter()
        try:
            result = self.rescore(target, ids)
        except Exception:  # one model's failure never stops the others, nor the stream
            self.failures += 1
            STREAM_RESCORED.labels(target.name, "failed").inc(len(ids))
            logger.exception("stream re-score of %d entities of model %s failed", len(ids), target.name)
            return None
        STREAM_RESCORE_SECONDS.labels(target.name).observe(time.perf_counter() - started)
        STREAM_RESCORED.labels(target.name, "rescored").inc(result.rescored)
        STREAM_RESCORED.labels(target.name, "unchanged").inc(result.touched - result.rescored)
        return result

    def start(self, *, tick_s: float | None = None) -> None:
        """Flush from a background thread: every `tick_s` (default: a quarter of the delay) when due, or, with
        no delay, as soon as `on_committed` notes entities (what arrives meanwhile makes the next flush)."""
        if self._ticker is not None:
            return
        interval = tick_s if tick_s is not None else self.max_delay_s / 4

        def tick() -> None:
            while not self._stop.wait(interval):
                self.flush_if_due()

        def follow() -> None:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                self.flush()

        self._ticker = threading.Thread(
            target=follow if self.max_delay_s == 0 else tick, name="tandem-rescore", daemon=True
        )
        self._ticker.start()

    def close(self) -> list[RescoreResult]:
        """Stop the ticker, flush what is waiting, release the stores; returns the last flush's results."""
        self._stop.set()
        self._wake.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        try:
            return self.flush()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None
