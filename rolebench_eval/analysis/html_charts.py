"""Chart geometry of the HTML reports (html_report.py): radar, bar and distribution charts.

The SVG geometry is computed here and templates/_charts.html.j2 only draws it; the series colours
(PALETTE) and the PersonaGym axes are defined here too.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rolebench_eval.analysis.formatting import format_ci, format_metric

# Above this many units a distribution is drawn as a box only: thousands of dots (RoleBench items)
# would make the page heavy and unreadable.
MAX_DOTS = 250
PERSONAGYM_AXES = ("EA", "TC", "LH", "PC", "AJ")
# Colour-blind-safe (Okabe-Ito) series colours.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


# --------------------------------------------------------------------------------------------------
# Chart geometry (drawn by templates/_charts.html.j2)


@dataclass(frozen=True)
class Series:
    label: str
    color: str


@dataclass(frozen=True)
class RadarChart:
    size: int
    center: float
    axes: list[dict[str, Any]]  # label, x1, y1 (end of the axis), lx, ly (label position)
    rings: list[dict[str, Any]]  # value, points
    polygons: list[dict[str, Any]]  # series, points, dots [{x, y, title}]


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    title: str
    y_ticks: list[dict[str, Any]]  # y, label
    groups: list[dict[str, Any]]  # label, x (centre), bars [{x, y, w, h, color, title, err: {x, y1, y2} | None}]
    plot: dict[str, float]  # left, right, top, bottom
    series: list[Series]


@dataclass(frozen=True)
class Distribution:
    width: int
    height: int
    title: str
    y_ticks: list[dict[str, Any]]
    plot: dict[str, float]
    groups: list[dict[str, Any]]  # label, x, boxes [{color, x, w, q1, q3, med, lo, hi, mean, dots [{cx, cy, title}], n}]
    series: list[Series]


def _scale(kind: str, highs: Sequence[float]) -> tuple[float, float, list[float], str]:
    """(low, high, ticks, number format) of a y axis for a metric kind."""
    if kind == "likert":
        return 1.0, 5.0, [1, 2, 3, 4, 5], "{:.0f}"
    if kind == "verdict":
        return 0.0, 100.0, [0, 25, 50, 75, 100], "{:.0f}"  # drawn in percent, as the tables print it
    top = max([1.0, *[h for h in highs if h is not None and math.isfinite(h)]])
    top = math.ceil(top * 4) / 4
    return 0.0, top, [top * i / 4 for i in range(5)], "{:.2f}"


def radar_chart(series: Sequence[Series], values: Sequence[Mapping[str, float | None]], axes: Sequence[str] = PERSONAGYM_AXES,
                size: int = 320) -> RadarChart:
    """Radar of likert means (1..5) on `axes`; a missing value sits at the centre and says so."""
    center, radius = size / 2, size / 2 - 48

    def point(index: int, value: float) -> tuple[float, float]:
        angle = -math.pi / 2 + 2 * math.pi * index / len(axes)
        r = radius * (min(max(value, 1.0), 5.0) - 1.0) / 4.0
        return center + r * math.cos(angle), center + r * math.sin(angle)

    axis_rows = []
    for index, name in enumerate(axes):
        x1, y1 = point(index, 5.0)
        angle = -math.pi / 2 + 2 * math.pi * index / len(axes)
        axis_rows.append({"label": name, "x1": x1, "y1": y1,
                          "lx": center + (radius + 22) * math.cos(angle), "ly": center + (radius + 22) * math.sin(angle) + 4})
    rings = [{"value": level, "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, level) for i in range(len(axes))))}
             for level in (2, 3, 4, 5)]
    polygons = []
    for item, row in zip(series, values):
        dots, coords = [], []
        for index, name in enumerate(axes):
            value = row.get(name)
            x, y = point(index, value if value is not None else 1.0)
            coords.append(f"{x:.1f},{y:.1f}")
            dots.append({"x": x, "y": y, "title": f"{item.label} {name}: {value:.2f}" if value is not None else f"{item.label} {name}: not scored"})
        polygons.append({"series": item, "points": " ".join(coords), "dots": dots})
    return RadarChart(size=size, center=center, axes=axis_rows, rings=rings, polygons=polygons)


def _axis(low: float, high: float, ticks: Sequence[float], fmt: str, top: float, bottom: float) -> tuple[Any, list[dict[str, Any]]]:
    def y_of(value: float) -> float:
        clamped = min(max(value, low), high)
        return bottom - (clamped - low) / (high - low) * (bottom - top)

    return y_of, [{"y": y_of(t), "label": fmt.format(t)} for t in ticks]


def bar_chart(title: str, kind: str, metrics: Sequence[tuple[str, str]], series: Sequence[Series],
              summaries: Sequence[Mapping[str, Mapping[str, Any] | None]]) -> BarChart:
    """Bars of means with 95% CI error bars: one group per metric (key, label), one bar per series."""
    highs = [s[k]["ci95"][1] for s in summaries for k, _ in metrics if s.get(k) and s[k].get("ci95")]
    highs += [s[k]["mean"] for s in summaries for k, _ in metrics if s.get(k) and s[k].get("mean") is not None]
    low, high, ticks, fmt = _scale(kind, highs)
    slot = max(28 * len(series) + 24, 70)
    plot = {"left": 44.0, "top": 28.0, "bottom": 210.0, "right": 44.0 + slot * len(metrics)}
    y_of, y_ticks = _axis(low, high, ticks, fmt, plot["top"], plot["bottom"])
    bar_w = (slot - 24) / max(len(series), 1)
    groups = []
    for g, (key, label) in enumerate(metrics):
        x0 = plot["left"] + g * slot + 12
        bars = []
        for s, (item, summary_map) in enumerate(zip(series, summaries)):
            summary = summary_map.get(key) or {}
            mean = summary.get("mean")
            if mean is None:
                continue
            factor = 100.0 if kind == "verdict" else 1.0  # win rates: fractions in results.json, percent on screen
            y = y_of(factor * mean)
            ci = [factor * bound for bound in summary["ci95"]] if summary.get("ci95") else None
            x = x0 + s * bar_w
            text = f"{item.label} {label}: {format_metric(summary, kind)}, 95% CI {format_ci(summary, kind)}, n={summary.get('n', 0)}"
            bars.append({
                "x": x, "y": y, "w": bar_w - 2, "h": max(plot["bottom"] - y, 0.5), "color": item.color, "title": text,
                "err": {"x": x + (bar_w - 2) / 2, "y1": y_of(ci[0]), "y2": y_of(ci[1])} if ci else None,
            })
        groups.append({"label": label, "x": plot["left"] + g * slot + slot / 2, "bars": bars})
    return BarChart(width=int(plot["right"] + 16), height=250, title=title, y_ticks=y_ticks, groups=groups, plot=plot,
                    series=list(series))


def _jitter(unit: str, width: float) -> float:
    # Deterministic jitter: the same unit sits at the same place on every rebuild of the page.
    digest = hashlib.sha1(unit.encode("utf-8")).digest()
    return (digest[0] / 255 - 0.5) * width


def _number(value: Any) -> float | None:
    """A per-unit value as a number, None when it is not one (unscored: None or NaN; or text that
    is not a number), as `pd.to_numeric(errors="coerce")` did before: the page no longer imports
    pandas (~0.2 s of CPU and ~40 MiB in every re-derive)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return None if math.isnan(number) else number


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values by linear interpolation between the two nearest ranks
    (numpy's and pandas' default method)."""
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def unit_values(per_unit: Mapping[str, Mapping[str, Any]], key: str) -> list[tuple[str, float]]:
    """(unit, value) of every unit with a numeric value for metric `key`, in the units' order."""
    found = []
    for unit, row in per_unit.items():
        value = _number(row.get(key)) if isinstance(row, Mapping) else None
        if value is not None:
            found.append((str(unit), value))
    return found


