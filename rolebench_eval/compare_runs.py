"""Finished runs and baseline files as inputs to `rbe compare`, `rbe regress` and `rbe table`.

A run is read from a run directory (manifest.json + results.json), a run id under
`<results-dir>/runs/`, or a committed baseline file written by `export_baseline` (results.json and
the manifest's comparability essentials in one self-contained JSON file). All three load into the
same `LoadedRun`, so every command accepts any of them.

This module decides *whether* two runs may be compared (protocol, judges, task version, data and
prompt hashes, unscored policy) and lines their per-unit values up; the statistics live in
`paired_stats`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rolebench_eval import run_dir as rd
from rolebench_eval.errors import UsageError, did_you_mean

BASELINE_SCHEMA = "rolebench-eval/baseline/v1"
BASELINES_FOLDER = "baselines"
# Verdict outcomes that carry no verdict: dropped before pairing, like NaN scores.
_NO_VERDICT = {"unscored", "skipped", "", None}


@dataclass(frozen=True)
class TaskRun:
    """One task of a run: what is needed to compare it and to check that a comparison is fair."""

    name: str
    results: Mapping[str, Any]  # the task's entry of results.json
    manifest: Mapping[str, Any]  # the task's entry of manifest.json ({} when unknown)

    @property
    def metric_kinds(self) -> dict[str, str]:
        return dict(self.results.get("metric_kinds") or {})

    @property
    def metric_names(self) -> dict[str, str]:
        return dict(self.results.get("metric_names") or {})

    def per_unit(self, metric: str) -> pd.Series:
        """Per-unit values of one metric (index: unit id), missing or unscored units as NaN."""
        rows = self.results.get("per_unit") or {}
        values = {unit: (row or {}).get(metric) for unit, row in rows.items()}
        series = pd.Series(values, dtype=object, name=metric)
        series.index = series.index.astype(str)
        if self.metric_kinds.get(metric) == "verdict":
            # Verdicts stay strings ("win"/"tie"/"loss"); paired_stats encodes them.
            return series.map(lambda v: math.nan if (v is None or (isinstance(v, str) and v.strip().lower() in _NO_VERDICT)) else v)
        return pd.to_numeric(series, errors="coerce").astype(float)


@dataclass(frozen=True)
class LoadedRun:
    """A finished run or a baseline file, ready to compare."""

    source: str  # the path it was read from
    run_id: str
    results: Mapping[str, Any]
    manifest: Mapping[str, Any]
    is_baseline_file: bool = False
    label: str = field(default="")

    @property
    def model_label(self) -> str:
        return str((self.results.get("model") or {}).get("label") or self.run_id)

    @property
    def tasks(self) -> dict[str, TaskRun]:
        manifests = self.manifest.get("tasks") or {}
        return {
            name: TaskRun(name=name, results=task, manifest=manifests.get(name) or {})
            for name, task in (self.results.get("tasks") or {}).items()
        }

    @property
    def run_dir(self) -> Path | None:
        return None if self.is_baseline_file else Path(self.source)


# --------------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path, what: str) -> Any:
    return rd.read_json(path, what)


def _load_dir(path: Path) -> LoadedRun:
    if not (path / rd.RESULTS).is_file():
        what = "is still running or was interrupted" if (path / rd.MANIFEST).is_file() else "is not a run directory"
        raise UsageError(f"{path} {what}: it has no {rd.RESULTS}.")
    results = _read_json(path / rd.RESULTS, "run results")
    manifest = _read_json(path / rd.MANIFEST, "run manifest") if (path / rd.MANIFEST).is_file() else {}
    return LoadedRun(source=str(path), run_id=str(results.get("run_id") or path.name), results=results, manifest=manifest)


def _load_file(path: Path) -> LoadedRun:
    data = _read_json(path, "baseline file")
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        raise UsageError(
            f"{path} is not a baseline file (schema {data.get('schema') if isinstance(data, dict) else '?'!r}, "
            f"expected {BASELINE_SCHEMA!r}); write one with `rbe baseline export RUN`."
        )
    results = data["results"]
    return LoadedRun(
        source=str(path),
        run_id=str(data.get("source_run_id") or results.get("run_id") or path.stem),
        results=results,
        manifest=data.get("manifest") or {},
        is_baseline_file=True,
    )


def load_run(reference: str | Path, results_dir: Path = Path("results")) -> LoadedRun:
    """A run from a run directory, a baseline file, or a run id (or unique id prefix) under results_dir."""
    path = Path(reference)
    if path.is_dir():
        return _load_dir(path)
    if path.is_file():
        return _load_file(path)
    runs = rd.find_runs(results_dir)
    ids = [run.name for run in runs]
    exact = [run for run in runs if run.name == str(reference)]
    matches = exact or [run for run in runs if run.name.startswith(str(reference))]
    if len(matches) == 1:
        return _load_dir(matches[0])
    if len(matches) > 1:
        raise UsageError(f"run {str(reference)!r} is ambiguous under {results_dir}: {', '.join(m.name for m in matches)}.")
    known = f" Runs under {results_dir / rd.RUNS_FOLDER}: {', '.join(ids)}." if ids else f" No run under {results_dir / rd.RUNS_FOLDER}."
    raise UsageError(f"no run directory, baseline file or run id {str(reference)!r}.{did_you_mean(str(reference), ids)}{known}")


def load_runs(references: Sequence[str], results_dir: Path) -> list[LoadedRun]:
    """Load several runs and give each a short distinct label for tables (the model label, or
    model@hash when two runs share a model)."""
    runs = [load_run(reference, results_dir) for reference in references]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.model_label] = counts.get(run.model_label, 0) + 1
    labelled = []
    for run in runs:
        label = run.model_label
        if counts[label] > 1:
            label = f"{label}@{str(run.results.get('config_hash') or run.run_id)[:8]}"
            if run.is_baseline_file:
                label += " (baseline)"
        labelled.append(LoadedRun(run.source, run.run_id, run.results, run.manifest, run.is_baseline_file, label))
    return labelled


# --------------------------------------------------------------------------------------------------
# Baseline files


def _manifest_essentials(manifest: Mapping[str, Any]) -> dict[str, Any]:
    # What decides comparability and provenance; machine details and argv stay in the run.
    keys = ("schema", "config_hash", "generation_hash", "model", "judges", "examples_model", "settings",
            "backend_options", "tasks", "smoke_judge", "deviations", "packages", "git_revision")
    return {key: manifest[key] for key in keys if key in manifest}


def baseline_document(run: LoadedRun, name: str | None = None) -> dict[str, Any]:
    """The self-contained baseline: results (with per_unit) and the manifest's essentials."""
    return {
        "schema": BASELINE_SCHEMA,
        "name": name or run.run_id,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "source_run_id": run.run_id,
        "config_hash": run.results.get("config_hash"),
        "manifest": _manifest_essentials(run.manifest),
        "results": dict(run.results),
    }


