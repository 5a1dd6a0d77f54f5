"""The derived files of a run (samples.jsonl, results.json, report.md, report.html) and their stamp.

They are a pure function of the configuration and the calls files: written after the calls, from
the tasks' outcomes. A stamp of those inputs (sizes and times of the calls files, the configuration
hash, the rbe version) lets an unchanged rerun print its results without re-reading every call;
any new call, or a failed call to retry, re-derives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.analysis import judge_reliability
from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_accounting import nothing_scored
from rolebench_eval.running.sample_sink import SampleSink
from rolebench_eval.embedded import SMOKE_JUDGE_WARNING
from rolebench_eval.models import ModelSpec
from rolebench_eval.task_api import Task, TaskOutcome

RESULTS_SCHEMA = "rolebench-eval/results/v1"


def incomplete_reasons(failure_lines: Sequence[str], task_results: Mapping[str, Any]) -> list[str]:
    """Why a run's numbers are not final: failed calls and calls a budget stopped (each line says
    what a rerun does), tasks with nothing scored."""
    reasons = list(failure_lines)
    for name, task in task_results.items():
        if nothing_scored(task):
            why = (task.get("items") or {}).get("unscored_reasons") or {}
            detail = "; ".join(f"{n}x {reason}" for reason, n in list(why.items())[:3])
            reasons.append(f"{name}: nothing could be scored" + (f" ({detail})" if detail else ""))
    return reasons


def write_outputs(
    run_path: Path,
    manifest: Mapping[str, Any],
    tasks: Sequence[Task],
    outcomes: Mapping[str, TaskOutcome],
    model: ModelSpec,
    judges: Sequence[ModelSpec],
    calls_section: dict[str, Any],
    sink: SampleSink,
    incomplete: Sequence[str] | None = None,
    *,
    failure_lines: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Write samples.jsonl (from `sink`, which has every task's records: sample_sink.py),
    results.json, report.md and report.html; return the results. The outcomes' `records` are read
    for the reliability figures only (a streamed task's are its records without call texts)."""
    sink.commit()
    task_results = {}
    for task in tasks:
        outcome = outcomes[task.name]
        task_manifest = manifest["tasks"][task.name]
        task_results[task.name] = {
            "task": task.name,
            "version": task.version,
            "protocol": (task_manifest.get("protocol") or {}).get("name"),
            "roleplay_template": (task_manifest.get("roleplay_template") or {}).get("name"),
            "unscored_policy": task_manifest.get("unscored_policy"),
            "judges": [j.label for j in judges] if task_manifest.get("uses_judges", True) else [],
            "metric_kinds": task.metric_kinds(),
            **outcome.results,
            # Agreement, length and position bias of the task's judges (None: nothing judged).
            "reliability": judge_reliability.reliability(outcome.records),
            "warnings": outcome.warnings,
        }
    smoke = bool(manifest.get("smoke_judge"))
    if incomplete is None:
        incomplete = incomplete_reasons(failure_lines, task_results)
    results = {
        "schema": RESULTS_SCHEMA,
        "run_id": run_path.name,
        "config_hash": manifest["config_hash"],
        "model": {"label": model.label, "backend": model.backend, "identity": manifest["model"]["identity"]},
        "judges": [{"label": j.label, "backend": j.backend, "model": j.model if not j.smoke else "embedded", "smoke": j.smoke} for j in judges],
        "examples_model": (manifest.get("examples_model") or {}).get("label"),
        "smoke_judge": smoke,
        "smoke_warning": SMOKE_JUDGE_WARNING if smoke else None,
        "deviations": manifest["deviations"],
        "warnings": list(warnings),
        "tasks": task_results,
        "calls": calls_section,
        "incomplete": list(incomplete),
    }
    rd.write_json_atomic(run_path / rd.RESULTS, results)
    from rolebench_eval.analysis.html_report import write_run_html
    from rolebench_eval.analysis.report import render_run_report

    rd.write_text_atomic(run_path / rd.REPORT, render_run_report(results))
    write_run_html(run_path)
    return results


# -- the stamp of the derived files -------------------------------------------------------------


def stamp_inputs(run_path: Path, config_hash: str) -> dict[str, Any]:
    files = {}
    for name in (rd.GENERATION_CALLS, rd.JUDGING_CALLS):
        path = run_path / name
        stat = path.stat() if path.exists() else None
        files[name] = [stat.st_size, stat.st_mtime_ns] if stat else None
    from rolebench_eval import __version__

    return {"config_hash": config_hash, "rbe_version": __version__, "calls_files": files}


def write_stamp(run_path: Path, config_hash: str, calls_used: Mapping[str, int], failed_calls: int) -> None:
    stamp = {**stamp_inputs(run_path, config_hash), "calls_used": dict(calls_used), "failed_calls": failed_calls}
    rd.write_json_atomic(run_path / rd.DERIVED_STAMP, stamp)


def current_results(run_path: Path, config_hash: str) -> tuple[dict[str, Any], dict[str, int]] | None:
    """(results, calls used) when the derived files are current for these calls files, else None."""
    try:
        stamp = json.loads((run_path / rd.DERIVED_STAMP).read_text(encoding="utf-8"))
        results = json.loads((run_path / rd.RESULTS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(stamp, dict) or not isinstance(results, dict):
        return None
    current = stamp_inputs(run_path, config_hash)
    if stamp.get("failed_calls", 1) or any(stamp.get(k) != v for k, v in current.items()):
        return None
    if results.get("config_hash") != config_hash:
        return None
    return results, dict(stamp.get("calls_used", {}))
