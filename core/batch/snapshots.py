"""What a batch run keeps between scoring and publishing: ids, scores and which feature rows each used.

The event times a score was computed from (one per feature view) repeat across entities (daily snapshots),
so each distinct combination gets a code and its JSON text is built once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core.offline.point_in_time import FeatureChunk

__all__ = ["Collected", "snapshot_codes", "snapshot_json"]


@dataclass(slots=True)
class Collected:
    """Everything the publish stage needs, kept compact: ids, scores and snapshot codes."""

    ids: list[npt.NDArray[Any]] = field(default_factory=list)
    scores: list[npt.NDArray[np.float64]] = field(default_factory=list)
    codes: list[npt.NDArray[np.intp]] = field(default_factory=list)
    snapshots: dict[tuple[int, ...], int] = field(default_factory=dict)

    def code_of(self, key: tuple[int, ...]) -> int:
        return self.snapshots.setdefault(key, len(self.snapshots))


def snapshot_json(views: tuple[str, ...], key: tuple[int, ...]) -> str:
    stamps = {
        view: (datetime.fromtimestamp(us / 1_000_000, UTC).isoformat() if us >= 0 else None)
        for view, us in zip(views, key, strict=True)
    }
    return json.dumps(stamps, separators=(",", ":"))


def snapshot_codes(chunk: FeatureChunk, views: tuple[str, ...], collected: Collected) -> npt.NDArray[np.intp]:
    stamps = np.column_stack([chunk.event_us[view] for view in views])
    unique, inverse = np.unique(stamps, axis=0, return_inverse=True)
    mapping = np.array([collected.code_of(tuple(int(v) for v in row)) for row in unique], dtype=np.intp)
    return mapping[inverse.reshape(-1)]
