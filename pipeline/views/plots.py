"""Small inline SVG plots for the gallery: no JavaScript library, no CDN, works offline.

`loss_curve` draws one job's loss history (log scale: the loss falls by orders of magnitude;
stage boundaries as faint vertical lines); `scatter` draws one point per job of final style
loss against final content loss, coloured by the parameter that varies, each point a link to
its job's card with its name as the hover text.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Mapping, Sequence

# Colour-blind-safe categorical palette (Okabe & Ito); cycles past eight values.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
SERIES_COLOURS = {"total": "#000000", "content": "#0072b2", "style": "#d55e00", "tv": "#009e73",
                  "temporal": "#cc79a7"}


def _log(v: float) -> float | None:
    return math.log10(v) if v and v > 0 and math.isfinite(v) else None


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def loss_curve(history: Mapping[str, Any], width: int = 220, height: int = 90) -> str:
    """`history`: {"step": [...], "stage": [...], "total": [...], "content": [...], ...}
    (as the sidecar's `loss_history`). Empty string when there is nothing to draw."""
    steps = list(history.get("step") or [])
    series = {k: list(history[k]) for k in SERIES_COLOURS if history.get(k)}
    points = [(k, [(s, _log(v)) for s, v in zip(steps, vals)]) for k, vals in series.items()]
    ys = [y for _, pts in points for _, y in pts if y is not None]
    if len(steps) < 2 or not ys:
        return ""
    pad = 4
    x = _scale(min(steps), max(steps), pad, width - pad)
    y = _scale(min(ys), max(ys), height - pad, pad)
    parts = [f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="loss per evaluation (log scale)">',
             f'<rect width="{width}" height="{height}" fill="#fafafa"/>']
    stages = list(history.get("stage") or [])
    for i in range(1, min(len(stages), len(steps))):
        if stages[i] != stages[i - 1]:
            parts.append(f'<line x1="{x(steps[i]):.1f}" x2="{x(steps[i]):.1f}" y1="0" y2="{height}" '
                         f'stroke="#ccc" stroke-dasharray="2,2"/>')
    for name, pts in points:
        coords = " ".join(f"{x(s):.0f},{y(v):.0f}" for s, v in pts if v is not None)
        if coords:
            parts.append(f'<polyline fill="none" stroke="{SERIES_COLOURS[name]}" stroke-width="1.2" '
                         f'points="{coords}"><title>{name}</title></polyline>')
    legend = " ".join(f'<tspan fill="{SERIES_COLOURS[n]}">{n}</tspan>' for n, _ in points)
    parts.append(f'<text x="{pad}" y="{height - pad}" font-size="9">{legend}</text></svg>')
    return "".join(parts)


def scatter(points: Sequence[Mapping[str, Any]], colour_by: str | None, width: int = 520,
            height: int = 300) -> str:
    """`points`: {"x": content loss, "y": style loss, "label": hover text, "href": "#job-…",
    "group": value of `colour_by`}. Log axes; empty string with fewer than one drawable point."""
    drawable = [p for p in points if _log(p["x"]) is not None and _log(p["y"]) is not None]
    if not drawable:
        return ""
    groups = sorted({str(p.get("group")) for p in drawable}, key=_natural)
    legend = bool(colour_by) and len(groups) > 1
    # The legend gets its own column at the right, as wide as its longest entry needs.
    legend_w = 16 + 6 * max(len(f"{colour_by}={g}") for g in groups) if legend else 0
    left, bottom, pad = 46, 34, 10
    xs, ys = [_log(p["x"]) for p in drawable], [_log(p["y"]) for p in drawable]
    x = _scale(min(xs) - 0.05, max(xs) + 0.05, left, width - pad - legend_w)
    y = _scale(min(ys) - 0.05, max(ys) + 0.05, height - bottom, pad)
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    out = [f'<svg class="scatter" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="final style loss against final content loss, one point per job">',
           f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ddd"/>',
           f'<text x="{(left + width) / 2:.0f}" y="{height - 6}" font-size="11" text-anchor="middle">'
           f'content loss (log)</text>',
           f'<text x="12" y="{(height - bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
           f'transform="rotate(-90 12 {(height - bottom) / 2:.0f})">style loss (log)</text>']
    for lo, hi, axis in ((min(xs), max(xs), "x"), (min(ys), max(ys), "y")):
        for t in (lo, hi):
            label = f"{10 ** t:.3g}"
            if axis == "x":
                out.append(f'<text x="{x(t):.1f}" y="{height - bottom + 12}" font-size="9" '
                           f'text-anchor="middle">{label}</text>')
            else:
                out.append(f'<text x="{left - 3}" y="{y(t):.1f}" font-size="9" text-anchor="end">{label}</text>')
    for p, px, py in zip(drawable, xs, ys):
        g = str(p.get("group"))
        out.append(f'<a href="{escape(p.get("href", "#"))}"><circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="5" '
                   f'fill="{colour[g]}" fill-opacity="0.85" stroke="{"#000" if p.get("front") else "#fff"}" '
                   f'stroke-width="{1.5 if p.get("front") else 1}"><title>{escape(str(p.get("label", "")))}'
                   f'</title></circle></a>')
    if legend:
        for i, g in enumerate(groups[:16]):
            out.append(f'<circle cx="{width - legend_w + 6}" cy="{pad + 6 + 13 * i}" r="4" fill="{colour[g]}"/>'
                       f'<text x="{width - legend_w + 14}" y="{pad + 9 + 13 * i}" font-size="10">'
                       f'{escape(colour_by)}={escape(g)}</text>')
    out.append("</svg>")
    return "".join(out)


def _natural(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text: 10 < 50 < 200."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def downsample(history: Mapping[str, Sequence[float]], limit: int = 300) -> dict[str, list]:
    """Keep at most `limit` points of aligned series (the first, the last, evenly between), so
    a 2,000-evaluation job's sidecar stays small; every stage's last point is kept too."""
    steps = list(history.get("step") or [])
    n = len(steps)
    if n <= limit:
        return {k: list(v) for k, v in history.items()}
    keep = {round(i * (n - 1) / (limit - 1)) for i in range(limit)}
    stages = list(history.get("stage") or [])
    keep |= {i for i in range(n - 1) if stages and stages[i] != stages[i + 1]}
    idx = sorted(keep)
    return {k: [v[i] for i in idx] for k, v in history.items()}
