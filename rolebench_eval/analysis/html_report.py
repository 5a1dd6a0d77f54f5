"""Self-contained HTML reports: one page per run (`<run>/report.html`) and a site page over all runs.

The pages work offline and from `file://`: CSS and the small search script are inline, charts are
inline SVG whose geometry is computed here (templates only draw it), and nothing is fetched.
Everything a model or judge wrote is untrusted text, so the Jinja environment autoescapes all
output and the script only filters elements (it never writes HTML).

Page size stays bounded: at most `max_samples` samples per run are embedded (the first ones in
samples.jsonl, their texts resolved from the calls files), a prompt shared by a batch of samples is
embedded once, long texts are cut at MAX_TEXT_CHARS, and the page says what was left out and how
to see it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running import run_dir as rd
from rolebench_eval.analysis.run_samples import iter_samples
from rolebench_eval.analysis.judge_reliability import summary_lines
from rolebench_eval.analysis.formatting import format_ci, format_metric
from rolebench_eval.analysis.report import HEADER as RUN_METRIC_HEADER
from rolebench_eval.analysis.report import cost_line, metric_rows, row_cost_cells

REPORT_HTML = "report.html"
RUN_PAGE_MAX_SAMPLES = 300
SITE_MAX_SAMPLES_PER_RUN = 50
MAX_TEXT_CHARS = 20_000
# Above this many units a distribution is drawn as a box only: thousands of dots (RoleBench items)
# would make the page heavy and unreadable.
MAX_DOTS = 250
PERSONAGYM_AXES = ("EA", "TC", "LH", "PC", "AJ")
# Colour-blind-safe (Okabe-Ito) series colours.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
READY_MARKER = "rbe-report-ready"


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


def distribution_chart(title: str, kind: str, metrics: Sequence[tuple[str, str]], series: Sequence[Series],
                       per_unit: Sequence[pd.DataFrame]) -> Distribution:
    """Per-unit score distributions: a box (quartiles, whiskers at min/max), the mean, and the units
    as dots when there are few enough."""
    numeric = [frame.apply(pd.to_numeric, errors="coerce") for frame in per_unit]
    highs = [float(frame[k].max()) for frame in numeric for k, _ in metrics if k in frame and frame[k].notna().any()]
    low, high, ticks, fmt = _scale(kind, highs)
    slot = max(34 * len(series) + 20, 70)
    plot = {"left": 44.0, "top": 28.0, "bottom": 230.0, "right": 44.0 + slot * len(metrics)}
    y_of, y_ticks = _axis(low, high, ticks, fmt, plot["top"], plot["bottom"])
    box_w = (slot - 20) / max(len(series), 1)
    groups = []
    for g, (key, label) in enumerate(metrics):
        x0 = plot["left"] + g * slot + 10
        boxes = []
        for s, (item, frame) in enumerate(zip(series, numeric)):
            if key not in frame:
                continue
            values = frame[key].dropna()
            if values.empty:
                continue
            q1, med, q3 = (float(values.quantile(q)) for q in (0.25, 0.5, 0.75))
            x = x0 + s * box_w
            dots = []
            if values.size <= MAX_DOTS:
                dots = [{"cx": x + box_w / 2 + _jitter(str(unit), box_w * 0.6), "cy": y_of(float(v)),
                         "title": f"{item.label} {label} {v:.3g}: {unit}"} for unit, v in values.items()]
            boxes.append({"color": item.color, "x": x + 3, "w": box_w - 6, "q1": y_of(q1), "q3": y_of(q3), "med": y_of(med),
                          "lo": y_of(float(values.min())), "hi": y_of(float(values.max())), "mean": y_of(float(values.mean())),
                          "cx": x + box_w / 2, "dots": dots, "n": int(values.size),
                          "title": f"{item.label} {label}: n={values.size}, median {med:.3g}, IQR {q1:.3g}-{q3:.3g}, mean {values.mean():.3g}"})
        groups.append({"label": label, "x": plot["left"] + g * slot + slot / 2, "boxes": boxes})
    return Distribution(width=int(plot["right"] + 16), height=270, title=title, y_ticks=y_ticks, plot=plot,
                        groups=groups, series=list(series))


# --------------------------------------------------------------------------------------------------
# Page data


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # an unfinished or corrupted run has no page; `rbe run` reports it


def _clip(text: Any) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, indent=1, default=str)
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"\n[... {len(text) - MAX_TEXT_CHARS} more characters: see the run's records (iter_samples)]"


def _messages(value: Any) -> list[dict[str, str]]:
    """Chat messages [{role, content}] from a record field (a message list, a string, or absent)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "text", "content": _clip(value)}]
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        return [{"role": str(m.get("role", "?")), "content": _clip(m.get("content", ""))} for m in value]
    return [{"role": "data", "content": _clip(value)}]


