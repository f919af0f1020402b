"""Chart geometry: every drawn coordinate is the value it stands for, on the axis the chart shows."""

from __future__ import annotations

import pytest

from autooptimizer.console.charts import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Series,
    histogram,
    interval,
    line_chart,
    nice_ticks,
)


def test_nice_ticks_are_round_and_inside() -> None:
    assert nice_ticks(0, 1) == [0, 0.5, 1.0]
    assert nice_ticks(0.13, 0.87) == [0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(0, 4200) == [0, 2000, 4000]
    assert nice_ticks(5, 5) == [5]


def _points(d: str) -> list[tuple[str, float, float]]:
    out = []
    for part in d.split():
        cmd, xy = part[0], part[1:].split(",")
        out.append((cmd, float(xy[0]), float(xy[1])))
    return out


def test_a_line_maps_time_and_value_linearly_and_breaks_at_gaps() -> None:
    s = Series(label="v1", points=[(0.0, 0.2), (30.0, 0.4), (60.0, 0.6), (300.0, 0.6)])
    plot = line_chart([s], x_range=(0.0, 300.0), unit="NDCG@10", chart_id="t", gap_seconds=90)
    pts = _points(plot.lines[0].d)
    assert [p[0] for p in pts] == ["M", "L", "L", "M"]  # 60 -> 300 s is a gap: a new segment
    assert pts[0][1] == LEFT and pts[-1][1] == WIDTH - RIGHT
    # equal value steps are equal pixel steps, upwards
    assert pts[0][2] - pts[1][2] == pytest.approx(pts[1][2] - pts[2][2], abs=0.11) and pts[1][2] < pts[0][2]
    assert min(p[2] for p in pts) >= TOP and max(p[2] for p in pts) <= HEIGHT - BOTTOM
    assert plot.lines[0].last == 0.6 and plot.lines[0].points == 4 and not plot.empty
    assert (plot.lines[0].last_x, plot.lines[0].last_y) == (pts[-1][1], pts[-1][2])


def test_an_empty_chart_says_so_and_series_get_distinct_colours() -> None:
    plot = line_chart([], x_range=(0.0, 3600.0), unit="ms", chart_id="t")
    assert plot.empty and plot.lines == []
    two = line_chart([Series(label="b", points=[(1.0, 1.0)]), Series(label="a", points=[(2.0, 2.0)])],
                     x_range=(0.0, 3600.0), unit="ms", chart_id="t")
    assert [x.label for x in two.lines] == ["a", "b"] and two.lines[0].color != two.lines[1].color


def test_histogram_bars_are_each_arms_shares() -> None:
    plot = histogram([("control", "v1", [1, 3, 0, 0]), ("treatment", "v2", [0, 2, 2, 4])])
    bars = {(b.arm, b.bin): b for b in plot.bars}
    assert bars[("control", 1)].share == 0.75 and bars[("treatment", 3)].share == 0.5
    assert bars[("control", 1)].h / bars[("treatment", 3)].h == pytest.approx(0.75 / 0.5, rel=0.01)
    assert bars[("control", 2)].h == 0 and bars[("control", 1)].y + bars[("control", 1)].h == HEIGHT - BOTTOM
    assert bars[("control", 0)].x < bars[("treatment", 0)].x < bars[("control", 1)].x  # side by side per bin
    assert plot.arms == [("control", "v1", 4), ("treatment", "v2", 8)]


def test_interval_always_shows_zero() -> None:
    p = interval(0.12, 0.05, 0.2)
    assert p.x_zero < p.x_low < p.x_estimate < p.x_high
    neg = interval(-0.1, -0.2, -0.05)
    assert neg.x_low < neg.x_estimate < neg.x_high < neg.x_zero