def default_baseline_path(run: LoadedRun, results_dir: Path) -> Path:
    tasks = "+".join(run.tasks)
    return results_dir / BASELINES_FOLDER / f"{rd.slug(run.model_label)}__{rd.slug(tasks, 60)}.json"


def export_baseline(run: LoadedRun, output: Path, name: str | None = None) -> Path:
    """Write the baseline file (atomically; sorted keys nowhere, so diffs follow results.json)."""
    if not any(task.results.get("per_unit") for task in run.tasks.values()):
        raise UsageError(f"run {run.run_id} has no per-unit values; a baseline needs them for paired tests.")
    rd.write_json_atomic(output, baseline_document(run, name or output.stem))
    return output


# --------------------------------------------------------------------------------------------------
# Compatibility


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, Mapping):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _hashes(task_manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of the task manifest whose path names a hash (data.questions_sha256,
    prompts_sha256.<file>, ...): the data and prompt files the numbers were computed from."""
    return {
        path: value
        for path, value in _flatten(task_manifest).items()
        if "sha256" in path or "hash" in path
    }


def _judges(task: TaskRun, run: LoadedRun) -> list[str]:
    labels = list(task.results.get("judges") or [])
    identities = {j.get("label"): j.get("identity") for j in run.manifest.get("judges") or [] if isinstance(j, Mapping)}
    # The identity (model file/weights hash, endpoint model name) catches two judges given the same label.
    return sorted(f"{label} [{identities[label]}]" if identities.get(label) else str(label) for label in labels)


def _protocol(task: TaskRun) -> Any:
    described = task.manifest.get("protocol")
    if isinstance(described, Mapping):
        # The description is prose; every other field (batching, judge params) can change a score.
        return {k: v for k, v in described.items() if k != "description"}
    return task.results.get("protocol")


def task_mismatches(task: str, a: LoadedRun, b: LoadedRun) -> list[str]:
    """What differs between two runs' `task` in a way that makes their numbers incomparable."""
    ta, tb = a.tasks[task], b.tasks[task]
    problems = []

    def differ(what: str, va: Any, vb: Any) -> None:
        if va != vb:
            problems.append(f"{task}: {what} differs ({a.label or a.run_id}: {_short(va)}; {b.label or b.run_id}: {_short(vb)})")

    differ("protocol", ta.results.get("protocol"), tb.results.get("protocol"))
    if ta.results.get("protocol") == tb.results.get("protocol"):
        differ("protocol settings", _protocol(ta), _protocol(tb))
    differ("judge set", _judges(ta, a), _judges(tb, b))
    differ("task version", ta.results.get("version"), tb.results.get("version"))
    differ("unscored policy", ta.results.get("unscored_policy"), tb.results.get("unscored_policy"))
    ha, hb = _hashes(ta.manifest), _hashes(tb.manifest)
    if not ha or not hb:
        problems.append(f"{task}: data hashes unknown for {a.label if not ha else b.label} (no manifest); cannot check the data")
    else:
        for key in sorted(set(ha) | set(hb)):
            differ(f"data hash {key}", ha.get(key), hb.get(key))
    return problems


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 40 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value[:12] + "..."  # a hash: the prefix is enough to tell them apart
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def shared_tasks(a: LoadedRun, b: LoadedRun) -> list[str]:
    shared = [name for name in a.tasks if name in b.tasks]
    if not shared:
        raise UsageError(
            f"runs {a.label} and {b.label} share no task ({', '.join(a.tasks) or 'none'} vs {', '.join(b.tasks) or 'none'})."
        )
    return shared


# --------------------------------------------------------------------------------------------------
# Metric names and aligned values


def qualified(task: str, metric: str) -> str:
    return f"{task}/{metric}"


def metric_catalogue(tasks: Mapping[str, TaskRun], names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Qualified metric name -> (task, metric key) for the tasks `names`, in results order."""
    catalogue = {}
    for name in names:
        for metric in tasks[name].metric_kinds:
            catalogue[qualified(name, metric)] = (name, metric)
    return catalogue


def resolve_metric(text: str, catalogue: Mapping[str, tuple[str, str]]) -> str:
    """`task/metric` as is; a plain metric key or display name when exactly one task has it."""
    if text in catalogue:
        return text
    matches = [q for q, (task, metric) in catalogue.items() if metric == text]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"metric {text!r} is ambiguous: {', '.join(matches)}; name it as TASK/METRIC.")
    raise UsageError(
        f"unknown metric {text!r}.{did_you_mean(text, list(catalogue))} Known metrics: {', '.join(catalogue)}."
    )


@dataclass(frozen=True)
class Aligned:
    """Per-unit values of two runs for every metric both can be compared on."""

    a: dict[str, pd.Series]
    b: dict[str, pd.Series]
    kinds: dict[str, str]  # qualified metric -> kind, in results order
    skipped: dict[str, str]  # qualified metric -> why it cannot be compared


def aligned_values(a: LoadedRun, b: LoadedRun, tasks: Sequence[str], metrics: Sequence[str] | None = None) -> Aligned:
    """Per-unit Series for each qualified metric of `tasks` (or only `metrics`).

    A metric with no unit scored in both runs (an unparsed judge everywhere, a metric one run lacks)
    is skipped with the reason, rather than failing the whole comparison.
    """
    catalogue = metric_catalogue(a.tasks, tasks)
    wanted = list(catalogue) if metrics is None else list(metrics)
    values_a: dict[str, pd.Series] = {}
    values_b: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        task, metric = catalogue[name]
        kind = a.tasks[task].metric_kinds[metric]
        kind_b = b.tasks[task].metric_kinds.get(metric)
        if kind_b is None:
            skipped[name] = f"{b.label} has no metric {metric}"
            continue
        if kind_b != kind:
            skipped[name] = f"metric kind differs ({kind} vs {kind_b})"
            continue
        series_a = a.tasks[task].per_unit(metric).dropna()
        series_b = b.tasks[task].per_unit(metric).dropna()
        common = series_a.index.intersection(series_b.index)
        if common.empty:
            skipped[name] = (
                f"no unit scored in both runs ({series_a.size} scored in {a.label}, {series_b.size} in {b.label})"
            )
            continue
        values_a[name], values_b[name], kinds[name] = series_a, series_b, kind
    return Aligned(a=values_a, b=values_b, kinds=kinds, skipped=skipped)


def parse_rule(text: str) -> tuple[str, float]:
    """`METRIC:DELTA` -> (metric, allowed drop); the metric may itself contain '/'."""
    metric, sep, delta = text.rpartition(":")
    if not sep or not metric:
        raise UsageError(f"--fail-if-worse {text!r}: expected METRIC:DELTA, e.g. personagym-light/PersonaScore:0.1")
    try:
        value = float(delta)
    except ValueError:
        raise UsageError(f"--fail-if-worse {text!r}: DELTA {delta!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--fail-if-worse {text!r}: DELTA must be a number >= 0 (metric units)")
    return metric, value


# --------------------------------------------------------------------------------------------------
# A paired comparison of two loaded runs


@dataclass(frozen=True)
class PairComparison:
    """Run `b` against run `a`: what differs, what was compared, and the gate if one was asked for."""

    a: LoadedRun
    b: LoadedRun
    tasks: tuple[str, ...]
    mismatches: tuple[str, ...]  # empty, or shown because --allow-mismatch
    comparison: Any  # paired_stats.Comparison
    skipped: Mapping[str, str]
    gate: Any = None  # paired_stats.GateResult | None


def compare_pair(
    a: LoadedRun,
    b: LoadedRun,
    *,
    metrics: Sequence[str] | None = None,
    rules: Sequence[tuple[str, float]] = (),
    allow_mismatch: bool = False,
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 9999,
) -> PairComparison:
    """Check comparability, line up per-unit values, compare every metric (one correction family
    across all metrics of all shared tasks), and apply the regression rules if any."""
    from rolebench_eval import paired_stats

    tasks = shared_tasks(a, b)
    mismatches = [problem for task in tasks for problem in task_mismatches(task, a, b)]
    if mismatches and not allow_mismatch:
        listing = "\n  - ".join(mismatches)
        raise UsageError(
            f"runs {a.label} ({a.run_id}) and {b.label} ({b.run_id}) are not comparable:\n  - {listing}\n"
            "Numbers from different protocols, judges, task versions or data are not comparable; "
            "pass --allow-mismatch to compare them anyway (the output will say so)."
        )
    catalogue = metric_catalogue(a.tasks, tasks)
    wanted = [resolve_metric(name, catalogue) for name in metrics] if metrics else None
    resolved_rules = {resolve_metric(name, catalogue): delta for name, delta in rules}
    if wanted is not None:
        wanted += [name for name in resolved_rules if name not in wanted]
    aligned = aligned_values(a, b, tasks, wanted)
    blocked = {name: aligned.skipped[name] for name in resolved_rules if name in aligned.skipped}
    if blocked:
        raise UsageError(
            "cannot decide --fail-if-worse for "
            + "; ".join(f"{name}: {why}" for name, why in blocked.items())
        )
    if not aligned.kinds:
        reasons = "; ".join(f"{name}: {why}" for name, why in aligned.skipped.items())
        raise UsageError(f"runs {a.label} and {b.label} have no metric to compare ({reasons}).")
    comparison = paired_stats.compare(
        aligned.a, aligned.b, aligned.kinds,
        label_a=a.label, label_b=b.label, correction=correction, alpha=alpha, seed=seed, n_resamples=n_resamples,
    )
    gate = paired_stats.regression_gate(comparison, resolved_rules) if resolved_rules else None
    return PairComparison(a, b, tuple(tasks), tuple(mismatches), comparison, dict(aligned.skipped), gate)


# --------------------------------------------------------------------------------------------------
# Paper-table rows from runs

# The PersonaScore column is named per paper (PScore-L in OpenCharacter Table 3, PScore in Table 5,
# PersonaScore in PersonaGym Table 1); results.json always says PersonaScore.
_PERSONA_SCORE_COLUMNS = ("PersonaScore", "PScore-L", "PScore")
_WIN_RATE_KEYS = ("win_rate", "WinRate", "win rate", "winrate")
# The RoleBench task each RoleLLM table reports (tasks/rolebench/tasks.toml).
_TABLE_TASKS = {
    "rolellm_en_instruction": "rolebench-en",
    "rolellm_en_role": "rolebench-en-rolegen",
    "rolellm_zh_instruction": "rolebench-zh",
}


def table_task(run: LoadedRun, table_name: str, benchmark: str, task: str | None = None) -> str:
    """The task of `run` that a paper table's rows come from: --task, else the table's own task."""
    names = list(run.tasks)
    if task is not None:
        if task not in run.tasks:
            raise UsageError(f"run {run.run_id} has no task {task!r}.{did_you_mean(task, names)} Its tasks: {', '.join(names)}.")
        return task
    expected = _TABLE_TASKS.get(table_name, benchmark)
    if expected in run.tasks:
        return expected
    raise UsageError(
        f"run {run.run_id} has no task {expected!r}, which table {table_name} reports; its tasks: "
        f"{', '.join(names) or 'none'}. Name another task with --task (the output will still check protocol and judge)."
    )


def measured_row(run: LoadedRun, table: Any, task: str | None = None) -> Any:
    """A paper_tables.MeasuredRow for `table` (a PaperTable) from one task of a run."""
    from rolebench_eval.paper_tables import Cell, MeasuredRow

    name = table_task(run, table.name, table.benchmark, task)
    results = run.tasks[name].results
    metrics = results.get("metrics") or {}
    column_ids = [column.id for column in table.columns]
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.id in _PERSONA_SCORE_COLUMNS:
            keys: tuple[str, ...] = ("PersonaScore", column.id)
        elif column.id == "win_rate":
            keys = _WIN_RATE_KEYS
        else:
            keys = (column.id,)
        summary = next((metrics[k] for k in keys if isinstance(metrics.get(k), Mapping)), None)
        if summary is None or summary.get("mean") is None:
            continue
        if column.unit == "percent":
            # results.json keeps win rates as fractions (formatting.format_metric multiplies by 100).
            mean = float(summary["mean"])
            values[column.id] = Cell(mean=100 * mean, n=summary.get("n"))
        elif column.unit == "rouge_l_f":
            values[column.id] = Cell(mean=float(summary["mean"]), n=summary.get("n"))  # RoleLLM prints no std
        else:
            values[column.id] = Cell(mean=float(summary["mean"]), std=summary.get("std"), n=summary.get("n"))
    if not values:
        raise UsageError(
            f"run {run.run_id}, task {name}: no scored metric for the columns of {table.name} "
            f"({', '.join(column_ids)}); its metrics: {', '.join(k for k, v in metrics.items() if v and v.get('mean') is not None) or 'none scored'}."
        )
    return MeasuredRow(
        label=run.label or run.model_label,
        protocol=str(results.get("protocol") or "-"),
        judge=tuple(results.get("judges") or ("none",)),
        values=values,
    )
