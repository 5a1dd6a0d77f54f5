"""A measured row of a paper table whose columns come from several tasks of one run.

RPBench-Auto's leaderboard prints a model's win rate on the character subset, on the scene subset
and their mean: two tasks (`rpbench-character`, `rpbench-scene`) of one `rbe run --tasks
rpbench-auto`. Such a table names each column's `task` and `metric`; a `derived: "mean"` column
is the mean of the row's task columns, computed only when every one of them was measured (a run of
one subset shows the other and the mean as '-').
"""

from __future__ import annotations

from typing import Any

from rolebench_eval.analysis import comparability
from rolebench_eval.analysis.compare_runs import task_settings
from rolebench_eval.analysis.loaded_runs import LoadedRun
from rolebench_eval.errors import UsageError


def is_multi_task(table: Any) -> bool:
    return any(column.task for column in table.columns)


def measured_row_over_tasks(run: LoadedRun, table: Any) -> Any:
    """The run's one row of `table` (a PaperTable whose columns name their tasks)."""
    from rolebench_eval.analysis.paper_tables import Cell, MeasuredRow

    wanted = list(dict.fromkeys(c.task for c in table.columns if c.task))
    present = [name for name in wanted if name in run.tasks]
    if not present:
        raise UsageError(
            f"run {run.run_id} has none of the tasks {', '.join(wanted)} that table {table.name} reports; "
            f"its tasks: {', '.join(run.tasks) or 'none'}"
        )
    values: dict[str, Any] = {}
    for column in table.columns:
        if not column.task or column.task not in run.tasks:
            continue
        summary = (run.tasks[column.task].results.get("metrics") or {}).get(column.metric or "")
        if isinstance(summary, dict) and summary.get("mean") is not None:
            scale = 100.0 if column.unit == "percent" else 1.0  # results.json keeps fractions
            values[column.id] = Cell(mean=scale * float(summary["mean"]), n=summary.get("n"))
    task_columns = [c.id for c in table.columns if c.task]
    for column in table.columns:
        if column.derived == "mean" and all(cid in values for cid in task_columns):
            means = [values[cid].mean for cid in task_columns]
            values[column.id] = Cell(mean=sum(means) / len(means))
    if not values:
        raise UsageError(f"run {run.run_id}: nothing scored in {', '.join(present)} for table {table.name}")
    first = run.tasks[present[0]]
    judges = sorted({str(j) for name in present for j in run.tasks[name].results.get("judges") or []})
    return MeasuredRow(
        label=run.label or run.model_label,
        protocol=str(first.results.get("protocol") or "-"),
        judge=tuple(judges) or ("none",),
        values=values,
        settings=task_settings(first, run),
        non_blocking=comparability.non_blocking_patterns(first.manifest),
    )
