"""Charts drawn on the server as SVG, so pages need no charting script."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.core.i18n import N_, _


@dataclass
class Chart:
    width: int
    height: int
    points: str  # the polyline's "x,y x,y ..." in view-box units
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    label: str
    empty: bool
    overlay: str = ""  # a second polyline on the same axes (e.g. validation loss), if any


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_chart(
    data: list[tuple[int, float]],
    *,
    label: str,
    width: int = 640,
    height: int = 240,
    overlay: list[tuple[int, float]] | None = None,
) -> Chart:
    pad_l, pad_r, pad_t, pad_b = 48, 12, 12, 28
    if not data:
        return Chart(width, height, "", [], [], label, True)
    both = data + (overlay or [])  # one scale for both lines, so they can be compared
    xs = [x for x, _ in both]
    ys = [y for _, y in both]
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
    second = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in overlay or [])
    y_ticks = [(sy(y0 + (y1 - y0) * i / 4), _fmt(y0 + (y1 - y0) * i / 4)) for i in range(5)]
    return Chart(
        width, height, points, step_ticks(min(xs), max(xs), sx), y_ticks, label, False, second
    )


def step_ticks(first: int, last: int, at: Any, most: int = 8) -> list[tuple[float, str]]:
    """Labels for an axis of whole steps: each step at most once, at its own position, every
    1, 2, 5 × 10^k steps (a 2-step run reads "1 2", never "1 1 2 2 2")."""
    every = max(1, int(_nice_step((last - first) / max(1, most - 1))))
    start = -(-first // every) * every  # the first multiple of ``every`` on the axis
    return [(at(x), str(x)) for x in range(start, last + 1, every)]


# --- Dataset statistics ----------------------------------------------------------------------


def format_number(value: float) -> str:
    """Whole numbers with thousands separators ("12,345"); others to three significant digits."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def compact_number(value: float) -> str:
    """Short axis labels: 950, 1.2k, 35k, 1.5M."""
    for limit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            text = f"{scaled:.1f}" if abs(scaled) < 10 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return format_number(value)


@dataclass
class HistogramBar:
    x: float
    y: float
    width: float
    height: float
    title: str  # hover text: the bin's range and its count


