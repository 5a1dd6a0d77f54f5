"""Finished runs and baseline files as inputs to `rbe compare`, `rbe regress` and `rbe table`.

A run is read from a run directory (manifest.json + results.json), a run id under
`<results-dir>/runs/`, or a committed baseline file written by `export_baseline` (results.json and
the manifest's comparability essentials in one self-contained JSON file). All three load into the
same `LoadedRun`, so every command accepts any of them.

This module owns loading (`load_run`, `load_runs`) and writing baseline files; whether two runs
may be compared, and lining their values up, is `compare_runs`.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

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
