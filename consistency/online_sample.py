"""What the online store serves for the sampled entities: values, `_ts:` event times and stored scores.

Reads with the online store (`core.online.store`, one pipelined HMGET per entity), `batch_rows` entities per
round trip, and
turns the rows into columns the classifier compares with the offline side. Values are raw: no TTL applied,
so a row past its TTL is still seen (and classified `expired_online`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from consistency.classify import NO_TIME, ValueColumn
from core.online.rows import OnlineRow
from core.online.store import OnlineStore
from core.online.wire import ReadLayout

__all__ = ["OnlineSample", "epoch_us", "read_online_sample"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(moment: datetime | None) -> int:
    """Microseconds since the Unix epoch; NO_TIME for None."""
    return int(NO_TIME) if moment is None else (moment - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class OnlineSample:
    """The online rows of the sample, in sample order, and the same as columns."""

    rows: list[OnlineRow]
    event_us: dict[str, npt.NDArray[np.int64]]  # view -> `_ts:` event time, NO_TIME when absent
    columns: dict[str, ValueColumn]  # "view:feature" -> stored value (None: null or absent)


def read_online_sample(
    store: OnlineStore,
    layout: ReadLayout,
    entity_ids: npt.NDArray[Any],
    *,
    batch_rows: int = 1_000,
    progress: Callable[[int], None] | None = None,
) -> OnlineSample:
    """Read every entity of `entity_ids` from the online store, `batch_rows` per round trip."""
    service = layout.service
    ids = entity_ids.tolist()
    rows: list[OnlineRow] = []
    for start in range(0, len(ids), batch_rows):
        rows.extend(store.read(layout, ids[start : start + batch_rows]))
        if progress is not None:
            progress(len(rows))
    event_us = {
        view.name: np.fromiter(
            (epoch_us(row.event_ts.get(view.name)) for row in rows), dtype=np.int64, count=len(rows)
        )
        for view in service.views
    }
    columns = {
        f"{view.name}:{feature.name}": ValueColumn.of(
            feature.kind, [row.values.get(f"{view.name}:{feature.name}") for row in rows]
        )
        for view in service.views
        for feature in view.features
    }
    return OnlineSample(rows=rows, event_us=event_us, columns=columns)
