"""Charts drawn on the server as SVG, so pages need no charting script."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Chart:
    width: int
    height: int
    points: str  # the polyline's "x,y x,y ..." in view-box units
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    label: str
    empty: bool


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_chart(
    data: list[tuple[int, float]], *, label: str, width: int = 640, height: int = 240
) -> Chart:
    pad_l, pad_r, pad_t, pad_b = 48, 12, 12, 28
    if not data:
        return Chart(width, height, "", [], [], label, True)
    xs = [x for x, _ in data]
    ys = [y for _, y in data]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * plot_h

    points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data)
    x_ticks = [(sx(x0 + (x1 - x0) * i / 4), str(round(x0 + (x1 - x0) * i / 4))) for i in range(5)]
    y_ticks = [(sy(y0 + (y1 - y0) * i / 4), _fmt(y0 + (y1 - y0) * i / 4)) for i in range(5)]
    return Chart(width, height, points, x_ticks, y_ticks, label, False)
