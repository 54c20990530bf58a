"""Small line charts as inline SVG, for the run page and the history page.

The pages load nothing and run no script, so a chart is markup: a `<svg>` with a viewBox (it scales with the
page), one polyline per series, a circle per point whose `<title>` is the tooltip a browser shows on hover,
and optional shaded bands (the champion's periods on the history page). A few KB a chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 34, 44
_MAX_X_LABELS = 8
BAND_COLOURS = ("#dafbe1", "#ddf4ff", "#fff8c5", "#fbefff", "#ffebe9")


@dataclass(frozen=True)
class Series:
    """One line: a value (or None, a gap) for each position on the x axis."""

    name: str
    values: Sequence[float | None]
    colour: str
    dashed: bool = False


@dataclass(frozen=True)
class Band:
    """A shaded span of x positions (inclusive), labelled at the top of the plot."""

    start: int
    end: int
    label: str
    colour: str = BAND_COLOURS[0]


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    y_format: Callable[[float], str] = lambda value: f"{value:.4g}",
    bands: Sequence[Band] = (),
    css_class: str = "chart",
    y_title: str = "",
) -> Markup:
    """An SVG line chart; an empty Markup when no series has a value. `y_title` names the vertical axis."""
    found = [float(value) for line in series for value in line.values if value is not None and _finite(value)]
    if not found or not x_labels:
        return Markup("")
    low, high, ticks = _y_scale(min(found), max(found))
    n = len(x_labels)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x_at(index: float) -> float:
        return _LEFT + (plot_w * (index + 0.5) / n)

    def y_at(value: float) -> float:
        return _TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" font-size="11" '
        'font-family="system-ui, sans-serif">',  # inline in HTML: no xmlns needed
        f"<title>{escape(title)}</title>",
    ]
    label_right = -math.inf  # labels never overlap: one that would is left to its band's tooltip
    for band in bands:
        left, right = x_at(band.start - 0.5), x_at(band.end + 0.5)
        parts.append(
            f'<rect x="{left:.1f}" y="{_TOP}" width="{right - left:.1f}" height="{plot_h}" '
            f'fill="{band.colour}"><title>{escape(band.label)}</title></rect>'
        )
        width = 5.6 * len(band.label)  # about 5.6 units a character at font-size 10
        middle = (left + right) / 2
        if width <= right - left + 8 and middle - width / 2 > label_right + 4:
            parts.append(
                f'<text x="{middle:.1f}" y="{_TOP + 11}" text-anchor="middle" fill="#59636e" '
                f'font-size="10">{escape(band.label)}</text>'
            )
            label_right = middle + width / 2
    for tick in ticks:
        y = y_at(tick)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1d9e0" '
            f'stroke-width="0.6"/><text x="{_LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end" '
            f'fill="#59636e">{escape(y_format(tick))}</text>'
        )
    every = max(1, math.ceil(n / _MAX_X_LABELS))
    for index in range(0, n, every):
        parts.append(
            f'<text x="{x_at(index):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle" '
            f'fill="#59636e">{escape(x_labels[index])}</text>'
        )
    for line in series:
        parts.extend(_polyline(line, x_at, y_at))
        for index, value in enumerate(line.values):
            if _finite(value):
                assert value is not None
                tip = f"{line.name}, {x_labels[index]}: {y_format(value)}"
                parts.append(
                    f'<circle cx="{x_at(index):.1f}" cy="{y_at(value):.1f}" r="3" fill="{line.colour}">'
                    f"<title>{escape(tip)}</title></circle>"
                )
    if y_title:
        middle = _TOP + plot_h / 2
        parts.append(
            f'<text x="12" y="{middle:.1f}" text-anchor="middle" fill="#59636e" '
            f'transform="rotate(-90 12 {middle:.1f})">{escape(y_title)}</text>'
        )
    parts.append(_legend(series))
    parts.append("</svg>")
    return Markup("".join(parts))


def _polyline(line: Series, x_at: Callable[[float], float], y_at: Callable[[float], float]) -> list[str]:
    """One polyline per run of consecutive values (a None breaks the line)."""
    dash = ' stroke-dasharray="5 4"' if line.dashed else ""
    runs: list[list[str]] = [[]]
    for index, value in enumerate(line.values):
        if _finite(value):
            assert value is not None
            runs[-1].append(f"{x_at(index):.1f},{y_at(value):.1f}")
        elif runs[-1]:
            runs.append([])
    return [
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{line.colour}" stroke-width="2"{dash}/>'
        for points in runs
        if len(points) > 1
    ]


def _legend(series: Sequence[Series]) -> str:
    parts: list[str] = []
    x = float(_LEFT)
    for line in series:
        dash = ' stroke-dasharray="5 4"' if line.dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 18}" y1="12" y2="12" stroke="{line.colour}" stroke-width="2"{dash}/>'
            f'<text x="{x + 23}" y="16" fill="#1f2328">{escape(line.name)}</text>'
        )
        x += 40 + 6.5 * len(line.name)
    return "".join(parts)


def _y_scale(low: float, high: float) -> tuple[float, float, list[float]]:
    """Axis limits on round numbers around [low, high], and 3 to 6 ticks between them."""
    if high == low:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    step = _nice((high - low) / 4)
    start, stop = math.floor(low / step) * step, math.ceil(high / step) * step
    ticks = [start + step * i for i in range(round((stop - start) / step) + 1)]
    return start, stop, ticks


def _nice(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= raw))


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
