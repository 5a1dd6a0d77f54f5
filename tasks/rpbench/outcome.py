"""An RPBench run's records and numbers from its dialogues (`RPBenchTask.finish`).

Win rate, as the reference computes it: pooled over judged rounds (win 1, tie ½, loss 0; the
reference has no ties, its judge always picks a slot), here over the scored rounds of the scored
dialogues. Its 95% CI is a percentile bootstrap over dialogues (the units): dialogues are resampled
with their rounds, and the pooled rate recomputed. Per dialogue (per_unit, for paired comparison):
the share of its scored rounds won. A dialogue stopped by a failed call is unscored as a whole (its
rounds are kept in the record); a round without a verdict is an unscored round, counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rolebench_eval.analysis.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, bootstrap_batch
from rolebench_eval.task_api import Sample, TaskOutcome

from .dialogue import DialogueResult
from .verdicts import VALUES

if TYPE_CHECKING:
    from .task import RPBenchTask


def _record(task: RPBenchTask, result: DialogueResult) -> dict[str, Any]:
    sample, row = result.sample, result.sample.fields["row"]
    scored = [r for r in result.rounds if r["verdict"] is not None]
    counts = Counter(r["verdict"] for r in scored)
    value = sum(VALUES[r["verdict"]] for r in scored) / len(scored) if scored else None
    reason = result.stop_reason
    if reason is None and not scored:
        why = Counter(r["unscored_reason"] for r in result.rounds)
        reason = "no judged round has a verdict" + (f" ({'; '.join(why)})" if why else "")
    if reason is not None:
        value = None
    profile = row["npc_profile"]
    return {
        "schema": 1,
        "task": task.name,
        "sample_id": sample.sample_id,
        "unit": sample.unit,
        "subset": task.subset,
        "npc": profile.get("name_text") or profile.get("name") if isinstance(profile, dict) else None,
        "judge": task.judge.label,
        "baseline": task.settings.baseline.label if task.settings.baseline else None,
        "judge_order": task.order_policy,
        "turns": result.turns,
        "rounds": result.rounds,
        "score": value,
        "unscored_reason": reason,
        "n_rounds": len(result.rounds),
        "n_scored_rounds": len(scored),
        "wins": counts["win"], "ties": counts["tie"], "losses": counts["loss"],
        "inconsistent": sum(1 for r in scored if r["inconsistent"]),
        "stopped": result.stop_reason is not None,  # a failed call ended it before its last round
        "ended_early": result.ended_early,
        "format_errors": dict(result.format_errors),
        "usage": result.usage,
        # judge_reliability's generic pairwise form: one entry per judgment (both per round under `both`).
        "pairwise_verdicts": [
            {"item": f"round {r['round']}", "judge": task.judge.label,
             "model_slot": 1 if j["model_slot"] == "model_a" else 2, "outcome": j["outcome"],
             "length_difference": r["length_difference"]}
            for r in result.rounds for j in r["judgments"]
        ],
    }


def pooled_win_rate(wins: Sequence[float], rounds: Sequence[int], n_unscored: int) -> dict[str, Any]:
    """The pooled rate sum(wins) / sum(rounds) over dialogues, with a bootstrap CI over dialogues."""
    w, n = np.asarray(wins, dtype=float), np.asarray(rounds, dtype=float)
    summary: dict[str, Any] = {"mean": None, "std": None, "n": int(w.size), "n_unscored": int(n_unscored),
                               "ci95": None, "n_rounds": int(n.sum())}
    if w.size == 0 or n.sum() == 0:
        return summary
    per_dialogue = w / n
    summary["mean"] = float(w.sum() / n.sum())
    summary["std"] = float(per_dialogue.std(ddof=0))
    if w.size >= 2 and np.ptp(per_dialogue) > 0:
        from scipy import stats

        result = stats.bootstrap(
            (w, n), lambda a, b, axis=-1: a.sum(axis=axis) / b.sum(axis=axis), paired=True, vectorized=True,
            n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
            batch=bootstrap_batch(w.size), rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
        summary["ci95"] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    elif w.size >= 2:
        summary["ci95"] = [summary["mean"], summary["mean"]]
    return summary


def _usage(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls and tokens per dialogue, by role (mean over the dialogues that ran to their end)."""
    complete = [r for r in records if not r["stopped"]]
    total: dict[str, dict[str, int]] = {}
    for record in records:
        for role, entry in record["usage"].items():
            into = total.setdefault(role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            for key, value in entry.items():
                into[key] += value
    per = {}
    if complete:
        for role in total:
            per[role] = {key: sum(r["usage"].get(role, {}).get(key, 0) for r in complete) / len(complete)
                         for key in ("calls", "prompt_tokens", "completion_tokens")}
    return {"total": total, "per_dialogue_mean": per, "n_dialogues": len(complete)}


def finish(task: RPBenchTask, samples: list[Sample], results: list[Any]) -> TaskOutcome:
    if len(results) != len(samples) or any(
        not isinstance(r, DialogueResult) or r.sample.sample_id != s.sample_id for s, r in zip(samples, results)
    ):
        raise ValueError(f"{task.name}: finish() needs one DialogueResult per sample, in jobs() order")
    records = [_record(task, result) for result in results]
    scored = [r for r in records if r["score"] is not None]
    unscored = [r for r in records if r["score"] is None]
    win_rate = pooled_win_rate(
        [r["wins"] + 0.5 * r["ties"] for r in scored], [r["n_scored_rounds"] for r in scored], len(unscored)
    )
    rounds = [x for r in scored for x in r["rounds"]]
    round_reasons = Counter(x["unscored_reason"] for x in rounds if x["verdict"] is None)
    both = task.order_policy == "both"
    scored_rounds = [x for x in rounds if x["verdict"] is not None]
    inconsistent = sum(1 for x in scored_rounds if x["inconsistent"])
    baseline = task.settings.baseline.label if task.settings.baseline else "baseline"
    # The report's note column (report.metric_rows shows "reason"): what the rate is pooled over.
    win_rate["reason"] = (
        f"pooled over {len(scored_rounds)} round(s) of {len(scored)} dialogue(s); judge_order {task.order_policy}"
        + (f"; {inconsistent} inconsistent (tie)" if both else "")
        + (f"; {len(rounds) - len(scored_rounds)} round(s) without a verdict" if len(rounds) > len(scored_rounds) else "")
    )
    warnings = []
    if unscored:
        warnings.append(f"{len(unscored)} of {len(records)} dialogue(s) unscored: "
                        + "; ".join(f"{n}x {why}" for why, n in Counter(r["unscored_reason"] for r in unscored).items()))
    results_section = {
        "metrics": {"win_rate": win_rate},
        "metric_names": {"win_rate": f"win rate vs {baseline}"},
        "primary_metric": "win_rate",
        "per_unit": {r["unit"]: {"win_rate": r["score"]} for r in records},
        "items": {
            "n": len(records),
            "n_scored": len(scored),
            "n_unscored": len(unscored),
            "unscored_reasons": dict(Counter(r["unscored_reason"] for r in unscored)),
        },
        "rounds": {
            "judged": len(rounds),
            "scored": len(scored_rounds),
            "wins": sum(1 for x in scored_rounds if x["verdict"] == "win"),
            "ties": sum(1 for x in scored_rounds if x["verdict"] == "tie"),
            "losses": sum(1 for x in scored_rounds if x["verdict"] == "loss"),
            "unscored": len(rounds) - len(scored_rounds),
            "unscored_reasons": dict(round_reasons),
            # Both orders only: the share of scored rounds whose two judgments chose different
            # answers (the judge followed the slot), each counted as a tie.
            "inconsistent": inconsistent if both else None,
            "inconsistency_rate": (inconsistent / len(scored_rounds) if scored_rounds else None) if both else None,
        },
        "dialogue": {
            "judge_order": task.order_policy,
            "rounds": task.rounds,
            "judge_plays_user": task.judge.label,
            "baseline": baseline,
            "ended_early": sum(1 for r in records if r["ended_early"]),
            "format_errors": {who: sum(r["format_errors"][who] for r in records) for who in ("model", "baseline")},
        },
        "cost": _usage(records),
    }
    return TaskOutcome(records, results_section, warnings)
