"""Stored predictions as PostgreSQL binary COPY bytes, built by numpy without Python code per row.

Every column is fixed-width except the entity key's text and the snapshot text: rows are grouped by
(snapshot, key text length) so each group is one numpy structured array laid out as COPY tuples; many small
groups (a stream re-score) are packed row by row instead. An int
key's text is made by numpy (`astype("S20")`: decimal digits), so that path has no Python code per row.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "COPY_COLUMNS",
    "COPY_HEADER",
    "COPY_TRAILER",
    "FIELD_LENGTH",
    "NULL_FIELD",
    "PG_EPOCH_US",
    "binary_field",
    "copy_tuples",
]

COPY_COLUMNS = ("run_id", "entity_key", "score", "model_version", "scored_at", "feature_snapshot_ts")
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_US = (_PG_EPOCH - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
"""PostgreSQL's timestamp epoch (2000-01-01) in microseconds after the Unix epoch."""
FIELD_LENGTH = struct.Struct(">i")
"""A binary COPY field's length prefix."""
NULL_FIELD = FIELD_LENGTH.pack(-1)
"""A binary COPY null (length -1, no data)."""
_SCORE = struct.Struct(">id")
_ROWS_PER_GROUP = 8  # fewer rows per (snapshot, key length) group on average: pack row by row


def binary_field(data: bytes) -> bytes:
    """A binary COPY field: its length, then its bytes."""
    return FIELD_LENGTH.pack(len(data)) + data


def _pg_micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def key_texts(entity_ids: npt.NDArray[Any]) -> npt.NDArray[np.bytes_]:
    """Each id's text as UTF-8 bytes (a fixed-width numpy bytes array: trailing NULs are padding only)."""
    if entity_ids.dtype.kind in "iu":
        return entity_ids.astype("S20")
    return np.array(
        [str(entity_id).encode("utf-8") for entity_id in entity_ids.tolist()] or [b""], dtype=np.bytes_
    )[: len(entity_ids)]


def copy_tuples(
    *,
    run_id: uuid.UUID,
    model_version: str,
    scored_at: datetime,
    entity_ids: npt.NDArray[Any],
    scores: npt.NDArray[np.float64],
    snapshot_codes: npt.NDArray[np.intp],
    snapshots: Sequence[str],
) -> Iterator[bytes]:
    """COPY tuples (no header/trailer) for one chunk; `snapshots[snapshot_codes[i]]` is row i's snapshot.

    Rows are sorted once by (snapshot, key text length) and each group is one structured array; when groups
    are small (a stream re-score: nearly one snapshot per entity) the rows are packed one by one instead,
    which is then the cheaper way (~2 µs a row against ~20 µs a group)."""
    if len(entity_ids) == 0:
        return
    version = model_version.encode()
    texts = key_texts(entity_ids)
    lengths = np.char.str_len(texts)
    order = np.lexsort((lengths, snapshot_codes))
    codes, sizes = snapshot_codes[order], lengths[order]
    bounds = np.flatnonzero((codes[1:] != codes[:-1]) | (sizes[1:] != sizes[:-1])) + 1
    if len(bounds) + 1 > len(order) // _ROWS_PER_GROUP:
        yield _row_by_row(run_id, version, scored_at, texts, scores, snapshot_codes, snapshots)
        return
    for part in np.split(order, bounds):
        length = int(lengths[part[0]])
        snapshot = snapshots[int(snapshot_codes[part[0]])].encode()
        dtype = np.dtype(
            [
                ("n", ">i2"),
                ("l0", ">i4"), ("run", "S16"),
                ("l1", ">i4"), ("id", f"S{length}"),
                ("l2", ">i4"), ("score", ">f8"),
                ("l3", ">i4"), ("version", f"S{len(version)}"),
                ("l4", ">i4"), ("ts", ">i8"),
                ("l5", ">i4"), ("snapshot", f"S{len(snapshot)}"),
            ]
        )  # fmt: skip
        rows = np.empty(len(part), dtype=dtype)
        rows["n"] = len(COPY_COLUMNS)
        rows["l0"], rows["run"] = 16, run_id.bytes
        rows["l1"], rows["id"] = length, texts[part]
        rows["l2"], rows["score"] = 8, scores[part]
        rows["l3"], rows["version"] = len(version), version
        rows["l4"], rows["ts"] = 8, _pg_micros(scored_at)
        rows["l5"], rows["snapshot"] = len(snapshot), snapshot
        yield rows.tobytes()


def _row_by_row(
    run_id: uuid.UUID,
    version: bytes,
    scored_at: datetime,
    texts: npt.NDArray[np.bytes_],
    scores: npt.NDArray[np.float64],
    codes: npt.NDArray[np.intp],
    snapshots: Sequence[str],
) -> bytes:
    """The same tuples as `copy_tuples`, packed row by row."""
    head = struct.pack(">hi16s", len(COPY_COLUMNS), 16, run_id.bytes)
    middle = binary_field(version) + struct.pack(">iq", 8, _pg_micros(scored_at))
    encoded = [binary_field(text.encode()) for text in snapshots]
    pack_length, pack_score = FIELD_LENGTH.pack, _SCORE.pack
    return b"".join(
        head + pack_length(len(text)) + text + pack_score(8, score) + middle + encoded[code]
        for text, score, code in zip(texts.tolist(), scores.tolist(), codes.tolist(), strict=True)
    )
