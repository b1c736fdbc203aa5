"""Stored predictions as PostgreSQL binary COPY bytes, built by numpy without Python code per row.

Every column is fixed-width except the snapshot text, and rows that share a snapshot share its length:
rows are grouped by snapshot so each group is one numpy structured array laid out as COPY tuples.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

__all__ = ["COPY_COLUMNS", "COPY_HEADER", "COPY_TRAILER", "copy_tuples"]

COPY_COLUMNS = ("run_id", "entity_id", "score", "model_version", "scored_at", "feature_snapshot_ts")
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _pg_micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def copy_tuples(
    *,
    run_id: uuid.UUID,
    model_version: str,
    scored_at: datetime,
    entity_ids: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    snapshot_codes: npt.NDArray[np.intp],
    snapshots: Sequence[str],
) -> Iterator[bytes]:
    """COPY tuples (no header/trailer) for one chunk; `snapshots[snapshot_codes[i]]` is row i's snapshot."""
    version = model_version.encode()
    for code in np.unique(snapshot_codes):
        snapshot = snapshots[int(code)].encode()
        mask = snapshot_codes == code
        dtype = np.dtype(
            [
                ("n", ">i2"),
                ("l0", ">i4"), ("run", "S16"),
                ("l1", ">i4"), ("id", ">i8"),
                ("l2", ">i4"), ("score", ">f8"),
                ("l3", ">i4"), ("version", f"S{len(version)}"),
                ("l4", ">i4"), ("ts", ">i8"),
                ("l5", ">i4"), ("snapshot", f"S{len(snapshot)}"),
            ]
        )  # fmt: skip
        rows = np.empty(int(mask.sum()), dtype=dtype)
        rows["n"] = len(COPY_COLUMNS)
        rows["l0"], rows["run"] = 16, run_id.bytes
        rows["l1"], rows["id"] = 8, entity_ids[mask]
        rows["l2"], rows["score"] = 8, scores[mask]
        rows["l3"], rows["version"] = len(version), version
        rows["l4"], rows["ts"] = 8, _pg_micros(scored_at)
        rows["l5"], rows["snapshot"] = len(snapshot), snapshot
        yield rows.tobytes()
