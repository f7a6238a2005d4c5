"""A small server-rendered SVG line chart (no JavaScript, no CDN). Plain Python.

Every label goes through html.escape: slot names come from the monitored server.
"""

import datetime as dt
import math
from html import escape

from engine.forecast import human_bytes

THRESHOLD_REACH = 3  # draw a threshold up to 3x the data's maximum; beyond, say it in words
PALETTE = ["#1565c0", "#6a1b9a", "#00838f", "#558b2f", "#ad1457", "#4e342e", "#283593", "#f9a825", "#37474f"]


def _nice_step(span: float, ticks: int = 5) -> float:
    """A 1-2-5 step within a binary unit (kB, MB, GB...), so tick labels read "200 MB"."""
    raw = max(span / ticks, 1.0)
    unit = 1024 ** math.floor(math.log(raw, 1024))
    for factor in (1, 2, 5, 10, 20, 50, 100, 200, 500):
        if raw <= factor * unit:
            return factor * unit
    return 1024 * unit


def line_chart(
    series: list[tuple[str, list[tuple[dt.datetime, float]]]],
    *,
    start: dt.datetime,
    end: dt.datetime,
    thresholds: list[tuple[str, float, str]] = (),
    title: str = "",
    width: int = 760,
    height: int = 260,
    gap_seconds: float | None = None,
) -> str:
    """series: [(name, [(time, bytes), ...])]; thresholds: [(label, bytes, colour)].

    The y-axis fits the data: a threshold is drawn when it is within THRESHOLD_REACH times
    the largest value, and otherwise said in words, so kB of real data is not a flat line
    under a 5 GB threshold. The legend sits under the plot with each series' full name.
    A line breaks where two points are more than gap_seconds apart (no data there).
    """
    legend_rows = len(series)
    height += 16 * legend_rows
    left, right, top, bottom = 70, 20, 24, 28 + 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [value for _, points in series for _, value in points if value is not None]
    data_max = max(values) if values else 0.0
    drawn = [t for t in thresholds if values and t[1] <= data_max * THRESHOLD_REACH]
    far = [t for t in thresholds if t not in drawn]
    thresholds = drawn
    values += [value for _, value, _ in drawn]
    top_value = max(values) if values else 1.0
    top_value = max(top_value * 1.08, 1.0)
    step = _nice_step(top_value)
    top_value = math.ceil(top_value / step) * step
    span = max((end - start).total_seconds(), 1.0)

    def x(at: dt.datetime) -> float:
        return left + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'style="font-family:sans-serif;font-size:11px;background:#fff">',
        f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>',
    ]
    tick = 0.0
    while tick <= top_value + step / 2:
        ty = y(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#555">{human_bytes(tick)}</text>'
        )
        tick += step
    hours = span / 3600
    label_every = dt.timedelta(hours=4) if hours <= 36 else dt.timedelta(days=1)
    fmt = "%H:%M" if hours <= 36 else "%m-%d"
    first = start.replace(minute=0, second=0, microsecond=0)
    if hours > 36:
        first = first.replace(hour=0)
    mark = first + label_every
    while mark < end:
        mx = x(mark)
        out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f3f3f3"/>')
        out.append(
            f'<text x="{mx:.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#555">{mark:{fmt}}</text>'
        )
        mark += label_every
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>')
    for label, value, colour in thresholds:
        ty = y(value)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{colour}" '
            'stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{left + plot_w - 4}" y="{ty - 4:.1f}" text-anchor="end" fill="{colour}">'
            f"{escape(label)} {human_bytes(value)}</text>"
        )
    if far and values:
        words = " and ".join(f"{label} {human_bytes(value)}" for label, value, _ in far)
        out.append(
            f'<text x="{left + 6}" y="{top + 14}" fill="#555">{escape(words)}: far above the data, not drawn</text>'
        )
    legend_y = top + plot_h + 24
    for index, (name, points) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        runs, run, previous = [], [], None
        for at, value in points:
            if value is None:
                continue
            if previous is not None and gap_seconds and (at - previous).total_seconds() > gap_seconds:
                runs.append(run)
                run = []
            run.append(f"{x(at):.1f},{y(value):.1f}")
            previous = at
        runs.append(run)
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{" ".join(run)}"/>'
                )
        latest = next((value for _, value in reversed(points) if value is not None), None)
        out.append(f'<rect x="{left}" y="{legend_y}" width="10" height="10" fill="{colour}"/>')
        out.append(
            f'<text x="{left + 14}" y="{legend_y + 9}">{escape(name)} '
            f'<tspan fill="#555">{human_bytes(latest)}</tspan></text>'
        )
        legend_y += 16
    if not any(points for _, points in series):
        out.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="#888">'
            "No measurements in this period yet.</text>"
        )
    out.append("</svg>")
    return "".join(out)
