"""Server-side SVG charts for the monitoring page: bars and rates over time, class mixes.

Plain markup like charts.py: no JavaScript, no CDN, so they render offline.
"""

from collections.abc import Sequence

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

from .charts import SERIES_COLOURS, _format, _nice_ceiling, chart_figure

__all__ = ["bar_chart_svg", "grouped_bar_chart_svg", "rate_chart_svg"]

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 46


def _frame(parts: list[str], label: str, title: str, legend: Sequence[tuple[str, str]] = ()):
    keys = "".join(
        format_html(
            '<li class="chart__key"><svg width="14" height="10" aria-hidden="true">'
            '<rect width="14" height="10" fill="{}" /></svg>{}</li>',
            colour,
            name,
        )
        for name, colour in legend
    )
    return chart_figure(parts, size=(WIDTH, HEIGHT), label=label, title=title, legend=keys)


def _axis(parts: list[str], top: float, percent: bool) -> None:
    plot_h = HEIGHT - TOP - BOTTOM
    for k in range(5):
        v = top * k / 4
        y = TOP + plot_h * (1 - k / 4)
        parts.append(
            f'<line class="chart__grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="#e3e6ee" /><text class="chart__tick" x="{LEFT - 6}" '
            f'y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="#566072">'
            f"{_format(v, percent)}</text>"
        )


def _x_labels(parts: list[str], labels: Sequence[str], slot: float) -> None:
    step = max(1, -(-len(labels) // 12))  # about a dozen labels at most
    for i in range(0, len(labels), step):
        x = LEFT + slot * (i + 0.5)
        parts.append(
            f'<text class="chart__tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle" font-size="11" fill="#566072">{escape(labels[i])}</text>'
        )


def bar_chart_svg(
    values: Sequence[float], labels: Sequence[str], *, title: str, percent: bool = False
) -> SafeString:
    """One bar per value; each bar carries its number as a tooltip."""
    return grouped_bar_chart_svg([(title, list(values))], labels, title=title, percent=percent)


def grouped_bar_chart_svg(
    series: Sequence[tuple[str, Sequence[float]]],
    labels: Sequence[str],
    *,
    title: str,
    percent: bool = False,
) -> SafeString:
    """Bars for each label, one per series side by side (e.g. served vs training mix)."""
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_ceiling(max((v for _, vs in series for v in vs), default=0.0))
    parts: list[str] = []
    _axis(parts, top, percent)
    slot = plot_w / max(n, 1)
    width = slot * 0.8 / max(len(series), 1)
    summary = []
    for s, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
        for i, v in enumerate(values):
            h = plot_h * min(v / top, 1.0) if top else 0
            x = LEFT + slot * i + slot * 0.1 + width * s
            parts.append(
                f'<rect class="chart__bar chart__bar--{s}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
                f'width="{max(width - 1, 1):.1f}" height="{h:.1f}" fill="{colour}"><title>'
                f"{escape(name)}, {escape(labels[i])}: {_format(v, percent)}</title></rect>"
            )
        shown = zip(labels, values, strict=False)
        summary.append(f"{name}: " + ", ".join(f"{lab} {_format(v, percent)}" for lab, v in shown))
    _x_labels(parts, labels, slot)
    legend = (
        [(name, SERIES_COLOURS[s % len(SERIES_COLOURS)]) for s, (name, _) in enumerate(series)]
        if len(series) > 1
        else []
    )
    return _frame(parts, f"{title}. " + "; ".join(summary), title, legend)


def rate_chart_svg(
    series: Sequence[tuple[str, Sequence[float | None]]],
    labels: Sequence[str],
    *,
    title: str,
) -> SafeString:
    """Rates (0-1) over time as lines with dots; a missing value leaves a gap."""
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    present = [v for _, vs in series for v in vs if v is not None]
    top = _nice_ceiling(max(present, default=0.0))
    parts: list[str] = []
    _axis(parts, top, True)
    slot = plot_w / max(n, 1)
    summary = []
    for s, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
        points = [
            (LEFT + slot * (i + 0.5), TOP + plot_h * (1 - min(v / top, 1.0)), v, labels[i])
            for i, v in enumerate(values)
            if v is not None
        ]
        if len(points) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(
                f'<polyline class="chart__line chart__line--{s}" points="{coords}" fill="none" '
                f'stroke="{colour}" stroke-width="2" />'
            )
        for x, y, v, label in points:
            parts.append(
                f'<circle class="chart__dot chart__dot--{s}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
                f'fill="{colour}"><title>{escape(name)}, {escape(label)}: '
                f"{_format(v, True)}</title></circle>"
            )
        summary.append(f"{name}: {len(points)} points")
    _x_labels(parts, labels, slot)
    legend = [(name, SERIES_COLOURS[s % len(SERIES_COLOURS)]) for s, (name, _) in enumerate(series)]
    return _frame(parts, f"{title}. " + "; ".join(summary), title, legend)
