"""Runs as measured rows of a paper table (`rbe table`): values in the table's units, and the
measurement settings `paper_tables` checks against the published setting and the other rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rolebench_eval import naming
from rolebench_eval.analysis import comparability
from rolebench_eval.analysis.compare_runs import task_settings
from rolebench_eval.analysis.loaded_runs import LoadedRun
from rolebench_eval.errors import UsageError, did_you_mean

# Older results spelled the win rate key in other ways; the column looks for each (the first found).
_WIN_RATE_KEYS = ("win_rate", "WinRate", "win rate", "winrate")


def table_task(run: LoadedRun, table_name: str, benchmark: str, task: str | None = None) -> str:
    """The task of `run` that a paper table's rows come from: --task, else the table's own task."""
    names = list(run.tasks)
    if task is not None:
        found = naming.match(task, names)  # any case; '_' for '-'
        if found is None:
            raise UsageError(f"run {run.run_id} has no task {task!r}.{did_you_mean(task, names)} Its tasks: {', '.join(names)}.")
        return found
    expected = naming.table_task(naming.table_name(table_name), benchmark)
    if expected in run.tasks:
        return expected
    raise UsageError(
        f"run {run.run_id} has no task {expected!r}, which table {table_name} reports; its tasks: "
        f"{', '.join(names) or 'none'}. Name another task with --task (the output will still check protocol and judge)."
    )


def _cells(table: Any, metrics: Mapping[str, Any], win_key: str | None) -> dict[str, Any]:
    from rolebench_eval.analysis.paper_tables import Cell

    values: dict[str, Any] = {}
    for column in table.columns:
        # A column is named as its paper prints it (PScore-L, PScore, PersonaScore); the results
        # key it reads is the one naming maps that name to (PersonaScore).
        key = naming.metric_key(column.id) or column.id
        if key == "win_rate":
            keys: tuple[str, ...] = (win_key,) if win_key else _WIN_RATE_KEYS
        else:
            keys = tuple(dict.fromkeys((key, column.id)))
        summary = next((metrics[k] for k in keys if isinstance(metrics.get(k), Mapping)), None)
        if summary is None or summary.get("mean") is None:
            continue
        if column.unit == "percent":
            # results.json keeps win rates as fractions (formatting.format_metric multiplies by 100).
            values[column.id] = Cell(mean=100 * float(summary["mean"]), n=summary.get("n"))
        elif column.unit == "rouge_l_f":
            values[column.id] = Cell(mean=float(summary["mean"]), n=summary.get("n"))  # RoleLLM prints no std
        else:
            values[column.id] = Cell(mean=float(summary["mean"]), std=summary.get("std"), n=summary.get("n"))
    return values


def measured_rows(run: LoadedRun, table: Any, task: str | None = None) -> list[Any]:
    """paper_tables.MeasuredRow(s) for `table` (a PaperTable) from one task of a run.

    One row, except where the run had several judges and the task reports a win rate per judge
    (RoleBench: `win_rate[<judge>]`): then one row per judge, each with its own win rate, so each
    is checked against the table's judge on its own.
    """
    from rolebench_eval.analysis.paper_tables import MeasuredRow
    from rolebench_eval.analysis.multi_task_rows import is_multi_task, measured_row_over_tasks

    if is_multi_task(table) and task is None:
        return [measured_row_over_tasks(run, table)]  # columns from several tasks (RPBench-Auto)
    name = table_task(run, table.name, table.benchmark, task)
    task_run = run.tasks[name]
    custom = ((task_run.manifest or {}).get("data") or {}).get("question_set")
    if isinstance(custom, Mapping):
        # Published tables report the benchmark's own questions; no flag makes a generated set one.
        raise UsageError(
            f"run {run.run_id}, task {name}: evaluated on the custom question set {custom.get('name')!r} "
            f"(questions sha256 {str(custom.get('questions_sha256'))[:12]}); {table.name} reports the benchmark's "
            "questions only: compare runs on the same set with `rbe compare` or the leaderboard"
        )
    results = task_run.results
    metrics = results.get("metrics") or {}
    judges = [str(j) for j in results.get("judges") or []]
    label = run.label or run.model_label
    per_judge = len(judges) > 1 and any(c.id == "win_rate" for c in table.columns) and any(
        f"win_rate[{j}]" in metrics for j in judges
    )
    variants = [(f"{label} [{j}]", (j,), f"win_rate[{j}]") for j in judges] if per_judge else [
        (label, tuple(judges) or ("none",), None)
    ]
    settings = task_settings(task_run, run)
    patterns = comparability.non_blocking_patterns(task_run.manifest)
    rows = []
    for row_label, row_judges, win_key in variants:
        values = _cells(table, metrics, win_key)
        if not values:
            scored = [k for k, v in metrics.items() if isinstance(v, Mapping) and v.get("mean") is not None]
            raise UsageError(
                f"run {run.run_id}, task {name}: no scored metric for the columns of {table.name} "
                f"({', '.join(c.id for c in table.columns)}); its metrics: {', '.join(scored) or 'none scored'}."
            )
        rows.append(MeasuredRow(
            label=row_label,
            protocol=str(results.get("protocol") or "-"),
            judge=row_judges,
            values=values,
            examples_model=str(run.results.get("examples_model")) if judges and run.results.get("examples_model") else None,
            settings=settings,
            non_blocking=patterns,
        ))
    return rows
