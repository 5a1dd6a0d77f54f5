"""Finished runs as pandas DataFrames: metrics, samples, judgments, and a tidy table across runs.

The shapes (README "Python API"):

- metrics: one row per task x metric, plus one row per task x metric x judge where a task reports
  each judge on its own (PersonaGym's `per_judge`; RoleBench's `win_rate[label]` keys): columns
  task, metric, name (as tables show it), kind, judge (None for the combined value), value (the
  mean; None when nothing was scored, never 0), std, n, unscored, ci_low, ci_high, reason.
- samples: one row per sample (per record of samples.jsonl): run_id, task, unit (persona or item),
  sample_id, metric, question, answer, score, unscored_reason, empty_answer, answer_error, then, for
  each judge label L of the task (in the run's order), `judge[L].reply`, `judge[L].score` (a 1-5
  score; PersonaGym) or `judge[L].verdict` (win/tie/loss/unscored; RoleBench), and
  `judge[L].unscored_reason`; RoleBench's ROUGE-L scores are `score[CUS]`, `score[RAW]`,
  `score[SPE]` (its `score` is empty: an item has one ROUGE score per reference set, and a verdict
  per judge). A judge that saw one sample twice (RoleBench's two orders) has its replies joined
  under `[order ab]` / `[order ba]` headings; `judgments` has them one per row.
- judgments: one row per judge reply to a sample (sample x judge x order): run_id, task, unit,
  sample_id, judge, order, reply, score, outcome, unscored_reason.

Samples are read only through `run_samples.iter_samples`, which resolves whatever the run
directory stores by reference.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rolebench_eval.analysis.run_samples import iter_samples
from rolebench_eval.errors import UsageError
from rolebench_eval.running import run_dir as rd

METRIC_COLUMNS = ("task", "metric", "name", "kind", "judge", "value", "std", "n", "unscored", "ci_low", "ci_high", "reason")
SAMPLE_COLUMNS = ("run_id", "task", "unit", "sample_id", "metric", "question", "answer", "score", "unscored_reason",
                  "empty_answer", "answer_error")
JUDGMENT_COLUMNS = ("run_id", "task", "unit", "sample_id", "judge", "order", "reply", "score", "outcome", "unscored_reason")
RUN_COLUMNS = ("run_id", "model", "judges", "protocol", "config_hash", "date", "smoke_judge", *METRIC_COLUMNS, "path")


def judge_column(label: str, field: str) -> str:
    """The samples-frame column of one judge's field: `judge[gpt-4o].reply`."""
    return f"judge[{label}].{field}"


def _ci(summary: Mapping[str, Any]) -> tuple[Any, Any]:
    ci = summary.get("ci95")
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _metric_row(task: str, metric: str, summary: Mapping[str, Any], entry: Mapping[str, Any], judge: str | None) -> dict[str, Any]:
    low, high = _ci(summary)
    return {
        "task": task, "metric": metric, "name": (entry.get("metric_names") or {}).get(metric, metric),
        "kind": (entry.get("metric_kinds") or {}).get(metric), "judge": judge,
        "value": summary.get("mean"), "std": summary.get("std"), "n": summary.get("n"),
        "unscored": summary.get("n_unscored"), "ci_low": low, "ci_high": high, "reason": summary.get("reason"),
    }


def _key_judge(metric: str, judges: Sequence[str]) -> str | None:
    # RoleBench with several judges keys each judge's win rate as `win_rate[label]`.
    for label in judges:
        if metric.endswith(f"[{label}]"):
            return label
    return None


def metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of `metrics_frame`, for callers that add columns (load_runs)."""
    rows = []
    for task, entry in (results.get("tasks") or {}).items():
        judges = [str(j) for j in entry.get("judges") or []]
        for metric, summary in (entry.get("metrics") or {}).items():
            rows.append(_metric_row(task, metric, summary or {}, entry, _key_judge(metric, judges)))
        for label, part in (entry.get("per_judge") or {}).items():
            for metric, summary in (part.get("metrics") or {}).items():
                rows.append(_metric_row(task, metric, summary or {}, entry, str(label)))
    return rows


def metrics_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per task x metric [x judge] of a results.json document."""
    return pd.DataFrame(metric_rows(results), columns=list(METRIC_COLUMNS))


