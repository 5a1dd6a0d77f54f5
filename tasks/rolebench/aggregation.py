"""RoleBench results: ROUGE-L summaries per metric, their avg, and win-rate summaries per judge.

Every summary has the shape of `rolebench_eval.analysis.statistics.summarize` (mean, std, n, n_unscored,
ci95); a metric that cannot be computed is `{"mean": None, ..., "reason": "not computed: ..."}`,
and a computed one may carry a `reason` that the report shows as its note.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from rolebench_eval.judges.pairwise_ranking import ItemVerdict, WinRateSummary
from rolebench_eval.analysis.statistics import summarize

ROUGE_METRICS: tuple[str, ...] = ("CUS", "RAW", "SPE")  # the RoleLLM tables' column order
AVG = "avg"
WIN_RATE = "win_rate"
WIN_RATE_TIE_ADJUSTED = "win_rate_tie_adjusted"
# Per-item values of the two win-rate metrics: their means are the plain win rate (wins / n) and
# the tie-adjusted win rate ((wins + ties / 2) / n).
WIN_VALUES = {"win": 1.0, "tie": 0.0, "loss": 0.0}
TIE_ADJUSTED_VALUES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def not_computed(reason: str) -> dict[str, Any]:
    return {"mean": None, "std": None, "n": 0, "n_unscored": 0, "ci95": None, "reason": f"not computed: {reason}"}


def missing_reason(files: Iterable[str]) -> str:
    return "missing " + ", ".join(files)


def rouge_summary(values: Sequence[float], n_unscored: int, note: str | None = None) -> dict[str, Any]:
    summary = summarize(values, n_unscored)
    if note:
        summary["reason"] = note
    return summary


def average(summaries: dict[str, dict[str, Any]], missing_files: dict[str, Sequence[str]]) -> dict[str, Any]:
    """avg: the mean of the CUS, RAW and SPE means, only when all three are computed.

    `missing_files`: metric -> the files it lacks, named in the reason when avg cannot be computed.
    """
    absent = [m for m in ROUGE_METRICS if summaries.get(m, {}).get("mean") is None]
    if absent:
        files = list(dict.fromkeys(f for m in absent for f in missing_files.get(m, ())))
        others = [m for m in absent if not missing_files.get(m)]
        reason = f"needs CUS, RAW and SPE; {', '.join(absent)} not computed"
        if files:
            reason += f" (missing {', '.join(files)})"
        if others:
            reason += f" ({', '.join(others)}: no scored item)"
        return not_computed(reason)
    means = [summaries[m]["mean"] for m in ROUGE_METRICS]
    return {
        "mean": sum(means) / len(means),
        "std": None,
        "n": len(means),
        "n_unscored": 0,
        "ci95": None,
        "reason": "mean of the CUS, RAW and SPE means (n = metrics, no per-item values)",
    }


def win_rate_metrics(
    verdicts: Sequence[ItemVerdict], summary: WinRateSummary, skipped_reasons: dict[str, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(win rate, tie-adjusted win rate) summaries of one judge over the judged items."""
    scored = [v.outcome for v in verdicts if v.outcome != "unscored"]
    if summary.n == 0:
        if not verdicts and skipped_reasons:
            reason = "no item has a RoleGPT baseline answer (" + "; ".join(
                f"{count} item(s): {why}" for why, count in skipped_reasons.items()
            ) + ")"
        elif verdicts:
            reason = f"no judgment could be scored ({summary.n_unscored} unscored: " + "; ".join(
                f"{count}x {why}" for why, count in summary.unscored_reasons.items()
            ) + ")"
        else:
            reason = "no items"
        plain, adjusted = not_computed(reason), not_computed(reason)
        plain["n_unscored"] = adjusted["n_unscored"] = summary.n_unscored
        return plain, adjusted
    note = (
        f"{summary.wins} won, {summary.ties} tied, {summary.losses} lost; "
        f"{summary.inconsistent} inconsistent ({100 * (summary.inconsistent_share or 0):.1f}%); "
        f"{summary.n_unscored} unscored; {summary.n_skipped_no_baseline} without baseline skipped"
    )
    plain = summarize([WIN_VALUES[o] for o in scored], summary.n_unscored)
    adjusted = summarize([TIE_ADJUSTED_VALUES[o] for o in scored], summary.n_unscored)
    plain["reason"] = note
    adjusted["reason"] = note
    return plain, adjusted


def win_rate_details(summary: WinRateSummary, skipped_reasons: dict[str, int]) -> dict[str, Any]:
    details = asdict(summary)
    details["skipped_reasons"] = dict(skipped_reasons)
    return details


def item_counts(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Generations: scored when the answer exists (every ROUGE metric of the item is then scored)."""
    reasons: dict[str, int] = {}
    for record in records:
        if record["unscored_reason"]:
            reasons[record["unscored_reason"]] = reasons.get(record["unscored_reason"], 0) + 1
    per_metric = {}
    for metric in ROUGE_METRICS:
        with_metric = [r for r in records if metric in r["scores"]]
        scored = sum(1 for r in with_metric if r["scores"][metric] is not None)
        per_metric[metric] = {"n": len(with_metric), "n_scored": scored, "n_unscored": len(with_metric) - scored}
    n_unscored = sum(reasons.values())
    return {
        "n": len(records),
        "n_scored": len(records) - n_unscored,
        "n_unscored": n_unscored,
        "unscored_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "per_metric": per_metric,
    }


def judgment_counts(verdicts: dict[str, Sequence[ItemVerdict]]) -> dict[str, Any]:
    """Win-rate verdicts per judge and in all: judged, scored, unscored with every reason.

    The items line shows these beside the generations, so an unscored judgment is never hidden
    behind a fully scored ROUGE count.
    """
    per_judge: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}
    for label, judged in verdicts.items():
        own: dict[str, int] = {}
        for verdict in judged:
            if verdict.outcome == "unscored":
                why = verdict.reason or "unknown"
                own[why] = own.get(why, 0) + 1
                reasons[why] = reasons.get(why, 0) + 1
        unscored = sum(own.values())
        per_judge[label] = {"n": len(judged), "n_scored": len(judged) - unscored, "n_unscored": unscored,
                            "unscored_reasons": dict(sorted(own.items(), key=lambda kv: -kv[1]))}
    n = sum(j["n"] for j in per_judge.values())
    n_unscored = sum(reasons.values())
    return {
        "n": n,
        "n_scored": n - n_unscored,
        "n_unscored": n_unscored,
        "unscored_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "per_judge": per_judge,
    }
