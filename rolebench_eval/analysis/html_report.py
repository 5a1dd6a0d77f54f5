"""Self-contained HTML reports: one page per run (`<run>/report.html`) and a site page over all runs.

The pages work offline and from `file://`: CSS and the small search script are inline, charts are
inline SVG whose geometry is computed in html_charts.py (templates only draw it), and nothing is fetched.
Everything a model or judge wrote is untrusted text, so the Jinja environment autoescapes all
output and the script only filters elements (it never writes HTML).

Page size stays bounded: at most `max_samples` samples per run are embedded (the first ones in
samples.jsonl, their texts resolved from the calls files), a prompt shared by a batch of samples is
embedded once, long texts are cut at MAX_TEXT_CHARS, and the page says what was left out and how
to see it. Every sample of a run is on the run's sample pages (`pages/<task>-NNN.html`), which
report.html links: see html_pages.py.

This module owns the page data and the pages (run page, site page); the chart geometry is in
html_charts.py, the embedded samples (record views, text cutting) in html_samples.py, the sample
pages in html_pages.py. Nothing here imports pandas (its import alone cost every re-derive 0.2 to 0.5 s
of CPU and ~90 MiB of peak RSS).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from rolebench_eval.running import run_dir as rd
from rolebench_eval.analysis.judge_reliability import summary_lines
from rolebench_eval.analysis.formatting import format_ci, format_metric
from rolebench_eval.analysis.report import HEADER as RUN_METRIC_HEADER
from rolebench_eval.analysis.report import cost_line, metric_rows, row_cost_cells
from rolebench_eval.analysis.html_charts import PALETTE, PERSONAGYM_AXES, Series, bar_chart, distribution_chart, radar_chart
from rolebench_eval.analysis.html_pages import PAGE_TEXT_CHARS, SAMPLES_PER_PAGE, SamplePages, remove_stale_pages, write_sample_pages
from rolebench_eval.analysis.html_samples import read_samples

REPORT_HTML = "report.html"
RUN_PAGE_MAX_SAMPLES = 300
SITE_MAX_SAMPLES_PER_RUN = 50
READY_MARKER = "rbe-report-ready"


# --------------------------------------------------------------------------------------------------
# Page data


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # an unfinished or corrupted run has no page; `rbe run` reports it


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
            tables = [t.get("per_unit") or {} for _, t in entries]
            unit = "persona" if "PersonaScore" in kinds else "unit"
            charts.append({"type": "distribution",
                           "chart": distribution_chart(f"{task_key}: per-{unit} scores", kind, metrics, series, tables)})
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


def render_run_html(run_path: Path, max_samples: int = RUN_PAGE_MAX_SAMPLES, pages: SamplePages | None = None) -> str:
    """The HTML of one run's page; `pages`: the sample pages to link (write_sample_pages)."""
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
        pages=pages,
        generated=_now(),
        ready_marker=READY_MARKER,
    )


def _page_renderer(run_path: Path, results: Mapping[str, Any], per_page: int) -> Any:
    template = _environment().get_template("sample_page.html.j2")
    fixed = {
        "run_label": str(results.get("model", {}).get("label", run_path.name)),
        "run_id": results.get("run_id", run_path.name),
        "smoke": results.get("smoke_warning") if results.get("smoke_judge") else None,
        "report": REPORT_HTML, "per_page": per_page, "max_chars": PAGE_TEXT_CHARS,
        "generated": _now(), "ready_marker": READY_MARKER,
    }

    def render(context: dict[str, Any]) -> str:
        return template.render(title=f"{context['task']} samples, page {context['number']}: run {fixed['run_id']}", **fixed, **context)

    return render


def write_run_html(run_path: Path, max_samples: int = RUN_PAGE_MAX_SAMPLES, *, per_page: int = SAMPLES_PER_PAGE) -> Path:
    """Write `report.html` into a finished run directory, with every sample on the pages it links
    (`pages/<task>-NNN.html`, html_pages.py), and return its path.

    Order matters for a kill at any point: the new pages first (each atomically), then report.html
    linking them, then the removal of pages the new report no longer links.
    """
    target = run_path / REPORT_HTML
    results = _load(run_path / rd.RESULTS)
    if results is None:
        raise FileNotFoundError(f"{run_path / rd.RESULTS} is missing or unreadable")
    pages = write_sample_pages(run_path, _page_renderer(run_path, results, per_page), per_page)
    rd.write_text_atomic(target, render_run_html(run_path, max_samples, pages))
    remove_stale_pages(run_path, pages.files)
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
