"""Charts drawn on the server as inline SVG, and the number formats the model pages share.

No JavaScript and no CDN: a chart is plain markup, so it works offline and prints.
"""

import math
from collections.abc import Sequence

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

__all__ = ["chart_figure", "line_chart_svg", "pct", "shade_level"]

SERIES_LABELS = {
    "train_loss": "Training loss",
    "valid_loss": "Validation loss",
    "error_rate": "Error rate (validation)",
    "accuracy": "Accuracy (validation)",
}
# Colour-blind-safe pairs (Okabe-Ito blue, orange, green); CSS may override them.
SERIES_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7")
DASHES = ("", "6 4", "2 3", "8 3 2 3")  # lines stay apart in greyscale too

WIDTH, HEIGHT = 560, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 16, 14, 38


def _number(value) -> float | None:
    """A finite float, or None for null, NaN, infinity and anything that is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least ``value``: a round axis top."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        nice = step * 10**exponent
        if nice >= value * (1 - 1e-9):
            return nice
    return 10 ** (exponent + 1)  # pragma: no cover - the loop always returns


def _format(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%" if value * 100 >= 10 or value == 0 else f"{value * 100:.1f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# A loss that spikes a hundredfold (a high learning rate, a tiny model) flattens the rest
# of a linear chart to a line on the axis; beyond this ratio the y axis goes logarithmic.
LOG_SCALE_RATIO = 100


def line_chart_svg(
    rows: Sequence[dict],
    keys: Sequence[str],
    *,
    title: str,
    percent: bool = False,
    x_key: str = "epoch",
) -> SafeString:
    """An SVG line chart of ``rows`` (one dict per epoch), one polyline per key in ``keys``.

    Null or non-finite values are skipped: the line joins the points on either side, and
    every real value also gets a marker, so a single epoch still shows as dots.
    """
    rows = list(rows or [])
    n = len(rows)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    values = {key: [_number(row.get(key)) for row in rows] for key in keys}
    present = [v for series in values.values() for v in series if v is not None]
    positive = [v for v in present if v > 0]
    log = (
        not percent
        and len(positive) == len(present)
        and bool(positive)
        and max(positive) / min(positive) > LOG_SCALE_RATIO
    )
    low = high = 0
    top = 1.0
    if log:
        low = math.floor(math.log10(min(positive)))
        high = max(math.ceil(math.log10(max(positive))), low + 1)
        ticks = [10.0**k for k in range(low, high + 1, max(1, math.ceil((high - low) / 5)))]
    else:
        top = _nice_ceiling(max(present, default=0.0))
        ticks = [top * k / 4 for k in range(5)]

    def x_at(i: int) -> float:
        return MARGIN_LEFT + (plot_w / 2 if n <= 1 else plot_w * i / (n - 1))

    def y_at(v: float) -> float:
        share = (math.log10(v) - low) / (high - low) if log else v / top
        return MARGIN_TOP + plot_h * (1 - min(max(share, 0.0), 1.0))

    parts: list[str] = []
    # Horizontal grid and y labels.
    for v in ticks:
        y = y_at(v)
        parts.append(
            f'<line class="chart__grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ee" />'
            f'<text class="chart__tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end" font-size="12" fill="#566072">{_format(v, percent)}</text>'
        )
    # X ticks: every epoch while they fit, else about ten of them.
    step = max(1, math.ceil(n / 10))
    for i in range(0, n, step):
        epoch = rows[i].get(x_key, i)
        label = epoch + 1 if isinstance(epoch, int) else escape(epoch)  # people count from 1
        parts.append(
            f'<text class="chart__tick" x="{x_at(i):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" '
            f'text-anchor="middle" font-size="12" fill="#566072">{label}</text>'
        )
    parts.append(
        f'<text class="chart__axis-label" x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle" font-size="11" fill="#566072">Epoch</text>'
    )
    # Where fine_tune unfroze the pretrained body.
    phases = [row.get("phase") for row in rows]
    for i in range(1, n):
        if phases[i - 1] == "frozen" and phases[i] == "unfrozen":
            x = (x_at(i - 1) + x_at(i)) / 2
            parts.append(
                f'<line class="chart__phase" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" '
                f'y2="{HEIGHT - MARGIN_BOTTOM}" stroke="#9aa1b0" stroke-dasharray="3 3" />'
                f'<text class="chart__phase-label" x="{x + 4:.1f}" y="{MARGIN_TOP + 10}" '
                f'font-size="10" fill="#566072">unfrozen</text>'
            )
    parts.append(
        f'<line class="chart__axis" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" '
        f'y1="{HEIGHT - MARGIN_BOTTOM}" y2="{HEIGHT - MARGIN_BOTTOM}" stroke="#b9bfcb" />'
    )
    legend: list[str] = []
    summary: list[str] = []
    for s, key in enumerate(keys):
        name = SERIES_LABELS.get(key, key.replace("_", " "))
        colour, dash = SERIES_COLOURS[s % len(SERIES_COLOURS)], DASHES[s % len(DASHES)]
        points = [(i, v) for i, v in enumerate(values[key]) if v is not None]
        if points:
            coords = " ".join(f"{x_at(i):.1f},{y_at(v):.1f}" for i, v in points)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<polyline class="chart__line chart__line--{s}" data-series="{escape(key)}" '
                f'points="{coords}" fill="none" stroke="{colour}" stroke-width="2.25" '
                f'stroke-linejoin="round" stroke-linecap="round"{dash_attr} />'
            )
            radius = 3.25 if len(points) > 2 else 5
            for i, v in points:
                epoch = rows[i].get(x_key, i)
                shown = epoch + 1 if isinstance(epoch, int) else epoch
                parts.append(
                    f'<circle class="chart__dot chart__dot--{s}" cx="{x_at(i):.1f}" '
                    f'cy="{y_at(v):.1f}" r="{radius}" fill="{colour}"><title>'
                    f"{escape(name)}, epoch {escape(shown)}: {_format(v, percent)}"
                    f"</title></circle>"
                )
                if len(points) == 1:  # no line to read it from: print the value
                    parts.append(
                        f'<text class="chart__value" x="{x_at(i) + 9:.1f}" y="{y_at(v) + 4:.1f}" '
                        f'font-size="12" fill="{colour}">{_format(v, percent)}</text>'
                    )
            first, last = points[0][1], points[-1][1]
            summary.append(
                f"{name} {_format(first, percent)}"
                + (f" to {_format(last, percent)}" if len(points) > 1 else "")
            )
        else:
            summary.append(f"{name}: no values")
        legend.append(
            format_html(
                '<li class="chart__key"><svg width="26" height="10" aria-hidden="true">'
                '<line x1="1" x2="25" y1="5" y2="5" stroke="{}" stroke-width="2.5"{} />'
                "</svg>{}{}</li>",
                colour,
                mark_safe(f' stroke-dasharray="{dash}"') if dash else "",
                name,
                "" if points else " (no values)",
            )
        )
    scale = " (log scale)" if log else ""
    label = f"{title}{scale}, {n} epoch{'s' if n != 1 else ''}: " + "; ".join(summary)
    return chart_figure(
        parts,
        size=(WIDTH, HEIGHT),
        label=label,
        title=title,
        legend="".join(legend),
        note=scale.strip(),
    )


def chart_figure(
    parts: Sequence[str], *, size: tuple[int, int], label: str, title: str, legend: str, note=""
) -> SafeString:
    """The markup every chart shares: an SVG of ``parts`` read out as ``label``, under a
    caption with its title, an optional note (the scale) and the legend's ``<li>`` keys."""
    width, height = size
    svg = (
        f'<svg class="chart__svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        + "".join(parts)
        + "</svg>"
    )
    return format_html(
        '<figure class="chart"><figcaption class="chart__caption"><span class="chart__title">'
        '{}{}</span><ul class="chart__legend">{}</ul></figcaption>{}</figure>',
        title,
        format_html(' <span class="chart__scale">{}</span>', note) if note else "",
        mark_safe(legend),
        mark_safe(svg),
    )


@register.simple_tag
def line_chart(rows, keys: str, title: str = "", percent: bool = False) -> SafeString:
    """``{% line_chart epochs "train_loss valid_loss" title="Loss" %}``: an inline SVG chart."""
    if not rows:
        return format_html('<p class="muted">No per-epoch metrics were recorded.</p>')
    return line_chart_svg(rows, keys.split(), title=title, percent=percent)


@register.filter
def pct(value, digits: int = 1) -> str:
    """A share (0.873) as a percentage ('87.3%'); an em dash when it is missing."""
    number = _number(value)
    if number is None:
        return "—"
    return f"{number * 100:.{int(digits)}f}%"


@register.filter
def num(value, digits: int = 3) -> str:
    """A float to ``digits`` significant figures; an em dash when it is missing."""
    number = _number(value)
    if number is None:
        return "—"
    return f"{number:.{int(digits)}g}"


def shade_level(count: int, largest: int, levels: int = 6) -> int:
    """The shading bucket (0 to ``levels - 1``) of a count: 0 only for zero."""
    if not count or not largest:
        return 0
    return max(1, min(levels - 1, math.ceil((levels - 1) * count / largest)))