def distribution_chart(title: str, kind: str, metrics: Sequence[tuple[str, str]], series: Sequence[Series],
                       per_unit: Sequence[Mapping[str, Mapping[str, Any]]]) -> Distribution:
    """Per-unit score distributions: a box (quartiles, whiskers at min/max), the mean, and the units
    as dots when there are few enough. `per_unit`: one {unit: {metric: value}} per series
    (results.json's `per_unit`); a value that is not a number (unscored) is left out."""
    columns = [{key: unit_values(table, key) for key, _ in metrics} for table in per_unit]
    highs = [max(v for _, v in found) for table in columns for found in table.values() if found]
    low, high, ticks, fmt = _scale(kind, highs)
    slot = max(34 * len(series) + 20, 70)
    plot = {"left": 44.0, "top": 28.0, "bottom": 230.0, "right": 44.0 + slot * len(metrics)}
    y_of, y_ticks = _axis(low, high, ticks, fmt, plot["top"], plot["bottom"])
    box_w = (slot - 20) / max(len(series), 1)
    groups = []
    for g, (key, label) in enumerate(metrics):
        x0 = plot["left"] + g * slot + 10
        boxes = []
        for s, (item, table) in enumerate(zip(series, columns)):
            found = table[key]
            if not found:
                continue
            ordered = sorted(v for _, v in found)
            q1, med, q3 = (_quantile(ordered, q) for q in (0.25, 0.5, 0.75))
            mean = statistics.fmean(ordered)
            x = x0 + s * box_w
            dots = []
            if len(found) <= MAX_DOTS:
                dots = [{"cx": x + box_w / 2 + _jitter(unit, box_w * 0.6), "cy": y_of(v),
                         "title": f"{item.label} {label} {v:.3g}: {unit}"} for unit, v in found]
            boxes.append({"color": item.color, "x": x + 3, "w": box_w - 6, "q1": y_of(q1), "q3": y_of(q3), "med": y_of(med),
                          "lo": y_of(ordered[0]), "hi": y_of(ordered[-1]), "mean": y_of(mean),
                          "cx": x + box_w / 2, "dots": dots, "n": len(found),
                          "title": f"{item.label} {label}: n={len(found)}, median {med:.3g}, IQR {q1:.3g}-{q3:.3g}, mean {mean:.3g}"})
        groups.append({"label": label, "x": plot["left"] + g * slot + slot / 2, "boxes": boxes})
    return Distribution(width=int(plot["right"] + 16), height=270, title=title, y_ticks=y_ticks, plot=plot,
                        groups=groups, series=list(series))
