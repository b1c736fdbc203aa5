"""Geometry of the skew pages' inline-SVG charts, computed in Python so the templates only draw.

Pure: numbers in, rectangles and polylines out (SVG user units). No JavaScript, no external assets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "Bar",
    "HistogramChart",
    "MismatchBars",
    "TrendChart",
    "TrendPoint",
    "histogram_chart",
    "mismatch_bars",
    "percent",
    "trend_chart",
]


def percent(rate: float) -> str:
    """A rate as a percentage with enough digits for small rates."""
    if rate == 0:
        return "0%"
    if rate < 0.001:
        return f"{rate:.4%}"
    return f"{rate:.2%}" if rate < 0.1 else f"{rate:.1%}"


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One report on the trend chart."""

    x: float
    y: float
    report_id: int
    status: str
    label: str


@dataclass(frozen=True, slots=True)
class TrendChart:
    """Mismatch rate per report, oldest left."""

    width: int
    height: int
    points: tuple[TrendPoint, ...]
    polyline: str
    y_ticks: tuple[tuple[float, str], ...]  # (y, label)
    plot_left: int
    plot_right: int


def trend_chart(
    reports: Sequence[tuple[int, datetime, float, str]], *, width: int = 760, height: int = 200
) -> TrendChart:
    """(report id, created at, mismatch rate, status) newest first, as a line chart oldest to newest."""
    left, right, top, bottom = 64, width - 16, 16, height - 28
    ordered = list(reversed(reports))
    top_rate = max([rate for _, _, rate, _ in ordered] + [0.0])
    scale = top_rate * 1.15 if top_rate > 0 else 0.01
    span = max(len(ordered) - 1, 1)
    points = tuple(
        TrendPoint(
            x=round(left + (right - left) * (index / span if len(ordered) > 1 else 0.5), 2),
            y=round(bottom - (bottom - top) * rate / scale, 2),
            report_id=report_id,
            status=status,
            label=f"#{report_id} {created:%Y-%m-%d %H:%M} UTC: {percent(rate)} ({status})",
        )
        for index, (report_id, created, rate, status) in enumerate(ordered)
    )
    ticks = tuple(
        (round(bottom - (bottom - top) * fraction, 2), percent(scale * fraction)) for fraction in (0, 0.5, 1)
    )
    return TrendChart(
        width=width,
        height=height,
        points=points,
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        y_ticks=ticks,
        plot_left=left,
        plot_right=right,
    )


@dataclass(frozen=True, slots=True)
class Bar:
    """One horizontal bar: a feature's mismatch rate."""

    y: float
    width: float
    label: str
    value: str
    status: str


@dataclass(frozen=True, slots=True)
class MismatchBars:
    """Horizontal bars per feature, with the warn and breach thresholds as vertical lines."""

    width: int
    height: int
    label_width: int
    bar_height: int
    bars: tuple[Bar, ...]
    warn_x: float | None
    breach_x: float | None


def mismatch_bars(
    findings: Sequence[tuple[str, float, str]], *, warn: float, breach: float, width: int = 760
) -> MismatchBars:
    """(`view:feature`, mismatch rate, status) per feature as bars; the scale shows the breach line."""
    label_width, bar_height, gap, value_width = 280, 18, 6, 90
    plot = width - label_width - value_width
    scale = max([rate for _, rate, _ in findings] + [breach * 1.25, 1e-9])
    bars = tuple(
        Bar(
            y=index * (bar_height + gap),
            width=round(max(plot * rate / scale, 1.0 if rate > 0 else 0.0), 2),
            label=ref,
            value=percent(rate),
            status=status,
        )
        for index, (ref, rate, status) in enumerate(findings)
    )

    def line(threshold: float) -> float | None:
        return round(label_width + plot * threshold / scale, 2) if 0 < threshold <= scale else None

    return MismatchBars(
        width=width,
        height=max(len(bars), 1) * (bar_height + gap),
        label_width=label_width,
        bar_height=bar_height,
        bars=bars,
        warn_x=line(warn),
        breach_x=line(breach),
    )


@dataclass(frozen=True, slots=True)
class HistogramChart:
    """Offline and online shares per bin, drawn as overlaid bars (online narrower, on top)."""

    width: int
    height: int
    offline: tuple[tuple[float, float, float, float, str], ...]  # x, y, w, h, tooltip
    online: tuple[tuple[float, float, float, float, str], ...]
    first_label: str
    last_label: str


def histogram_chart(histogram: dict[str, Any], *, width: int = 340, height: int = 120) -> HistogramChart:
    """Bars of each side's share of its own sample per bin (nulls as a last bin when there are any)."""
    labels = list(histogram.get("labels", []))
    offline = [int(v) for v in histogram.get("offline", [])]
    online = [int(v) for v in histogram.get("online", [])]
    offline_null, online_null = int(histogram.get("offline_null", 0)), int(histogram.get("online_null", 0))
    if offline_null or online_null:
        labels, offline, online = [*labels, "null"], [*offline, offline_null], [*online, online_null]
    bins = max(len(labels), 1)
    off_total, on_total = max(sum(offline), 1), max(sum(online), 1)
    shares = [(o / off_total, n / on_total) for o, n in zip(offline, online, strict=True)]
    top = max([max(pair) for pair in shares] + [1e-9])
    step = width / bins
    usable = height - 4

    def rect(
        index: int, share: float, inset: float, side: str, count: int
    ) -> tuple[float, float, float, float, str]:
        h = round(usable * share / top, 2)
        tooltip = f"{labels[index]}: {side} {count:,} ({share:.1%})"
        return (
            round(index * step + inset, 2),
            round(height - h, 2),
            round(max(step - 2 * inset, 0.5), 2),
            h,
            tooltip,
        )

    return HistogramChart(
        width=width,
        height=height,
        offline=tuple(rect(i, s[0], 0.5, "offline", offline[i]) for i, s in enumerate(shares)),
        online=tuple(rect(i, s[1], step * 0.25, "online", online[i]) for i, s in enumerate(shares)),
        first_label=labels[0] if labels else "",
        last_label=labels[-1] if labels else "",
    )
