"""One finding per (feature view, feature): classify every sampled entity, measure, pick examples.

- counts per class and the mismatch rate (skew classes over entities checked), see `consistency.classify`;
- mean / max absolute difference over entities whose value was compared (class match or value_mismatch)
  with both values present (numeric kinds, float32 ones at float32 precision; None for strings);
- PSI and JS distance of the offline (expected, nulls where no row) vs online (served) samples, and an
  overlaid histogram for the chart, see `consistency.stats`;
- up to `MAX_EXAMPLES` examples, skewed entities first (by id), then `fresher_online` ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from consistency.classify import (
    CLASSES,
    NO_TIME,
    SKEW_CLASSES,
    ValueColumn,
    class_counts,
    classify_column,
    comparable_values,
)
from consistency.stats import Thresholds, chart_histogram, distribution_distances, feature_status
from core.features.specs import FeatureSpec, ViewSpec
from core.records.skew_models import FindingInfo

__all__ = ["MAX_EXAMPLES", "FeatureInput", "build_finding"]

MAX_EXAMPLES = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SKEW_CODES = np.array([CLASSES.index(name) for name in sorted(SKEW_CLASSES)], dtype=np.int8)
_FRESHER = CLASSES.index("fresher_online")
_COMPARED = np.array([CLASSES.index("match"), CLASSES.index("value_mismatch")], dtype=np.int8)


@dataclass(frozen=True, slots=True)
class FeatureInput:
    """Both sides of one feature for the sample (aligned with `entity_ids`)."""

    view: ViewSpec
    feature: FeatureSpec
    entity_ids: npt.NDArray[Any]  # as core.features.keys makes them
    expected: ValueColumn
    expected_us: npt.NDArray[np.int64]
    online: ValueColumn
    online_us: npt.NDArray[np.int64]
    watermark: datetime


def _iso(us: int) -> str | None:
    return None if us == NO_TIME else (_EPOCH + timedelta(microseconds=us)).isoformat()


def _json_value(value: Any) -> Any:
    """JSONB has no NaN or infinity: such floats are kept as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _examples(data: FeatureInput, codes: npt.NDArray[np.int8], expected: ValueColumn) -> list[dict[str, Any]]:
    skewed = np.flatnonzero(np.isin(codes, _SKEW_CODES))
    fresher = np.flatnonzero(codes == _FRESHER)
    chosen = np.concatenate([skewed, fresher])[:MAX_EXAMPLES]
    return [
        {
            "entity_id": data.entity_ids[i].item()
            if isinstance(data.entity_ids[i], np.generic)
            else data.entity_ids[i],
            "class": CLASSES[int(codes[i])],
            "offline": _json_value(expected.scalar(int(i))),
            "online": _json_value(data.online.scalar(int(i))),
            "offline_ts": _iso(int(data.expected_us[i])),
            "online_ts": _iso(int(data.online_us[i])),
        }
        for i in chosen.tolist()
    ]


def _diffs(
    expected: ValueColumn, online: ValueColumn, codes: npt.NDArray[np.int8]
) -> tuple[float | None, float | None]:
    if expected.kind == "string":
        return None, None
    both = ~expected.null & ~online.null & np.isin(codes, _COMPARED)
    if not np.any(both):
        return None, None
    with np.errstate(invalid="ignore", over="ignore"):
        diffs = np.abs(
            comparable_values(expected)[both].astype(np.float64)
            - comparable_values(online)[both].astype(np.float64)
        )
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return None, None
    return float(diffs.mean()), float(diffs.max())


def build_finding(
    data: FeatureInput, *, tolerance: float, thresholds: Thresholds
) -> tuple[FindingInfo, npt.NDArray[np.int8]]:
    """The finding of one feature and the class code of every sampled entity."""
    watermark_us = (data.watermark - _EPOCH) // timedelta(microseconds=1)
    codes = classify_column(
        expected=data.expected,
        online=data.online,
        expected_us=data.expected_us,
        online_us=data.online_us,
        watermark_us=watermark_us,
        ttl_s=data.view.ttl_s,
        tolerance=tolerance,
    )
    # What offline retrieval returns: null wherever the view has no row as of the watermark.
    expected = ValueColumn(
        data.expected.kind, data.expected.values, data.expected.null | (data.expected_us == NO_TIME)
    )
    counts = class_counts(codes)
    checked = len(codes)
    skewed = sum(counts[name] for name in SKEW_CLASSES)
    rate = skewed / checked if checked else 0.0
    distances = distribution_distances(expected, data.online)
    mean_abs, max_abs = _diffs(expected, data.online, codes)
    finding = FindingInfo(
        feature_view=data.view.name,
        feature=data.feature.name,
        counts={str(name): count for name, count in counts.items()},
        mismatch_rate=rate,
        mean_abs_diff=mean_abs,
        max_abs_diff=max_abs,
        psi=distances.psi,
        js_distance=distances.js_distance,
        status=feature_status(
            mismatch_rate=rate, psi=distances.psi, js=distances.js_distance, thresholds=thresholds
        ),
        examples=_examples(data, codes, expected),
        histogram=chart_histogram(expected, data.online).to_json(),
    )
    return finding, codes
