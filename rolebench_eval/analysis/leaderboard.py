"""leaderboard.md, regenerated from every run under results/runs/.

Runs are grouped by task and by every measurement setting of their manifests (protocol, judges,
examples model, unscored policy, data hashes, scoring options: `comparability`); numbers from
different groups are never put in one table, because they are not comparable. Settings that only
sample (seed, --limit) do not split a group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval import naming
from rolebench_eval.analysis import comparability
from rolebench_eval.errors import UsageError, did_you_mean
from rolebench_eval.running import run_dir as rd
from rolebench_eval.embedded import SMOKE_JUDGE_WARNING
from rolebench_eval.analysis.formatting import format_metric, markdown_table

LEADERBOARD = "leaderboard.md"


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a corrupted run is reported by `rbe run` on it, not here


def load_runs(results_root: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(results.json, manifest.json) of every finished run; {} for a missing or unreadable manifest."""
    loaded = []
    for run in rd.find_runs(results_root):
        results = _read(run / rd.RESULTS) if (run / rd.RESULTS).is_file() else None
        if not isinstance(results, dict):
            continue
        manifest = _read(run / rd.MANIFEST) if (run / rd.MANIFEST).is_file() else None
        loaded.append((results, manifest if isinstance(manifest, dict) else {}))
    return loaded


def load_results(results_root: Path) -> list[dict[str, Any]]:
    return [results for results, _ in load_runs(results_root)]


def group_key(name: str, task: dict[str, Any], results: dict[str, Any], manifest: dict[str, Any]) -> tuple[Any, ...]:
    """(task, hash of its blocking measurement settings, smoke judge), the settings and the task's
    manifest: runs with equal keys measured the same thing (the leaderboard's and the HTML
    report's one rule, derived like `rbe compare`'s check)."""
    task_manifest = (manifest.get("tasks") or {}).get(name) or {}
    settings = comparability.task_measurement_settings(task, task_manifest, manifest)
    key = comparability.blocking_key(settings, comparability.non_blocking_patterns(task_manifest))
    return (name, key, bool(results.get("smoke_judge", False))), settings, task_manifest


def _filter_names(all_results: list[dict[str, Any]], wanted: Sequence[str] | None) -> set[str] | None:
    """The task names of the runs that `wanted` names (task names in any case, '_' for '-')."""
    if not wanted:
        return None
    present = list(dict.fromkeys(name for results in all_results for name in results["tasks"]))
    chosen = set()
    for text in wanted:
        found = naming.match(text, present)
        if found is None:
            raise UsageError(
                f"--tasks {text}: no run has that task.{did_you_mean(text, present)} Tasks of the runs: {', '.join(present) or 'none'}."
            )
        chosen.add(found)
    return chosen


def _selected_metrics(all_results: list[dict[str, Any]], chosen: set[str] | None, wanted: Sequence[str]) -> set[str]:
    """The `task/key` metrics that `wanted` names, matched as `rbe compare` matches a name (one
    tier decides: `PScore-L` is PersonaGym-Light's score even though it is also an alias), except
    that a name two tasks have selects both: a filter, not a choice. A name matching nothing is an error."""
    entries: dict[str, naming.MetricEntry] = {}
    for results in all_results:
        for name, task in results["tasks"].items():
            if chosen is not None and name not in chosen:
                continue
            shown = task.get("metric_names") or {}
            for key in task.get("metrics", {}):
                entries.setdefault(f"{name}/{key}", naming.MetricEntry(f"{name}/{key}", name, key, shown.get(key)))
    tiers = naming.metric_tiers(list(entries.values()))
    selected: set[str] = set()
    for text in wanted:
        found = naming.candidates(text, tiers)
        if not found:
            known = sorted({e.shown or e.key for e in entries.values()})
            raise UsageError(f"--metrics: no task of the runs has {text!r}.{did_you_mean(text, known)} Metrics: {', '.join(known) or 'none'}.")
        selected.update(found)
    return selected


