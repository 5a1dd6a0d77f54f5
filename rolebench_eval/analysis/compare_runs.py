"""Finished runs and baseline files as inputs to `rbe compare`, `rbe regress` and `rbe table`.

A run is read from a run directory (manifest.json + results.json), a run id under
`<results-dir>/runs/`, or a committed baseline file written by `export_baseline` (results.json and
the manifest's comparability essentials in one self-contained JSON file). All three load into the
same `LoadedRun`, so every command accepts any of them.

This module decides *whether* two runs may be compared (every measurement setting of the task
manifests, see `comparability`) and lines their per-unit values up; the statistics live in
`paired_stats`, paper-table rows in `table_rows`.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rolebench_eval.analysis import comparability
from rolebench_eval.running import run_dir as rd
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


def task_settings(task: TaskRun, run: LoadedRun) -> dict[str, Any]:
    """The measurement settings of one task of a run (comparability.measurement_settings)."""
    return comparability.task_measurement_settings(task.results, task.manifest, run.manifest)


@dataclass(frozen=True)
class TaskDifferences:
    blocking: list[str]  # make the numbers incomparable
    shown: list[str]  # sampling-only or prose: reported, not blocking


def task_differences(task: str, a: LoadedRun, b: LoadedRun) -> TaskDifferences:
    """Every measurement setting of `task` that differs between two runs, split into blocking and not."""
    ta, tb = a.tasks[task], b.tasks[task]
    la, lb = a.label or a.run_id, b.label or b.run_id
    blocking: list[str] = []
    shown: list[str] = []
    for side, label in ((ta, la), (tb, lb)):
        if not side.manifest:
            blocking.append(f"{task}: settings unknown for {label} (no manifest); cannot check the data and settings it was measured with")
    patterns = comparability.non_blocking_patterns(ta.manifest, tb.manifest)
    for diff in comparability.differences(task_settings(ta, a), task_settings(tb, b), patterns):
        text = f"{task}: {diff.name} differs ({la}: {_short(diff.a)}; {lb}: {_short(diff.b)})"
        (blocking if diff.blocking else shown).append(text)
    return TaskDifferences(blocking, shown)


def task_mismatches(task: str, a: LoadedRun, b: LoadedRun) -> list[str]:
    """What differs between two runs' `task` in a way that makes their numbers incomparable."""
    return task_differences(task, a, b).blocking


_short = comparability.short


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


class MetricCatalogue(dict[str, tuple[str, str]]):
    """Qualified metric name -> (task, metric key), with the names the tables show (`shown`:
    qualified -> the results' metric_names entry), so that a metric can be named as shown."""

    shown: dict[str, str]


def metric_catalogue(tasks: Mapping[str, TaskRun], names: Sequence[str]) -> MetricCatalogue:
    """Qualified metric name -> (task, metric key) for the tasks `names`, in results order."""
    catalogue = MetricCatalogue()
    catalogue.shown = {}
    for name in names:
        shown = tasks[name].metric_names
        for metric in tasks[name].metric_kinds:
            catalogue[qualified(name, metric)] = (name, metric)
            if shown.get(metric):
                catalogue.shown[qualified(name, metric)] = str(shown[metric])
    return catalogue


def resolve_metric(text: str, catalogue: Mapping[str, tuple[str, str]]) -> str:
    """The qualified name of the metric `text` names: `task/metric`, a plain key, the name tables
    show, or a short code (naming.METRIC_ALIASES), in any case; unknown or ambiguous -> UsageError
    naming the candidates."""
    from rolebench_eval import naming

    shown = getattr(catalogue, "shown", {})
    entries = [naming.MetricEntry(q, task, metric, shown.get(q)) for q, (task, metric) in catalogue.items()]
    return naming.resolve_metric(text, entries)


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
        raise UsageError(f"--fail-if-worse {text!r}: expected METRIC:DELTA, e.g. PScore-L:0.1 or personagym-light/PersonaScore:0.1")
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
    shown_differences: tuple[str, ...] = ()  # settings that differ without blocking (seed, limit, ...)


def comparability_gate(
    a: LoadedRun, b: LoadedRun, allow_mismatch: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(shared tasks, blocking differences, non-blocking differences) of run `b` against `a`.

    The one refusal of non-comparable runs (`rbe compare`, its side-by-side page and CSV, the
    Python API): raises UsageError listing what differs unless `allow_mismatch`.
    """
    tasks = shared_tasks(a, b)
    found = [task_differences(task, a, b) for task in tasks]
    mismatches = tuple(problem for item in found for problem in item.blocking)
    shown = tuple(text for item in found for text in item.shown)
    if mismatches and not allow_mismatch:
        listing = "\n  - ".join(mismatches)
        raise UsageError(
            f"runs {a.label} ({a.run_id}) and {b.label} ({b.run_id}) are not comparable:\n  - {listing}\n"
            "Numbers measured with different settings (protocol, judges, task version, data, scoring "
            "options) are not comparable; "
            "pass --allow-mismatch to compare them anyway (the output will say so)."
        )
    return tuple(tasks), mismatches, shown


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
    from rolebench_eval.analysis import paired_stats

    tasks, mismatches, shown = comparability_gate(a, b, allow_mismatch)
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
    return PairComparison(a, b, tasks, mismatches, comparison, dict(aligned.skipped), gate, shown)
