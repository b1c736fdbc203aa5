"""The checker's offline reads, each on a connection of its own (so they can run beside the online read):
every view's expected rows for the sample, the model inputs parity needs as of a stored score's time, and the
newest offline event time of the entities whose online row is newer than the watermark."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from consistency.classify import NO_TIME, ValueColumn
from consistency.offline_sample import ExpectedView, expected_view_rows, latest_event_us
from consistency.online_sample import epoch_us
from core.features.specs import ServiceSpec

__all__ = ["batch_inputs_reader", "expected_service_rows", "newest_offline_events"]


def expected_service_rows(
    url: str,
    spec: ServiceSpec,
    watermarks: dict[str, datetime],
    ids: npt.NDArray[Any],
    *,
    everyone: bool,
) -> dict[str, ExpectedView]:
    """Each view's point-in-time rows of `ids` as of its watermark (`everyone`: read all, keep the ids)."""
    with psycopg.connect(url) as conn:
        return {
            view.name: expected_view_rows(
                conn, view, as_of=watermarks[view.name], entity_ids=ids, restrict=not everyone
            )
            for view in spec.views
        }


def batch_inputs_reader(
    url: str, spec: ServiceSpec
) -> Callable[[npt.NDArray[Any], datetime], dict[str, ValueColumn]]:
    """`read(ids, as_of)`: every `view:feature` column of the ids as of a moment (what a batch run saw)."""

    def read(ids: npt.NDArray[Any], as_of: datetime) -> dict[str, ValueColumn]:
        with psycopg.connect(url) as conn:
            return {
                f"{view.name}:{name}": column
                for view in spec.views
                for name, column in expected_view_rows(
                    conn, view, as_of=as_of, entity_ids=ids
                ).columns.items()
            }

    return read


def newest_offline_events(
    url: str,
    spec: ServiceSpec,
    ids: npt.NDArray[Any],
    online_event_us: dict[str, npt.NDArray[np.int64]],
    watermarks: dict[str, datetime],
) -> dict[str, npt.NDArray[np.int64]]:
    """Per view, the newest offline event time of each sampled entity whose online row is newer than the
    view's watermark (NO_TIME for the others: only those can be online_only_fresh)."""
    latest: dict[str, npt.NDArray[np.int64]] = {}
    with psycopg.connect(url) as conn:
        for view in spec.views:
            found = np.full(len(ids), NO_TIME, dtype=np.int64)
            fresher = np.flatnonzero(online_event_us[view.name] > epoch_us(watermarks[view.name]))
            if len(fresher):
                found[fresher] = latest_event_us(conn, view, entity_ids=ids[fresher])
            latest[view.name] = found
    return latest