def _judgment_list(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    judgments = record.get("judgments") or []
    if isinstance(judgments, Mapping):
        judgments = [judgments]
    return [j for j in judgments if isinstance(j, Mapping)]


def _judgment_rows(run_id: str, record: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for j in _judgment_list(record):
        label = str(j.get("judge", "?"))
        yield {
            "run_id": run_id, "task": record.get("task"), "unit": record.get("unit"),
            "sample_id": record.get("sample_id"), "judge": label, "order": j.get("order"), "reply": j.get("reply"),
            "score": j.get("score"),
            # One order's parsed outcome (RoleBench); the item's combined verdict is the samples
            # frame's judge[L].verdict.
            "outcome": j.get("outcome"),
            "unscored_reason": j.get("unscored_reason", j.get("reason")),
        }


def _joined_replies(judgments: Sequence[Mapping[str, Any]]) -> str | None:
    if not judgments:
        return None
    if len(judgments) == 1:
        return judgments[0].get("reply")
    return "\n\n".join(f"[order {j.get('order', i + 1)}]\n{j.get('reply') or ''}" for i, j in enumerate(judgments))


def question_text(record: Mapping[str, Any]) -> str | None:
    """The record's `question`; for tasks without one (plugins), the last user message of its prompt."""
    if record.get("question") is not None:
        return record.get("question")
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return message.get("content")
    return None


def sample_row(run_id: str, record: Mapping[str, Any], judges: Sequence[str]) -> dict[str, Any]:
    """One samples-frame row of one samples.jsonl record (`judges`: the task's judge labels)."""
    metrics = record.get("metrics")
    row: dict[str, Any] = {
        "run_id": run_id, "task": record.get("task"), "unit": record.get("unit"), "sample_id": record.get("sample_id"),
        "metric": record.get("metric", ",".join(metrics) if isinstance(metrics, list) else metrics),
        "question": question_text(record),
        "answer": record.get("answer"), "score": record.get("score"),
        "unscored_reason": record.get("unscored_reason"), "empty_answer": record.get("empty_answer"),
        "answer_error": record.get("answer_error"),
    }
    for metric, value in (record.get("scores") or {}).items():
        row[f"score[{metric}]"] = value
    by_judge: dict[str, list[Mapping[str, Any]]] = {label: [] for label in judges}
    for j in _judgment_list(record):
        by_judge.setdefault(str(j.get("judge", "?")), []).append(j)
    verdicts = record.get("verdicts")
    for label, items in by_judge.items():
        row[judge_column(label, "reply")] = _joined_replies(items)
        if isinstance(verdicts, Mapping):
            verdict = verdicts.get(label) or {}
            row[judge_column(label, "verdict")] = verdict.get("outcome")
            row[judge_column(label, "unscored_reason")] = verdict.get("reason")
        else:
            row[judge_column(label, "score")] = items[0].get("score") if len(items) == 1 else None
            row[judge_column(label, "unscored_reason")] = items[0].get("unscored_reason") if len(items) == 1 else None
    return row


def _task_judges(results: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: [str(j) for j in entry.get("judges") or []] for name, entry in (results.get("tasks") or {}).items()}


def _records(run_path: Path) -> Iterator[dict[str, Any]]:
    # A missing or corrupted samples file is bad input (exit 2) naming the file, not a traceback.
    try:
        yield from iter_samples(run_path)
    except FileNotFoundError:
        raise UsageError(f"{Path(run_path) / rd.SAMPLES} is missing: the run has no per-sample records.") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def samples_frame(run_path: Path, results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per sample of the run at `run_path` (columns: module docstring)."""
    run_id = str(results.get("run_id") or Path(run_path).name)
    judges = _task_judges(results)
    rows = [sample_row(run_id, record, judges.get(str(record.get("task")), [])) for record in _records(run_path)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return frame


def judgments_frame(run_path: Path, results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per judge reply to a sample of the run at `run_path`."""
    run_id = str(results.get("run_id") or Path(run_path).name)
    rows = [row for record in _records(run_path) for row in _judgment_rows(run_id, record)]
    return pd.DataFrame(rows, columns=list(JUDGMENT_COLUMNS))


def _date(path: Path) -> str:
    # The manifest records no time; results.json is (re)written when the run finishes.
    stamp = (path / rd.RESULTS).stat().st_mtime
    return _dt.datetime.fromtimestamp(stamp, _dt.timezone.utc).replace(microsecond=0).isoformat()


def run_rows(path: Path, results: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The tidy rows of one run: its metric rows with the run's columns in front."""
    entries = results.get("tasks") or {}
    head = {
        "run_id": str(results.get("run_id") or path.name),
        "model": (results.get("model") or {}).get("label"),
        "config_hash": results.get("config_hash"),
        "date": _date(path),
        "smoke_judge": bool(results.get("smoke_judge")),
    }
    for row in metric_rows(results):
        entry = entries.get(row["task"]) or {}
        yield {**head, "judges": "+".join(str(j) for j in entry.get("judges") or []),
               "protocol": entry.get("protocol"), **row, "path": str(path)}


def runs_frame(results_dir: Path) -> pd.DataFrame:
    """One row per run x task x metric [x judge] of every finished run under `results_dir`.

    Runs still running or interrupted (no results.json) are left out; an unreadable results.json
    raises the UsageError naming it.
    """
    rows = []
    for path in rd.find_runs(Path(results_dir)):
        if (path / rd.RESULTS).is_file():
            rows.extend(run_rows(path, rd.read_json(path / rd.RESULTS, "run results")))
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))