# Fields shown in their own sections; the rest of a record is listed as metadata.
_SECTION_FIELDS = {"prompt", "answer", "judge_prompt", "judgments", "score_examples", "schema", "turns"}


def _turns(value: Any) -> list[dict[str, Any]]:
    """A dialogue's transcript (record field `turns`: [{speaker, role, text, round?, note?}]) as
    chat bubbles; `side` is the bubble's CSS class: the user's turns right, the judge's marked."""
    if not isinstance(value, list):
        return []
    turns = []
    for turn in value:
        if not isinstance(turn, Mapping):
            continue
        role = str(turn.get("role", ""))
        note = str(turn.get("note") or "")
        side = "user" if role == "user" else "judge" if role == "judge" else "aside" if note == "not chosen" else "npc"
        turns.append({"speaker": str(turn.get("speaker", role or "?")), "text": _clip(turn.get("text", "")),
                      "round": turn.get("round"), "note": note, "side": side})
    return turns


def _sample_view(record: Mapping[str, Any], run_label: str, index: int) -> dict[str, Any]:
    judgments = record.get("judgments") or []
    if isinstance(judgments, Mapping):
        judgments = [judgments]
    replies = [
        {
            "judge": str(j.get("judge", "?")),
            "score": j.get("score", j.get("verdict", j.get("outcome"))),
            "reason": j.get("unscored_reason") or j.get("reason") or "",
            "reply": _clip(j.get("reply", j.get("raw", ""))),
            "prompt": _messages(j.get("prompt")),
        }
        for j in judgments
        if isinstance(j, Mapping)
    ]
    score = record.get("score", record.get("verdict"))
    meta = {key: _clip(value) for key, value in record.items() if key not in _SECTION_FIELDS and value not in (None, "", [], {})}
    examples = record.get("score_examples")
    return {
        "id": f"s{index}",
        "run": run_label,
        "task": str(record.get("task", "")),
        "sample_id": str(record.get("sample_id", index)),
        "unit": str(record.get("unit", "")),
        "metric": str(record.get("metric", "")),
        "score": "unscored" if score is None else (f"{score:.3g}" if isinstance(score, float) else str(score)),
        "prompt": _messages(record.get("prompt")),
        "answer": _clip(record.get("answer") or ""),
        "judge_prompt": _messages(record.get("judge_prompt")),
        "examples_prompt": _messages(examples.get("prompt")) if isinstance(examples, Mapping) else [],
        "judge_prompt_same_as": None,  # {id, sample_id} of the sample showing the same text
        "examples_prompt_same_as": None,
        "judgments": replies,
        "turns": _turns(record.get("turns")),
        "meta": meta,
    }


@dataclass
class SampleSet:
    run_label: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def read_samples(run_path: Path, run_label: str, limit: int) -> SampleSet:
    """The first `limit` records (texts resolved from the calls files by `iter_samples`) as view
    dicts, and how many there are in all.

    A text shared by a batch of samples (PersonaGym's judge prompt and score-examples prompt) is
    embedded once: later samples of the batch point to the first one, so the page grows with the
    texts, not with the batch size.
    """
    result = SampleSet(run_label)
    path = run_path / rd.SAMPLES
    if not path.is_file():
        return result
    seen: dict[tuple[str, str], dict[str, str]] = {}
    try:
        for record in itertools.islice(iter_samples(run_path), limit):
            view = _sample_view(record, run_label, len(result.samples))
            for name in ("judge_prompt", "examples_prompt"):
                if view[name]:
                    digest = hashlib.sha256(json.dumps(view[name]).encode("utf-8")).hexdigest()
                    first = seen.setdefault((name, digest), {"id": view["id"], "sample_id": view["sample_id"]})
                    if first["id"] != view["id"]:
                        view[name], view[f"{name}_same_as"] = [], first
            result.samples.append(view)
    except (ValueError, RunDirectoryError) as error:
        # A damaged samples or calls file: the page says so where the samples would be.
        result.samples.append(_sample_view({"sample_id": "unreadable", "answer": f"({error})"}, run_label, len(result.samples)))
    with path.open("rb") as handle:
        result.total = sum(1 for line in handle if line.strip())
    return result


def _task_kinds(task: Mapping[str, Any]) -> dict[str, str]:
    return dict(task.get("metric_kinds") or {k: "continuous" for k in task.get("metrics", {})})


