"""Line charts as SVG text: what the experiment log's plots need, and nothing more.

A report plot is a few short series over training steps, some horizontal reference lines (0, the
forgetting thresholds) and a legend. Writing that SVG directly takes milliseconds; importing and
driving matplotlib took most of `tunebook report`'s second (bench: cli_report_cold_s). The output is
deterministic text, so git shows what changed in a plot, and every label is XML-escaped: a task
name from a record is drawn, never interpreted.

    svg = line_chart(title, ylabel, lines=[Line(label, xs, ys, markers=True)], hlines=[HLine(0.0)])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape as _xml_escape

from tunebook.reports.markdown import visible


def escape(text: str) -> str:
    """Label text for SVG: XML-escaped, and the characters XML 1.0 forbids (NUL, ESC, lone surrogates,
    U+FFFE, ...) or that reorder text (bidi controls) shown as \\uXXXX, so the file stays valid XML."""
    return _xml_escape(visible(text))

WIDTH, HEIGHT = 700, 360  # the plot area; the legend adds rows below
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 44
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
DASHES = {"-": None, "--": "6,4", ":": "2,3"}


@dataclass(frozen=True)
class Line:
    label: str
    x: list[float]
    y: list[float]
    markers: bool = True


@dataclass(frozen=True)
class HLine:
    y: float
    label: str | None = None
    style: str = "-"  # "-", "--" or ":"
    color: str = "#000000"
    width: float = 0.8


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering lo..hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(v: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5 else 0)
    text = f"{v:.{decimals}f}"
    return "0" if float(text) == 0 else text.replace("-", "\u2212")


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis, as log10 values: whole decades when the data span one or more, else the
    nice ticks of the log range."""
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo >= 1:
        return [float(k) for k in range(math.floor(lo), math.ceil(hi) + 1)]
    return nice_ticks(lo, hi)


def _fit(label: str, most: int = (WIDTH - LEFT - RIGHT - 34) // 7) -> str:
    """A legend label that fits on one row; the whole label stays in the line's tooltip."""
    return label if len(label) <= most else label[: most - 1] + "…"


def _f(v: float) -> str:
    return f"{v:.1f}"


def line_chart(title: str, ylabel: str, lines: list[Line], hlines: list[HLine] = (), xlabel: str = "step",
               log_y: bool = False) -> str:
    """`log_y`: a log10 y axis (values <= 0 are not drawn), for quantities like perplexity that span decades."""
    if log_y:
        lines = [Line(ln.label, ln.x, [math.log10(v) if v > 0 else math.nan for v in ln.y], ln.markers) for ln in lines]
        hlines = [HLine(math.log10(h.y), h.label, h.style, h.color, h.width) for h in hlines if h.y > 0]
    xs = [v for ln in lines for v in ln.x]
    ys = [v for ln in lines for v in ln.y if math.isfinite(v)] + [h.y for h in hlines]
    xt = nice_ticks(min(xs, default=0), max(xs, default=1))
    yt = (log_ticks if log_y else nice_ticks)(min(ys, default=0), max(ys, default=1))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y0) / ((y1 - y0) or 1) * ph

    entries = [(_fit(ln.label), PALETTE[i % len(PALETTE)], None, ln.markers) for i, ln in enumerate(lines)]
    entries += [(_fit(h.label), h.color, DASHES.get(h.style), False) for h in hlines if h.label]
    legend, row, x = [], 0, LEFT
    for label, color, dash, markers in entries:  # rows of entries below the x-axis label
        w = 34 + 7 * len(label)
        if x + w > WIDTH - RIGHT and x > LEFT:
            row, x = row + 1, LEFT
        legend.append((x, HEIGHT + 8 + 18 * row, label, color, dash, markers))
        x += w + 12
    height = HEIGHT + (18 * (row + 1) + 10 if entries else 0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT} font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           f'<text x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for t in xt:
        out.append(f'<line x1="{_f(px(t))}" y1="{TOP}" x2="{_f(px(t))}" y2="{TOP + ph}" stroke="#dddddd"/>')
        out.append(f'<text x="{_f(px(t))}" y="{TOP + ph + 16}" text-anchor="middle">{tick_label(t, xt)}</text>')
    for t in yt:
        out.append(f'<line x1="{LEFT}" y1="{_f(py(t))}" x2="{LEFT + pw}" y2="{_f(py(t))}" stroke="#dddddd"/>')
        label = f"{10 ** t:.3g}" if log_y else tick_label(t, yt)
        out.append(f'<text x="{LEFT - 6}" y="{_f(py(t) + 4)}" text-anchor="end">{label}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333333"/>')
    out.append(f'<text x="{LEFT + pw / 2:.1f}" y="{TOP + ph + 34}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(16 {TOP + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    for h in hlines:
        dash = DASHES.get(h.style)
        out.append(f'<line x1="{LEFT}" y1="{_f(py(h.y))}" x2="{LEFT + pw}" y2="{_f(py(h.y))}" stroke="{h.color}" '
                   f'stroke-width="{h.width}"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
    for (_, color, _, markers), ln in zip(entries, lines):
        pts = [(px(a), py(b)) for a, b in zip(ln.x, ln.y) if math.isfinite(b)]
        out.append(f"<g><title>{escape(ln.label)}</title>")
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(f"{_f(a)},{_f(b)}" for a, b in pts)}"/>')
        if markers:
            out += [f'<circle cx="{_f(a)}" cy="{_f(b)}" r="3" fill="{color}"/>' for a, b in pts]
        out.append("</g>")
    for x, y, label, color, dash, markers in legend:
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" stroke="{color}" stroke-width="1.6"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        if markers:
            out.append(f'<circle cx="{x + 12}" cy="{y}" r="3" fill="{color}"/>')
        out.append(f'<text x="{x + 30}" y="{y + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