@dataclass
class HistogramChart:
    width: int
    height: int
    bars: list[HistogramBar]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    plot_left: float
    plot_right: float
    baseline: float  # y of the x axis
    label: str  # what is counted, e.g. "Total length (tokens)"
    empty: bool


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is at least ``raw``."""
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(s * magnitude for s in (1, 2, 5, 10) if s * magnitude >= raw)


def histogram_chart(
    edges: list[int],
    counts: list[int],
    *,
    label: str,
    unit: str = "",
    width: int = 640,
    height: int = 220,
) -> HistogramChart:
    """Bars for bins ``[edges[i], edges[i+1])`` with ``counts[i]`` samples each."""
    pad_l, pad_r, pad_t, pad_b = 48, 20, 12, 28
    baseline = height - pad_b
    if not counts or len(edges) != len(counts) + 1 or not any(counts):
        return HistogramChart(
            width, height, [], [], [], pad_l, width - pad_r, baseline, label, True
        )
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    step = _nice_step(max(counts) / 4)
    top = step * math.ceil(max(counts) / step)
    slot = plot_w / len(counts)
    gap = 1.0 if slot > 4 else 0.0
    suffix = f" {unit}" if unit else ""
    bars = []
    for i, count in enumerate(counts):
        # A bin with a few samples in a long tail still shows as a sliver.
        bar_h = max(count / top * plot_h, 1.0) if count else 0.0
        last = edges[i + 1] - 1 if edges[i + 1] - edges[i] > 1 else None
        span = (
            f"{format_number(edges[i])}–{format_number(last)}" if last else format_number(edges[i])
        )
        bars.append(
            HistogramBar(
                x=round(pad_l + i * slot + gap / 2, 1),
                y=round(baseline - bar_h, 1),
                width=round(max(slot - gap, 0.5), 1),
                height=round(bar_h, 1),
                title=_(
                    "%(span)s: %(count)s samples",
                    span=f"{span}{suffix}",
                    count=format_number(count),
                ),
            )
        )
    # At most about eight edge labels, so that "12.5k" labels never overlap.
    every = max(1, math.ceil(len(edges) / 8))
    x_ticks = [
        (round(pad_l + i * slot, 1), compact_number(edge))
        for i, edge in enumerate(edges)
        if i % every == 0 or i == len(edges) - 1
    ]
    if len(x_ticks) > 1 and x_ticks[-1][0] - x_ticks[-2][0] < plot_w / 10:
        del x_ticks[-2]  # the forced last label would collide with the one before it
    n_y = round(top / step)
    y_ticks = [
        (round(baseline - k * step / top * plot_h, 1), compact_number(k * step))
        for k in range(n_y + 1)
    ]
    return HistogramChart(
        width, height, bars, x_ticks, y_ticks, pad_l, width - pad_r, baseline, label, False
    )


@dataclass
class BarRow:
    label: str
    value: int
    value_text: str  # "1,234 (56%)"
    y: float
    bar_width: float


@dataclass
class BarChart:
    width: int
    height: int
    rows: list[BarRow]
    label_width: int  # the bars start here; row labels are right-aligned before it
    bar_space: float  # the full length of a bar at 100 %
    row_height: int
    bar_height: int
    label: str
    empty: bool


LANGUAGE_NAMES = {
    "zh": N_("Chinese"),
    "ja": N_("Japanese"),
    "ko": N_("Korean"),
    "latin": N_("Latin script"),
    "other": N_("Other scripts"),
    "none": N_("No letters"),
}
PART_TITLES = {
    "prompt": N_("Prompt length"),
    "answer": N_("Answer length"),
    "total": N_("Total length"),
}
UNITS = {"characters": N_("characters"), "tokens": N_("tokens")}


def bar_chart(
    items: list[tuple[str, int]], *, label: str, width: int = 480, row_height: int = 24
) -> BarChart:
    """Horizontal bars, one row per (label, count), lengths relative to the largest count."""
    label_width, value_width = 110, 110
    bar_space = width - label_width - value_width - 8
    total = sum(value for _, value in items)
    if not items or total <= 0:
        return BarChart(width, row_height, [], label_width, bar_space, row_height, 14, label, True)
    biggest = max(value for _, value in items)
    rows = [
        BarRow(
            label=name,
            value=value,
            value_text=f"{format_number(value)} ({_percent(value, total)})",
            y=i * row_height,
            bar_width=round(max(value / biggest * bar_space, 1.0 if value else 0.0), 1),
        )
        for i, (name, value) in enumerate(items)
    ]
    bar_height = max(row_height - 10, 4)
    height = row_height * len(rows)
    return BarChart(
        width, height, rows, label_width, bar_space, row_height, bar_height, label, False
    )


def language_chart(languages: dict[str, int], *, width: int = 480) -> BarChart:
    """The language mix of ``compute_stats``, largest first, languages with no record left out."""
    items = sorted(
        (
            (_(LANGUAGE_NAMES[code]) if code in LANGUAGE_NAMES else code, n)
            for code, n in languages.items()
            if n > 0
        ),
        key=lambda item: -item[1],
    )
    return bar_chart(items, label=_("Records by language"), width=width)


def _percent(value: int, total: int) -> str:
    share = 100 * value / total
    if 0 < share < 1:
        return "<1%"
    if 99 < share < 100:
        return ">99%"
    return f"{share:.0f}%"


def stats_charts(stats: dict[str, Any]) -> dict[str, Any]:
    """The charts of ``dataset_stats.compute_stats``: a histogram each for "prompt", "answer"
    and "total" lengths, and the "languages" bar chart."""
    unit = stats.get("unit", "characters")
    unit_text = _(UNITS[unit]) if unit in UNITS else unit
    if stats.get("tokenizer"):
        unit_text = _("%(unit)s of %(tokenizer)s", unit=unit_text, tokenizer=stats["tokenizer"])
    charts: dict[str, Any] = {}
    for part, title in PART_TITLES.items():
        hist = (stats.get(part) or {}).get("histogram") or {"edges": [], "counts": []}
        label = _("%(title)s (%(unit)s)", title=_(title), unit=unit_text)
        shown_unit = _(UNITS[unit]) if unit in UNITS else unit
        charts[part] = histogram_chart(hist["edges"], hist["counts"], label=label, unit=shown_unit)
    charts["languages"] = language_chart(stats.get("languages") or {})
    return charts