def _charts(task_key: str, task: Mapping[str, Any], entries: Sequence[tuple[Series, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Charts of one comparable group of task results (one entry per run); a chart with nothing
    scored to draw is replaced by a line saying so (an empty axis looks like a bug)."""
    kinds = _task_kinds(task)
    names = dict(task.get("metric_names") or {})
    series = [s for s, _ in entries]
    charts: list[dict[str, Any]] = []
    summaries = [t.get("metrics", {}) for _, t in entries]
    scored = {key for summary in summaries for key, value in summary.items() if value and value.get("mean") is not None}
    if all(axis in kinds for axis in PERSONAGYM_AXES) and scored & set(PERSONAGYM_AXES):
        values = [{axis: (t.get("metrics", {}).get(axis) or {}).get("mean") for axis in PERSONAGYM_AXES} for _, t in entries]
        charts.append({"type": "radar", "title": f"{task_key}: the five PersonaGym metrics (means, 1-5)",
                       "chart": radar_chart(series, values)})
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for key, kind in kinds.items():
        if key in scored:
            by_kind.setdefault(kind, []).append((key, key if key in PERSONAGYM_AXES else names.get(key, key)))
    for kind, metrics in by_kind.items():
        what = {"likert": "judge score, 1-5", "continuous": "mean", "verdict": "tie-adjusted win rate, percent"}.get(kind, kind)
        charts.append({"type": "bars", "chart": bar_chart(f"{task_key}: {what}, with 95% bootstrap CI", kind, metrics, series, summaries)})
        if kind != "verdict":
            frames = [pd.DataFrame.from_dict(t.get("per_unit") or {}, orient="index") for _, t in entries]
            unit = "persona" if "PersonaScore" in kinds else "unit"
            charts.append({"type": "distribution",
                           "chart": distribution_chart(f"{task_key}: per-{unit} scores", kind, metrics, series, frames)})
    if not charts:
        charts.append({"type": "note", "text": f"{task_key}: no metric has a scored unit yet, so there is nothing to chart."})
    return charts


def _benchmark(task_name: str) -> str:
    if task_name.startswith("personagym"):
        return "PersonaGym"
    if task_name.startswith("rolebench"):
        return "RoleBench"
    return "Other tasks"


def _metric_cells(task: Mapping[str, Any]) -> list[dict[str, str]]:
    kinds = _task_kinds(task)
    return [{"value": format_metric(task.get("metrics", {}).get(k), kind), "ci": format_ci(task.get("metrics", {}).get(k), kind)}
            for k, kind in kinds.items()]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rolebench_eval", "templates"),
        # Model answers and judge replies are untrusted: escape everything, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["f1"] = lambda value: f"{value:.1f}"
    return env


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------------------------------
# Pages


def render_run_html(run_path: Path, max_samples: int = RUN_PAGE_MAX_SAMPLES) -> str:
    """The HTML of one run's page."""
    results = _load(run_path / rd.RESULTS)
    if results is None:
        raise FileNotFoundError(f"{run_path / rd.RESULTS} is missing or unreadable")
    label = str(results.get("model", {}).get("label", run_path.name))
    series = Series(label, PALETTE[0])
    tasks = []
    for name, task in results.get("tasks", {}).items():
        tasks.append({
            "name": name,
            "task": task,
            "header": RUN_METRIC_HEADER,
            "rows": metric_rows(dict(task)),
            "charts": _charts(name, task, [(series, task)]),
            # dict keys named like dict methods (items) are passed separately: Jinja's attribute
            # lookup would find the method first.
            "item_counts": task.get("items"),
            "unscored_reasons": list(((task.get("items") or {}).get("unscored_reasons") or {}).items()),
            "judgments": (task.get("items") or {}).get("judgments"),
            "empty_answers": (task.get("items") or {}).get("empty_answers"),
            "judgment_reasons": list((((task.get("items") or {}).get("judgments") or {}).get("unscored_reasons") or {}).items()),
            "warnings": list(task.get("warnings") or []),
            "reliability": summary_lines(task.get("reliability")),  # analysis/judge_reliability.py
        })
    calls = results.get("calls") or {}
    samples = read_samples(run_path, label, max_samples)
    return _environment().get_template("run.html.j2").render(
        title=f"rolebench-eval run {results.get('run_id', run_path.name)}",
        results=results,
        tasks=tasks,
        # The calls section: a faulty endpoint shows here even when every call recovered.
        calls_total=calls.get("total"),
        # Tokens and estimated cost (None for a results file written before they were counted).
        calls_cost=cost_line(calls) if calls.get("total") else None,
        calls_rows=[{**row, "retry_reasons": list((row.get("attempt_errors") or {}).items()),
                     "fail_reasons": list((row.get("failure_reasons") or {}).items()),
                     "cost_cells": row_cost_cells(row)}
                    for row in calls.get("by_role") or []],
        incomplete=list(results.get("incomplete") or []),
        sample_sets=[samples],
        max_samples=max_samples,
        generated=_now(),
        ready_marker=READY_MARKER,
    )


def write_run_html(run_path: Path, max_samples: int = RUN_PAGE_MAX_SAMPLES) -> Path:
    """Write `report.html` into a finished run directory and return its path."""
    target = run_path / REPORT_HTML
    rd.write_text_atomic(target, render_run_html(run_path, max_samples))
    return target


def _groups(runs: Sequence[tuple[Path, dict[str, Any]]], output_dir: Path) -> list[dict[str, Any]]:
    """Leaderboard groups: runs are only put side by side when they measured the same thing (the
    leaderboard's rule, `leaderboard.group_key`: every blocking measurement setting matches)."""
    from rolebench_eval.analysis.leaderboard import group_key as comparable_group

    grouped: dict[tuple[Any, ...], list[tuple[Path, dict[str, Any], dict[str, Any]]]] = {}
    for path, results in runs:
        manifest = _load(path / rd.MANIFEST) or {}
        for name, task in results.get("tasks", {}).items():
            key, _, _ = comparable_group(name, task, results, manifest)
            grouped.setdefault(key, []).append((path, results, task))
    groups = []
    for (name, _, smoke), members in sorted(
        grouped.items(), key=lambda kv: (_benchmark(kv[0][0]) != "PersonaGym", kv[0][0], str(kv[1][0][2].get("protocol")), kv[0][1])
    ):
        protocol = members[0][2].get("protocol") or "-"
        judges = tuple(members[0][2].get("judges") or ())
        policy = members[0][2].get("unscored_policy") or "-"
        last = list(_task_kinds(members[0][2]))[-1:] or [""]
        members.sort(key=lambda m: -((m[2].get("metrics", {}).get(last[0]) or {}).get("mean") or 0.0))
        entries, rows = [], []
        for index, (path, results, task) in enumerate(members):
            label = str(results.get("model", {}).get("label", path.name))
            entries.append((Series(label, PALETTE[index % len(PALETTE)]), task))
            page = path / REPORT_HTML
            rows.append({
                "model": label,
                "color": PALETTE[index % len(PALETTE)],
                "template": task.get("roleplay_template") or "-",
                "cells": _metric_cells(task),
                "units": len(task.get("per_unit") or {}),
                "unscored": (task.get("items") or {}).get("n_unscored", "-"),
                "run_id": results.get("run_id", path.name),
                "link": os.path.relpath(page, output_dir) if page.is_file() else None,
            })
        first = members[0][2]
        kinds = _task_kinds(first)
        names = dict(first.get("metric_names") or {})
        groups.append({
            "benchmark": _benchmark(name), "task": name, "protocol": protocol, "judges": judges, "policy": policy,
            "smoke": smoke, "columns": [names.get(k, k) if k not in PERSONAGYM_AXES else k for k in kinds],
            "rows": rows, "charts": _charts(name, first, entries),
        })
    return groups


def render_site_html(results_root: Path, output: Path, max_samples_per_run: int = SITE_MAX_SAMPLES_PER_RUN) -> str:
    """The HTML of the page over every finished run under `results_root/runs`."""
    runs = [(path, results) for path in rd.find_runs(results_root) if (results := _load(path / rd.RESULTS)) is not None]
    output_dir = output.resolve().parent
    sample_sets = []
    for path, results in runs:
        label = f"{results.get('model', {}).get('label', '?')} ({results.get('run_id', path.name)})"
        sample_sets.append(read_samples(path, label, max_samples_per_run))
    return _environment().get_template("site.html.j2").render(
        title="rolebench-eval results",
        groups=_groups([(p.resolve(), r) for p, r in runs], output_dir),
        n_runs=len(runs),
        smoke_runs=sum(1 for _, r in runs if r.get("smoke_judge")),
        results_root=str(results_root),
        sample_sets=sample_sets,
        max_samples=max_samples_per_run,
        generated=_now(),
        ready_marker=READY_MARKER,
    )


def write_site_html(results_root: Path, output: Path, max_samples_per_run: int = SITE_MAX_SAMPLES_PER_RUN) -> Path:
    """Write the site page to `output` and return its path."""
    rd.write_text_atomic(output, render_site_html(results_root, output, max_samples_per_run))
    return output
