"""Whether two loaded runs may be compared, their metrics by name, and their paired comparison.

Runs come from `loaded_runs` (run directories, run ids, baseline files). This module decides
*whether* two runs may be compared (every measurement setting of the task manifests, see
`comparability`) and lines their per-unit values up; the statistics live in `paired_stats`, the
regression gate in `regression_gates`, paper-table rows in `table_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rolebench_eval.analysis import comparability
from rolebench_eval.analysis.loaded_runs import LoadedRun, TaskRun
from rolebench_eval.errors import UsageError


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
    gate: Any = None  # regression_gates.GateResult | None
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
    from rolebench_eval.analysis import paired_stats, regression_gates

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
    gate = regression_gates.regression_gate(comparison, resolved_rules) if resolved_rules else None
    return PairComparison(a, b, tasks, mismatches, comparison, dict(aligned.skipped), gate, shown)
