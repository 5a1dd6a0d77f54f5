"""PersonaGym scores per persona, and their summary over personas, under a named policy.

- `exclude` (default): a question the judge did not score (failed call, unparsed reply, score
  outside 1..5) is unscored with its reason and left out; a persona's task score is the mean of its
  scored questions (each the mean of the judges that scored it); its PersonaScore needs all five
  task scores. Unscored items and personas are counted in the results.
- `reference-zero`: the reference code's arithmetic, for reproducing published numbers only:
  unparsed segments and failed judge calls count 0, a batch scores the mean of its non-zero
  segment scores (0 if none), judges are averaged per batch, tasks per persona over batches. A
  failed answer is judged as the reply `Error` and failed score examples are delivered as the
  processed form of `Error` (an empty block), as the reference code does (see task.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from statistics import fmean
from typing import Any

from rolebench_eval.analysis.statistics import summarize

METRICS = ("EA", "TC", "LH", "PC", "AJ")
PERSONA_SCORE = "PersonaScore"
POLICIES = ("exclude", "reference-zero")


def question_score(judgments: Sequence[dict[str, Any]]) -> tuple[float | None, str | None]:
    """Combine the judges' scores of one question: their mean, or unscored with the reasons."""
    scores = [j["score"] for j in judgments if j["score"] is not None]
    if scores:
        return fmean(scores), None
    reasons = sorted({j["unscored_reason"] for j in judgments if j["unscored_reason"]})
    return None, "; ".join(reasons) or "not judged"


def persona_scores_exclude(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    by_unit: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    units: list[str] = []
    for record in records:
        if record["unit"] not in by_unit:
            units.append(record["unit"])
        bucket = by_unit[record["unit"]]
        bucket.setdefault(record["metric"], [])
        if record["score"] is not None:
            bucket[record["metric"]].append(record["score"])
    return {unit: _persona_row(by_unit[unit]) for unit in units}


def _persona_row(metric_scores: dict[str, list[float]]) -> dict[str, float | None]:
    row: dict[str, float | None] = {
        m: (fmean(metric_scores[m]) if metric_scores.get(m) else None) for m in METRICS
    }
    task_values = [row[m] for m in METRICS]
    row[PERSONA_SCORE] = (
        fmean(v for v in task_values if v is not None)
        if all(v is not None for v in task_values)
        else None
    )
    return row


def persona_scores_reference(
    batches: Sequence[dict[str, Any]], judge: str | None = None
) -> dict[str, dict[str, float | None]]:
    """`batches`: one entry per judge batch: unit, metric, and per judge label its reference
    batch score. Judges are averaged per batch; `judge` restricts the arithmetic to one judge."""
    by_unit: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    units: list[str] = []
    for batch in batches:
        if batch["unit"] not in by_unit:
            units.append(batch["unit"])
        scores = batch["reference_scores"]
        judge_scores = [scores[judge]] if judge is not None else list(scores.values())
        by_unit[batch["unit"]][batch["metric"]].append(fmean(judge_scores))
    return {unit: _persona_row(by_unit[unit]) for unit in units}


def summarize_personas(
    per_persona: dict[str, dict[str, float | None]],
) -> dict[str, dict[str, Any]]:
    summary = {}
    for metric in (*METRICS, PERSONA_SCORE):
        values = [row[metric] for row in per_persona.values() if row.get(metric) is not None]
        missing = sum(1 for row in per_persona.values() if row.get(metric) is None)
        summary[metric] = summarize(values, missing)
    return summary


def item_counts(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for record in records:
        if record["score"] is None:
            reasons[record["unscored_reason"] or "unknown"] += 1
    return {
        "n": len(records),
        "n_scored": sum(1 for r in records if r["score"] is not None),
        "n_unscored": sum(reasons.values()),
        "unscored_reasons": dict(reasons.most_common()),
        # Answers that stayed empty after the runner's retries: judged as the model's answer,
        # and counted so that a silent model is visible beside its scores.
        "empty_answers": sum(1 for r in records if r.get("empty_answer")),
    }


def judge_agreement(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Pairwise agreement of judges on the questions both scored."""
    from scipy import stats

    pairs = []
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            a, b = [], []
            for record in records:
                scores = {j["judge"]: j["score"] for j in record["judgments"]}
                if scores.get(first) is not None and scores.get(second) is not None:
                    a.append(scores[first])
                    b.append(scores[second])
            entry: dict[str, Any] = {"judges": [first, second], "n_both_scored": len(a)}
            if a:
                entry["exact_agreement"] = sum(x == y for x, y in zip(a, b)) / len(a)
                entry["mean_abs_difference"] = fmean(abs(x - y) for x, y in zip(a, b))
                entry["spearman"] = (
                    float(stats.spearmanr(a, b).statistic)
                    if len(set(a)) > 1 and len(set(b)) > 1
                    else None
                )
            pairs.append(entry)
    return {"pairs": pairs}