def render_leaderboard(
    all_results: list[dict[str, Any]],
    manifests: list[dict[str, Any]] | None = None,
    *,
    tasks: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> str:
    """The leaderboard of `all_results`; `manifests` (aligned with them) split groups by every
    measurement setting, without them only the settings results.json carries are known.

    `tasks` / `metrics` keep only those tasks and metric columns, named as every command names them
    (rolebench_eval.naming: `PScore-L`, `Expected Action`, `personagym-light/EA`); a task with none
    of the metrics is left out, and a name that matches nothing is an error.
    """
    chosen = _filter_names(all_results, tasks)
    selected = _selected_metrics(all_results, chosen, metrics) if metrics else None
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    group_settings: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    for index, results in enumerate(all_results):
        manifest = manifests[index] if manifests is not None and index < len(manifests) else {}
        for name, task in results["tasks"].items():
            if chosen is not None and name not in chosen:
                continue
            if selected is not None and not any(q.startswith(f"{name}/") for q in selected):
                continue
            key, settings, task_manifest = group_key(name, task, results, manifest)
            groups.setdefault(key, []).append((results, task))
            group_settings.setdefault(key, (settings, task_manifest))
    lines = [
        "# Leaderboard",
        "",
        "Generated by `rbe leaderboard` from the runs under `results/runs/` (do not edit by hand).",
        "Judge scores: mean (population std) over personas; ROUGE-L: mean over items; win rate: percent.",
        "Runs measured with different settings (protocol, judges, examples model, unscored policy, data, "
        "scoring options) are never mixed in one table.",
    ]
    if not groups:
        lines += ["", "No runs yet: `rbe run --tasks personagym-light --limit 1`."]
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[1][0][1].get("protocol") or ""), kv[0][1:]))
    per_task: dict[str, list[tuple[Any, ...]]] = {}
    for key, _ in ordered:
        per_task.setdefault(key[0], []).append(key)
    for key, rows in ordered:
        name, settings_key, smoke = key
        first_task = rows[0][1]
        protocol = first_task.get("protocol") or "-"
        judges = tuple(first_task.get("judges") or ())
        policy = first_task.get("unscored_policy") or "-"
        keys = [k for k in first_task.get("metrics", {}) if selected is None or f"{name}/{k}" in selected]
        names = first_task.get("metric_names", {})
        kinds = first_task.get("metric_kinds", {})
        siblings = per_task[name]
        title = name if len(siblings) == 1 else f"{name} (settings {siblings.index(key) + 1} of {len(siblings)})"
        lines += ["", f"## {title}", ""]
        lines.append(
            f"protocol `{protocol}` · judge{'s' if len(judges) > 1 else ''} "
            f"{', '.join(f'`{j}`' for j in judges) or 'none'} · unscored policy `{policy}` · settings `{settings_key}`"
        )
        if len(siblings) > 1 and siblings[0] != key:
            first_settings, first_manifest = group_settings[siblings[0]]
            settings, task_manifest = group_settings[key]
            patterns = comparability.non_blocking_patterns(first_manifest, task_manifest)
            changed = [d for d in comparability.differences(first_settings, settings, patterns) if d.blocking]
            lines += ["", "Not comparable with settings 1: " + "; ".join(
                f"{d.name} {comparability.short(d.b)} (settings 1: {comparability.short(d.a)})" for d in changed
            ) + "."]
        if smoke:
            lines += ["", f"> **{SMOKE_JUDGE_WARNING}**"]
        header = ["model", "template", *[names.get(k, k) for k in keys], "units", "unscored items", "run"]
        table_rows = []
        for results, task in sorted(rows, key=lambda r: -_sort_value(r[1], keys)):
            run_metrics = task.get("metrics", {})
            units = max((m.get("n", 0) + m.get("n_unscored", 0) for m in run_metrics.values() if m), default=0)
            table_rows.append(
                [
                    results["model"]["label"],
                    task.get("roleplay_template") or "-",
                    *[format_metric(run_metrics.get(k), kinds.get(k, "continuous")) for k in keys],
                    str(units),
                    str((task.get("items") or {}).get("n_unscored", "-")),
                    f"`{results['run_id']}`",
                ]
            )
        lines += ["", markdown_table(header, table_rows)]
    return "\n".join(lines) + "\n"


def _sort_value(task: dict[str, Any], keys: list[str]) -> float:
    """Rows sort by the task's primary metric, else by the last metric that has a value."""
    metrics = task.get("metrics", {})
    candidates = [task["primary_metric"]] if task.get("primary_metric") else []
    candidates += list(reversed(keys))
    for key in candidates:
        mean = (metrics.get(key) or {}).get("mean")
        if mean is not None:
            return float(mean)
    return float("-inf")


def filtered_leaderboard(results_root: Path, tasks: Sequence[str] | None, metrics: Sequence[str] | None) -> str:
    """The leaderboard of only some tasks / metrics (`rbe leaderboard --tasks/--metrics`, printed)."""
    loaded = load_runs(results_root)
    return render_leaderboard([r for r, _ in loaded], [m for _, m in loaded], tasks=tasks, metrics=metrics)


def write_leaderboard(results_root: Path) -> Path:
    """Write leaderboard.md next to the results folder (the repository's top level)."""
    target = results_root.resolve().parent / LEADERBOARD
    loaded = load_runs(results_root)
    rd.write_text_atomic(target, render_leaderboard([r for r, _ in loaded], [m for _, m in loaded]))
    return target
