"""Chart geometry for the console's SVG charts, computed on the server; `templates/_charts.html` draws it.

The split keeps every label out of hand-built markup: this module computes numbers (pixel coordinates, tick
positions) and the Jinja macros render them with autoescaping, so a metric label or a model name that contains
markup is shown as text. No JavaScript and no plotting library: a page load draws three charts in well under a
millisecond each, and a test can read each drawn value back from the page (`data-*` attributes).

Charts: `line_chart` (time series, one line per label, e.g. per model version), `histogram` (per-arm distribution
of per-request NDCG@10 over equal bins of [0, 1], drawn as shares of each arm so arms of different size compare) and
`interval` (a difference of means with its confidence interval, against zero).
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, Field

WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 26
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


class Series(BaseModel):
    label: str
    points: list[tuple[float, float]]


class Tick(BaseModel):
    pos: float
    text: str


class PlotLine(BaseModel):
    label: str
    color: str
    d: str = Field(description="SVG path data")
    last: float | None = None
    last_x: float = 0.0
    last_y: float = 0.0
    points: int = 0


class LinePlot(BaseModel):
    chart_id: str
    width: int = WIDTH
    height: int = HEIGHT
    unit: str
    lines: list[PlotLine]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    empty: bool


class Bar(BaseModel):
    arm: str
    bin: int
    lo: float
    hi: float
    count: int
    share: float
    x: float
    y: float
    w: float
    h: float


class HistPlot(BaseModel):
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    arms: list[tuple[str, str, int]] = Field(description="(arm, model version, samples)")


class IntervalPlot(BaseModel):
    width: int = WIDTH
    height: int = 70
    estimate: float
    low: float
    high: float
    x_estimate: float
    x_low: float
    x_high: float
    x_zero: float
    ticks: list[Tick]


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About `n` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _y_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def line_chart(series: list[Series], *, x_range: tuple[float, float], unit: str, chart_id: str,
               gap_seconds: float = 90.0) -> LinePlot:
    """Time series (x: unix seconds in `x_range`) as one path per series; a gap longer than `gap_seconds` breaks
    the line instead of drawing a slope across missing data."""
    x0, x1 = x_range
    values = [v for s in series for _, v in s.points]
    y0, y1 = _y_range(values) if values else (0.0, 1.0)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(t: float) -> float:
        return round(LEFT + (t - x0) / (x1 - x0) * pw, 1)

    def py(v: float) -> float:
        return round(TOP + (1 - (v - y0) / (y1 - y0)) * ph, 1)

    lines = []
    for i, s in enumerate(sorted(series, key=lambda s: s.label)):
        parts, prev = [], None
        for t, v in s.points:
            parts.append(f"{'M' if prev is None or t - prev > gap_seconds else 'L'}{px(t)},{py(v)}")
            prev = t
        end = s.points[-1] if s.points else (x1, y0)
        lines.append(PlotLine(label=s.label, color=PALETTE[i % len(PALETTE)], d=" ".join(parts),
                              last=s.points[-1][1] if s.points else None, last_x=px(end[0]), last_y=py(end[1]),
                              points=len(s.points)))
    span = x1 - x0
    minutes = 15 if span > 1800 else 5
    first = math.ceil(x0 / (minutes * 60)) * minutes * 60
    x_ticks = [Tick(pos=px(t), text=datetime.fromtimestamp(t).strftime("%H:%M"))
               for t in range(int(first), int(x1) + 1, minutes * 60)]
    y_ticks = [Tick(pos=py(v), text=_fmt(v)) for v in nice_ticks(y0, y1) if y0 <= v <= y1]
    return LinePlot(chart_id=chart_id, unit=unit, lines=lines, x_ticks=x_ticks, y_ticks=y_ticks, empty=not values)


def histogram(arms: list[tuple[str, str, list[int]]]) -> HistPlot:
    """Per-arm histograms over equal bins of [0, 1]: `arms` = [(arm, model version, counts per bin)]. Bars of the
    arms sit side by side in each bin; heights are shares of the arm's samples."""
    bins = max((len(c) for _, _, c in arms), default=0)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    shares = [[c / (sum(counts) or 1) for c in counts] for _, _, counts in arms]
    top = (max((s for arm in shares for s in arm), default=0.0) or 1.0) * 1.05
    bars = []
    slot = pw / bins if bins else pw
    width = slot * 0.8 / max(len(arms), 1)
    for a, (arm, _, counts) in enumerate(arms):
        for b, count in enumerate(counts):
            share = shares[a][b]
            h = round(share / top * ph, 1)
            bars.append(Bar(arm=arm, bin=b, lo=b / bins, hi=(b + 1) / bins, count=count, share=round(share, 4),
                            x=round(LEFT + b * slot + slot * 0.1 + a * width, 1), y=round(TOP + ph - h, 1),
                            w=round(width, 1), h=h))
    x_ticks = [Tick(pos=round(LEFT + i * pw / 5, 1), text=f"{i / 5:.1f}") for i in range(6)]
    y_ticks = [Tick(pos=round(TOP + ph - v / top * ph, 1), text=f"{v:.0%}") for v in nice_ticks(0.0, top)
               if v <= top]
    return HistPlot(bars=bars, x_ticks=x_ticks, y_ticks=y_ticks,
                    arms=[(arm, version, sum(counts)) for arm, version, counts in arms])


def interval(estimate: float, low: float, high: float) -> IntervalPlot:
    """A difference (treatment - control) with its CI on an axis that always includes zero."""
    lo, hi = min(low, 0.0, estimate), max(high, 0.0, estimate)
    pad = (hi - lo) * 0.1 or 0.01
    lo, hi = lo - pad, hi + pad
    pw = WIDTH - LEFT - RIGHT

    def px(v: float) -> float:
        return round(LEFT + (v - lo) / (hi - lo) * pw, 1)

    return IntervalPlot(estimate=estimate, low=low, high=high, x_estimate=px(estimate), x_low=px(low),
                        x_high=px(high), x_zero=px(0.0),
                        ticks=[Tick(pos=px(v), text=f"{v:+.2f}") for v in nice_ticks(lo, hi, 6)])
