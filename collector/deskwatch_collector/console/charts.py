"""Small inline SVG bar charts, laid out here so the template only draws rectangles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str


@dataclass
class Chart:
    width: int
    height: int
    label: str
    bars: list[Bar] = field(default_factory=list)
    marks: list[Bar] = field(default_factory=list)


def daily_bars(
    days: list[date], values: list[tuple[int, int]], label: str, width: int = 150, height: int = 34
) -> Chart:
    """One bar per day (findings), its dismissed-as-wrong part drawn over it."""
    chart = Chart(width, height, label)
    n = max(1, len(days))
    top = max((f for f, _ in values), default=0) or 1
    step = width / n
    gap = 1.0 if step >= 3 else 0.0
    for i, (day, (found, wrong)) in enumerate(zip(days, values, strict=False)):
        x = round(i * step, 2)
        w = round(max(0.5, step - gap), 2)
        if found:
            h = round(found / top * (height - 1), 2)
            chart.bars.append(
                Bar(x, round(height - 1 - h, 2), w, h, f"{day.isoformat()}: {found} findings, {wrong} wrong")
            )
        if wrong:
            h = round(wrong / top * (height - 1), 2)
            chart.marks.append(Bar(x, round(height - 1 - h, 2), w, h, f"{day.isoformat()}: {wrong} dismissed as wrong"))
    return chart
