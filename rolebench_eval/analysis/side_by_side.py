"""Two runs side by side, unit by unit: why a checkpoint got better or worse.

`unit_differences` lines up the per-unit values (personas, items) of two comparable runs for every
metric, as a DataFrame (`rbe compare A B --format csv`); `render_html` writes a self-contained page
(`rbe compare A B --html OUT`) with, per metric, the units whose values differ most, each with both
runs' answers, judge replies and scores, and a search box and filters.

Both go through `compare_runs.comparability_gate`: the same refusal of non-comparable runs as
`rbe compare`. Samples are read only through `run_samples.iter_samples`, and only those of the
units shown are kept in memory.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from rolebench_eval.analysis.frames import question_text
from rolebench_eval.analysis.compare_runs import comparability_gate, metric_catalogue, resolve_metric
from rolebench_eval.analysis.loaded_runs import LoadedRun
from rolebench_eval.analysis.paired_stats import VERDICT_SCORES
from rolebench_eval.analysis.run_samples import iter_samples
from rolebench_eval.errors import UsageError

DEFAULT_TOP = 10  # units shown per metric on the page
MAX_TEXT_CHARS = 20_000  # as html_report: one runaway reply must not make the page unusable
READY_MARKER = "rbe-side-by-side-ready"
DIFF_COLUMNS = ("run_a", "run_b", "task", "metric", "name", "kind", "unit", "value_a", "value_b", "diff", "abs_diff")


def _value(value: Any, kind: str) -> float:
    """A per-unit value as a number: verdicts as win 1, tie 0.5, loss 0 (paired_stats' coding)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return VERDICT_SCORES.get(value.strip().lower(), math.nan) if kind == "verdict" else math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def unit_differences(
    a: LoadedRun,
    b: LoadedRun,
    *,
    metrics: Sequence[str] | None = None,
    allow_mismatch: bool = False,
) -> pd.DataFrame:
    """Per metric and unit of the tasks both runs have: value in a, value in b, diff = b - a.

    Units scored in only one run are kept with diff NaN (a unit that became unscored is a finding
    too). Rows are in the runs' metric order; within a metric the largest |diff| first, then the
    unpaired units. Raises UsageError when the runs are not comparable (unless `allow_mismatch`).
    """
    tasks, _, _ = comparability_gate(a, b, allow_mismatch)
    catalogue = metric_catalogue(a.tasks, tasks)
    wanted = [resolve_metric(name, catalogue) for name in metrics] if metrics else list(catalogue)
    rows = []
    for qualified in wanted:
        task, metric = catalogue[qualified]
        ta, tb = a.tasks[task], b.tasks[task]
        kind = ta.metric_kinds.get(metric, "continuous")
        if metric not in tb.metric_kinds:
            continue
        units_a = ta.results.get("per_unit") or {}
        units_b = tb.results.get("per_unit") or {}
        block = []
        for unit in [*units_a, *(u for u in units_b if u not in units_a)]:
            va = _value((units_a.get(unit) or {}).get(metric), kind)
            vb = _value((units_b.get(unit) or {}).get(metric), kind)
            if math.isnan(va) and math.isnan(vb):
                continue
            diff = vb - va
            block.append({
                "run_a": a.run_id, "run_b": b.run_id, "task": task, "metric": qualified,
                "name": ta.metric_names.get(metric, metric), "kind": kind, "unit": str(unit),
                "value_a": va, "value_b": vb, "diff": diff, "abs_diff": abs(diff),
            })
        # Stable sort: ties keep the run's unit order, so the page and the CSV are reproducible.
        block.sort(key=lambda row: (math.isnan(row["diff"]), -row["abs_diff"] if not math.isnan(row["diff"]) else 0.0))
        rows.extend(block)
    return pd.DataFrame(rows, columns=list(DIFF_COLUMNS))


# --------------------------------------------------------------------------------------------------
# The page


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    if len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS] + f"\n… [{len(text) - MAX_TEXT_CHARS:,} more characters in samples.jsonl]"
    return text


def _score_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unscored"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _record_view(record: Mapping[str, Any]) -> dict[str, Any]:
    judgments = record.get("judgments") or []
    verdicts = record.get("verdicts") or {}
    replies = []
    for j in judgments if isinstance(judgments, list) else [judgments]:
        if not isinstance(j, Mapping):
            continue
        label = str(j.get("judge", "?"))
        score = j.get("score", j.get("outcome"))
        replies.append({
            "judge": label + (f" (order {j['order']})" if j.get("order") else ""),
            "score": _score_text(score),
            "reason": str(j.get("unscored_reason") or j.get("reason") or ""),
            "reply": _clip(j.get("reply")),
        })
    scores = record.get("scores")
    if isinstance(scores, Mapping):
        score = ", ".join(f"{k} {_score_text(v)}" for k, v in scores.items())
        score += "".join(f"; {label}: {(v or {}).get('outcome')}" for label, v in verdicts.items())
    else:
        score = _score_text(record.get("score"))
    return {
        "sample_id": str(record.get("sample_id", "")),
        "question": _clip(question_text(record)),
        "answer": _clip(record.get("answer")),
        "score": score,
        "reason": str(record.get("unscored_reason") or ""),
        "judgments": replies,
    }


