"""PingPong records (one per dialogue: its transcript, calls and every judge's per-turn scores) and
the task's results.

Two views of the same judgments, both in results.json:

- `metrics` (the table, paired comparison): over dialogues, the units. A dialogue's criterion score
  is the mean over its turns, averaged over the judges that scored it without flagging a refusal
  (the reference's calc_metrics.py combines its two v2 judges with weights 0.5 / 0.5: equal weights
  here, for any number of judges); `final` is the mean of the three criteria. `refusal` is the share
  of the judges that scored the dialogue and flagged a refusal on any turn.
- `reference` (the reference's `save` arithmetic, per judge): a dialogue flagged as a refusal is
  left out; each criterion is the mean over all turns of the other dialogues pooled (the 8-turn
  situation weighs twice a 4-turn one); `final_score` is the mean of the criteria; `refusal_ratio`
  is refused dialogues over judged dialogues. `combined` averages the judges' numbers.

A dialogue that stopped (a failed or unusable turn), or that no judge could score, has no score and
carries its reason; it is counted, never scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import fmean
from typing import Any

from rolebench_eval.analysis.statistics import summarize
from rolebench_eval.task_api import JudgeSpec, Sample

from . import parsing
from .dialogue import DialogueResult

FINAL = "final"
REFUSAL = "refusal"
METRICS = (*parsing.CRITERIA, FINAL)
METRIC_NAMES = {
    "in_character": "In character",
    "entertaining": "Entertaining",
    "fluency": "Fluency",
    FINAL: "Final",
    REFUSAL: "Refusal rate",
}


def judgment(judge: JudgeSpec, reply: Any, n_turns: int) -> dict[str, Any]:
    """One judge's verdict on one dialogue, parsed (or unscored with the reason)."""
    entry: dict[str, Any] = {
        "judge": judge.label,
        "reply": reply.text,
        "error": reply.error,
        "attempts": reply.attempts,
        "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens},
        "turns": None,
        "is_refusal": None,
        "means": None,
        "final": None,
        "unscored_reason": None,
    }
    if not reply.ok:
        entry["unscored_reason"] = f"judge call failed: {reply.error}"
        return entry
    turns, problem = parsing.judge_scores(reply.text or "", n_turns)
    if turns is None:
        entry["unscored_reason"] = problem
        return entry
    entry["turns"] = [
        {"turn": t.turn, "is_refusal": t.is_refusal, **{f"{c}_score": t.scores[c] for c in parsing.CRITERIA},
         "explanations": t.explanations}
        for t in turns
    ]
    entry["is_refusal"] = any(t.is_refusal for t in turns)
    means = {c: fmean(t.scores[c] for t in turns) for c in parsing.CRITERIA}
    entry["means"] = means
    entry["final"] = fmean(means.values())
    return entry


def build_record(task_name: str, sample: Sample, result: DialogueResult, judges: Sequence[JudgeSpec]) -> dict[str, Any]:
    judged = result.failure is None and bool(judges)
    judgments = (
        [judgment(j, reply, result.n_turns) for j, reply in zip(judges, result.judge_replies, strict=True)]
        if judged
        else []
    )
    scored = [j for j in judgments if j["means"] is not None]
    counted = [j for j in scored if not j["is_refusal"]]
    scores: dict[str, float | None] = {m: None for m in METRICS}
    if counted:
        for criterion in parsing.CRITERIA:
            scores[criterion] = fmean(j["means"][criterion] for j in counted)
        scores[FINAL] = fmean(j["final"] for j in counted)
    reason = None
    if result.failure is not None:
        reason = result.failure
    elif not judges:
        reason = "not judged (no judge)"
    elif not scored:
        reason = "; ".join(sorted({j["unscored_reason"] for j in judgments}))
    elif not counted:
        reason = "refusal flagged by " + ", ".join(j["judge"] for j in scored) + " (left out, as the reference does)"
    return {
        "schema": 1,
        "task": task_name,
        "sample_id": sample.sample_id,
        "unit": sample.unit,
        **sample.fields,
        # The transcript in the dialogue tasks' common form (the HTML report shows it as a
        # conversation), and the same messages as the prompts showed them.
        "turns": [
            {"round": i // 2 + 1, "speaker": "user" if m["role"] == "user" else "model", "role": m["role"],
             "text": m["content"], "note": "interrogator" if m["role"] == "user" else "in character"}
            for i, m in enumerate(result.messages)
        ],
        "messages": result.messages,
        "n_turns_done": len(result.messages) // 2,
        "turn_calls": result.turn_calls,
        "failed_turn": result.failed_turn,
        "judge_prompt": result.judge_prompt,
        "judgments": judgments,
        "scores": scores,
        "refusal": (sum(1 for j in scored if j["is_refusal"]) / len(scored)) if scored else None,
        "score": scores[FINAL],
        "unscored_reason": reason if scores[FINAL] is None else None,
    }


def per_unit(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    return {r["unit"]: {**r["scores"], REFUSAL: r["refusal"]} for r in records}


def reference_scores(records: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """The reference's `save` arithmetic for one judge's verdicts."""
    pooled: dict[str, list[int]] = {c: [] for c in parsing.CRITERIA}
    judged = refused = 0
    for record in records:
        for entry in record["judgments"]:
            if entry["judge"] != label or entry["turns"] is None:
                continue
            judged += 1
            if entry["is_refusal"]:
                refused += 1
                continue
            for turn in entry["turns"]:
                for criterion in parsing.CRITERIA:
                    pooled[criterion].append(turn[f"{criterion}_score"])
    out: dict[str, Any] = {"n_dialogues": judged, "n_refusals": refused,
                           "refusal_ratio": refused / judged if judged else None}
    if pooled[parsing.CRITERIA[0]]:
        means = {c: fmean(v) for c, v in pooled.items()}
        out.update(means)
        out["final_score"] = fmean(means.values())
    else:
        out.update({c: None for c in parsing.CRITERIA})
        out["final_score"] = None
    return out


def task_results(records: Sequence[dict[str, Any]], judges: Sequence[JudgeSpec]) -> dict[str, Any]:
    units = per_unit(records)
    metrics = {}
    for metric in (*METRICS, REFUSAL):
        values = [row[metric] for row in units.values() if row[metric] is not None]
        metrics[metric] = summarize(values, len(units) - len(values))
    reasons = Counter(r["unscored_reason"] for r in records if r["score"] is None)
    per_judge = {j.label: reference_scores(records, j.label) for j in judges}
    keys = (*parsing.CRITERIA, "final_score", "refusal_ratio")
    combined = {
        key: (fmean(vals) if (vals := [v[key] for v in per_judge.values() if v[key] is not None]) else None)
        for key in keys
    }
    turns_done = [r["n_turns_done"] for r in records]
    return {
        "metrics": metrics,
        "metric_names": dict(METRIC_NAMES),
        "items": {
            "n": len(records),
            "n_scored": sum(1 for r in records if r["score"] is not None),
            "n_unscored": sum(reasons.values()),
            "unscored_reasons": dict(reasons.most_common()),
            "dialogues_stopped": sum(1 for r in records if r["failed_turn"] is not None),
            "turns_done": sum(turns_done),
            "refusals": sum(1 for r in records if r["refusal"]),
        },
        "per_unit": units,
        "reference": {"per_judge": per_judge, "combined": combined,
                      "weights": {j.label: 1 / len(judges) for j in judges} if judges else {}},
    }
