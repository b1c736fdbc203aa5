"""Geometry of the skew pages' SVG charts: points in order and inside the plot, bars scaled with the
threshold lines, histogram shares per side, and readable percentages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.skew.charts import histogram_chart, mismatch_bars, percent, trend_chart

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_trend_oldest_left_and_inside_the_plot() -> None:
    """Reports come newest first; the chart draws them oldest left, higher rates higher up."""
    reports = [
        (3, T0 + timedelta(hours=2), 0.02, "breach"),
        (2, T0 + timedelta(hours=1), 0.0, "ok"),
        (1, T0, 0.01, "warn"),
    ]
    chart = trend_chart(reports, width=500, height=200)
    assert [p.report_id for p in chart.points] == [1, 2, 3]
    xs = [p.x for p in chart.points]
    assert xs == sorted(xs)
    assert xs[0] == chart.plot_left
    assert xs[-1] == chart.plot_right
    by_id = {p.report_id: p for p in chart.points}
    assert by_id[3].y < by_id[1].y < by_id[2].y
    assert all(0 <= p.y <= 200 for p in chart.points)
    assert chart.polyline.count(",") == 3
    assert "#3" in by_id[3].label
    assert "breach" in by_id[3].label


def test_trend_of_one_report_and_of_none() -> None:
    """One report sits in the middle; no report gives an empty chart, never a division by zero."""
    (point,) = trend_chart([(1, T0, 0.0, "ok")], width=500).points
    assert point.x == pytest.approx((64 + 484) / 2)
    assert trend_chart([]).points == ()


def test_bars_scale_to_the_worst_feature_or_the_breach_line() -> None:
    """Bar widths are proportional to the rates; the warn and breach lines sit on the same scale."""
    chart = mismatch_bars(
        [("a:x", 0.0, "ok"), ("a:y", 0.05, "breach"), ("b:z", 0.025, "breach")], warn=0.001, breach=0.01
    )
    widths = [bar.width for bar in chart.bars]
    assert widths[0] == 0
    assert widths[1] == pytest.approx(2 * widths[2], rel=1e-3)
    assert chart.warn_x is not None
    assert chart.breach_x is not None
    assert chart.label_width < chart.warn_x < chart.breach_x < chart.label_width + widths[1]
    tiny = mismatch_bars([("a:x", 1e-6, "warn")], warn=0.001, breach=0.01)
    assert tiny.bars[0].width >= 1.0  # a non-zero rate stays visible


def test_histogram_shares_and_null_bin() -> None:
    """Each side is drawn as a share of its own sample; nulls get a last bin when present."""
    chart = histogram_chart(
        {"labels": ["0", "1"], "offline": [50, 50], "online": [90, 0], "offline_null": 0, "online_null": 10},
        width=300,
        height=100,
    )
    assert len(chart.offline) == len(chart.online) == 3
    assert chart.last_label == "null"
    tallest = max(rect[3] for rect in chart.online)
    assert chart.online[0][3] == tallest
    assert chart.offline[0][3] == pytest.approx(tallest * 0.5 / 0.9, rel=1e-2)
    assert "online 90 (90.0%)" in chart.online[0][4]
    assert histogram_chart({}).offline == ()


@pytest.mark.parametrize(
    ("rate", "text"), [(0.0, "0%"), (0.0004, "0.0400%"), (0.0123, "1.23%"), (0.5, "50.0%")]
)
def test_percent(rate: float, text: str) -> None:
    """Small rates keep their digits."""
    assert percent(rate) == text