def _matches(record: Mapping[str, Any], metric: str) -> bool:
    listed = record.get("metrics")
    return record.get("metric") == metric or (isinstance(listed, list) and metric in listed)


def _collect(run: LoadedRun, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """The records of the (task, unit) pairs shown, in file order; nothing else is kept."""
    found: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    if run.run_dir is None:
        return found  # a baseline file has no samples: the page says so
    try:
        for record in iter_samples(run.run_dir):
            key = (str(record.get("task")), str(record.get("unit")))
            if key in wanted:
                found.setdefault(key, []).append(record)
    except FileNotFoundError:
        pass
    return found


def _pairs(records_a: Sequence[Mapping[str, Any]], records_b: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The unit's samples of the metric (all of them for aggregates such as PersonaScore or a
    win rate over items), matched by sample id: one row per sample with both runs' views."""
    def relevant(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        chosen = [r for r in records if _matches(r, metric)]
        return chosen or list(records)

    left = {str(r.get("sample_id")): r for r in relevant(records_a)}
    right = {str(r.get("sample_id")): r for r in relevant(records_b)}
    rows = []
    for sample_id in [*left, *(s for s in right if s not in left)]:
        a, b = left.get(sample_id), right.get(sample_id)
        rows.append({"sample_id": sample_id, "a": _record_view(a) if a else None, "b": _record_view(b) if b else None})
    return rows


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rolebench_eval", "templates"),
        autoescape=True,  # answers and judge replies are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _stat_rows(comparison: Any) -> list[dict[str, str]]:
    if comparison is None:
        return []
    return [
        {"metric": m.metric, "n": str(m.n_paired), "a": f"{m.mean_a:.4f}", "b": f"{m.mean_b:.4f}", "diff": f"{m.diff:+.4f}",
         "ci": f"[{m.ci95[0]:+.4f}, {m.ci95[1]:+.4f}]", "p_adj": f"{m.p_adjusted:.4g}", "sig": "yes" if m.significant else "no"}
        for m in comparison.metrics
    ]


def render_html(
    a: LoadedRun,
    b: LoadedRun,
    *,
    metrics: Sequence[str] | None = None,
    top: int = DEFAULT_TOP,
    allow_mismatch: bool = False,
    comparison: Any = None,
) -> str:
    """The side-by-side page of run `b` against run `a` (`comparison`: the paired statistics to
    show at the top, a paired_stats.Comparison, when the caller computed them)."""
    if top < 1:
        raise UsageError("--top must be 1 or more")
    _, mismatches, shown_differences = comparability_gate(a, b, allow_mismatch)
    frame = unit_differences(a, b, metrics=metrics, allow_mismatch=allow_mismatch)
    paired = frame[frame["diff"].notna()]
    chosen = pd.concat([group.head(top) for _, group in paired.groupby("metric", sort=False)]) if not paired.empty else paired
    wanted = {(str(row.task), str(row.unit)) for row in chosen.itertuples()}
    samples_a, samples_b = _collect(a, wanted), _collect(b, wanted)
    sections = []
    for metric, group in chosen.groupby("metric", sort=False):
        units = []
        for row in group.itertuples():
            key = (str(row.task), str(row.unit))
            units.append({
                "unit": row.unit, "value_a": _score_text(row.value_a), "value_b": _score_text(row.value_b),
                "diff": f"{row.diff:+.4g}", "direction": "better" if row.diff > 0 else "worse" if row.diff < 0 else "same",
                "samples": _pairs(samples_a.get(key, []), samples_b.get(key, []), str(metric).split("/", 1)[1]),
            })
        first = group.iloc[0]
        n_paired = int((paired["metric"] == metric).sum())
        sections.append({"metric": metric, "name": first["name"], "kind": first["kind"], "n_paired": n_paired, "units": units})
    missing = [run.label for run in (a, b) if run.run_dir is None]
    return _environment().get_template("side_by_side.html.j2").render(
        title=f"{b.label} vs {a.label}: side by side",
        a={"label": a.label, "run_id": a.run_id}, b={"label": b.label, "run_id": b.run_id},
        mismatches=list(mismatches), shown_differences=list(shown_differences), sections=sections,
        stats=_stat_rows(comparison), top=top, missing_samples=missing,
        smoke=bool(a.results.get("smoke_judge") or b.results.get("smoke_judge")),
        generated=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        ready_marker=READY_MARKER,
    )


def write_html(a: LoadedRun, b: LoadedRun, output: Path, **options: Any) -> Path:
    """Render the page and write it to `output` (its folder is created)."""
    from rolebench_eval.running import run_dir as rd

    text = render_html(a, b, **options)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rd.write_text_atomic(output, text)
    return output
