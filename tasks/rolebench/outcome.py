"""How a RoleBench run's per-item results become its records and results (`RoleBenchTask.finish`).

`finish` takes the `item_jobs.ItemResult` of every item (from the pipelined jobs or from `evaluate`'s
lockstep judging) and builds one record per item (its answer, ROUGE-L scores against each metric's
references, the judges' rankings and verdicts), then the results section: ROUGE-L CUS / RAW / SPE
and their average, each judge's win rate against the RoleGPT baseline with its verdict counts, the
item counts and the per-unit values. It is separate from task.py, which holds the task's data,
prompts and calls (its manifest is manifest.py): this module only reads the task's settings and data, makes no calls,
and is the part that changes when the records or the results' layout do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rolebench_eval.judges import pairwise_ranking as ranking
from rolebench_eval.requests import Completion
from rolebench_eval.running.call_refs import SAMPLES_SCHEMA, CallRef, Marked
from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, Sample, TaskOutcome

from . import aggregation, item_jobs, rouge_metrics
from .aggregation import AVG, ROUGE_METRICS, WIN_RATE, WIN_RATE_TIE_ADJUSTED

if TYPE_CHECKING:
    from .task import RoleBenchTask

METRIC_NAMES = {"CUS": "CUS", "RAW": "RAW", "SPE": "SPE", AVG: "avg"}


def _usage(completion: Completion) -> dict[str, int | None]:
    return {
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
    }


def _rouge(task: RoleBenchTask, answer: str, references: tuple[str, ...]) -> dict[str, Any]:
    per_reference = rouge_metrics.reference_scores(
        answer,
        references[:1] if task.reference_policy == "first" else references,
        language=task.language,
        tokenizer=task.tokenizer,
    )
    return {
        "score": rouge_metrics.combine_references(per_reference, task.reference_policy),
        "per_reference": per_reference,
    }


def finish(task: RoleBenchTask, samples: list[Sample], results: list[Any]) -> TaskOutcome:
    """Records, results and warnings of `task` from its items' `ItemResult`s (in `jobs` order)."""
    if len(results) != len(samples) or any(
        not isinstance(r, item_jobs.ItemResult) or r.sample_id != s.sample_id for s, r in zip(samples, results)
    ):
        raise ValueError(f"{task.name}: finish() needs one ItemResult per sample, in jobs() order")
    items = task.items_by_id()
    raw = task.raw_references()
    judges = task.settings.judges
    skipped = {index: r.skipped for index, r in enumerate(results) if r.skipped is not None}
    records = []
    verdicts: dict[str, list[ranking.ItemVerdict]] = {j.label: [] for j in judges}
    guide = getattr(task, "_guided", None)  # task.py: the ranking request a judge role is sent
    for index, (sample, result) in enumerate(zip(samples, results)):
        answer = result.answer
        item = items[sample.sample_id]
        references = {m: (raw[item.item_id] if m == "RAW" else item.references) for m in sample.fields["metrics"]}
        rouge: dict[str, Any] = {}
        scores: dict[str, float | None] = {}
        for metric, refs in references.items():
            if answer.ok:
                rouge[metric] = _rouge(task, answer.text or "", refs)
                scores[metric] = rouge[metric]["score"]
            else:
                scores[metric] = None
        baseline, _ = task.baseline(item)
        judgments: list[dict[str, Any]] = []
        generation = task.generation_request(sample)
        # Texts of calls, referred to in samples.jsonl rather than copied (call_refs.py).
        marks: dict[tuple[str | int, ...], CallRef] = {("prompt",): CallRef(MODEL_ROLE, generation, answer, "prompt")}
        item_verdicts: dict[str, dict[str, Any]] = {}
        reply_iter = iter(result.replies)
        for judge in judges:
            if result.skipped is not None:
                continue
            if result.plan is None:
                verdict = ranking.ItemVerdict("unscored", reason=f"generation failed: {answer.error}")
            else:
                parsed = []
                for request in result.plan:
                    reply = next(reply_iter)
                    single = ranking.verdict_from_completion(reply, request.model_label)
                    parsed.append(single)
                    # The request as sent (a guided judge's carries its regex): its call's key.
                    sent = guide(judge.role, request.request) if guide else request.request
                    marks[("judgments", len(judgments), "prompt")] = CallRef(judge.role, sent, reply, "prompt")
                    marks[("judgments", len(judgments), "reply")] = CallRef(judge.role, sent, reply, "reply")
                    judgments.append(
                        {
                            "judge": judge.label,
                            "order": request.order,
                            "model_label": request.model_label,
                            "prompt": request.request.messages_json(),
                            "reply": reply.text,
                            "error": reply.error,
                            "outcome": single.outcome,
                            "reason": single.reason,
                            "usage": _usage(reply),
                        }
                    )
                if len(parsed) == 2:
                    verdict = ranking.combine_orders(parsed[0], parsed[1])
                else:
                    verdict = ranking.single_order(parsed[0])
            verdicts[judge.label].append(verdict)
            item_verdicts[judge.label] = {
                "outcome": verdict.outcome,
                "inconsistent": verdict.inconsistent,
                "reason": verdict.reason,
            }
        records.append(
            Marked({
                "schema": SAMPLES_SCHEMA,
                "task": task.name,
                "sample_id": sample.sample_id,
                "unit": sample.unit,
                "item_id": item.item_id,
                **sample.fields,
                "prompt": generation.messages_json(),
                "answer": answer.text,
                "answer_error": answer.error,
                "finish_reason": answer.finish_reason,
                "answer_usage": _usage(answer),
                "answer_notes": list(answer.notes),
                # The model answered nothing, even when asked again: judged and scored as its
                # answer (ROUGE 0, the judge sees ""), and counted in items.empty_answers.
                "empty_answer": answer.ok and not (answer.text or "").strip(),
                "references": {m: list(r) for m, r in references.items()},
                "rouge": rouge,
                "scores": scores,
                "unscored_reason": None if answer.ok else f"generation failed: {answer.error}",
                "baseline_answer": baseline,
                "win_rate_skipped": result.skipped if judges else None,
                "judgments": judgments,
                "verdicts": item_verdicts,
            }, call_refs=marks)
        )
    return TaskOutcome(records, _results(task, records, verdicts, skipped), _all_warnings(task, records, skipped))


def _all_warnings(task: RoleBenchTask, records: list[dict[str, Any]], skipped: dict[int, str]) -> list[str]:
    warnings = list(task.warnings)
    if task.settings.judges and skipped:
        reasons = _reason_counts(skipped)
        warnings.append(
            f"win rate: {len(skipped)} of {len(records)} item(s) have no RoleGPT baseline answer "
            "and were skipped (" + "; ".join(f"{n}x {why}" for why, n in reasons.items()) + ")"
        )
    return warnings


def _reason_counts(skipped: dict[int, str]) -> dict[str, int]:
    """How many skipped items give each reason, in first-seen order."""
    reasons: dict[str, int] = {}
    for why in skipped.values():
        reasons[why] = reasons.get(why, 0) + 1
    return reasons


def _results(
    task: RoleBenchTask,
    records: list[dict[str, Any]],
    verdicts: dict[str, list[ranking.ItemVerdict]],
    skipped: dict[int, str],
) -> dict[str, Any]:
    metrics: dict[str, dict[str, Any]] = {}
    per_unit: dict[str, dict[str, Any]] = {r["item_id"]: dict(r["scores"]) for r in records}
    for metric in ROUGE_METRICS:
        metrics[metric] = _rouge_summary(task, metric, records)
    missing = {
        m: [task.relative(f) for f in files] for m, files in task.data.not_computable().items()
    }
    metrics[AVG] = aggregation.average(metrics, missing)
    names = dict(METRIC_NAMES)
    judges = task.settings.judges
    skipped_reasons = _reason_counts(skipped)
    details: dict[str, Any] = {}
    for judge in judges:
        summary = ranking.aggregate(verdicts[judge.label], n_skipped_no_baseline=len(skipped))
        plain, adjusted = aggregation.win_rate_metrics(verdicts[judge.label], summary, skipped_reasons)
        plain_key, adjusted_key = win_keys(judges, judge.label)
        metrics[plain_key], metrics[adjusted_key] = plain, adjusted
        suffix = f" [{judge.label}]" if len(judges) > 1 else ""
        names[plain_key] = f"win rate{suffix}"
        names[adjusted_key] = f"win rate, ties ½{suffix}"
        details[judge.label] = aggregation.win_rate_details(summary, skipped_reasons)
        for record in records:
            verdict = record["verdicts"].get(judge.label)
            if verdict is None:
                continue
            outcome = verdict["outcome"]
            per_unit[record["item_id"]][plain_key] = aggregation.WIN_VALUES.get(outcome)
            per_unit[record["item_id"]][adjusted_key] = aggregation.TIE_ADJUSTED_VALUES.get(outcome)
    results: dict[str, Any] = {
        "metrics": metrics,
        "metric_names": names,
        "items": _items(task, records, verdicts),
        "per_unit": per_unit,
        # The leaderboard sorts by this: the paper ranks models by win rate when judged.
        "primary_metric": win_keys(judges, judges[0].label)[0] if judges else "avg",
    }
    if judges:
        results["win_rate"] = {
            "order_policy": task.order_policy,
            "judge_template": task.judge_template,
            "judges": details,
        }
    return results


def _items(task: RoleBenchTask, records: list[dict[str, Any]], verdicts: dict[str, list[ranking.ItemVerdict]]) -> dict[str, Any]:
    items = aggregation.item_counts(records)
    items["empty_answers"] = sum(1 for r in records if r["empty_answer"])
    if task.settings.judges:
        items["judgments"] = aggregation.judgment_counts(verdicts)
    return items


def win_keys(judges: Sequence[JudgeSpec], label: str) -> tuple[str, str]:
    """The (win rate, tie-adjusted win rate) metric keys of judge `label`: bare with one judge."""
    if len(judges) > 1:
        return f"{WIN_RATE}[{label}]", f"{WIN_RATE_TIE_ADJUSTED}[{label}]"
    return WIN_RATE, WIN_RATE_TIE_ADJUSTED


def _rouge_summary(task: RoleBenchTask, metric: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    source = task.data.metrics[metric]
    if source.missing_files:
        return aggregation.not_computed(
            aggregation.missing_reason(task.relative(f) for f in source.missing_files)
        )
    with_metric = [r for r in records if metric in r["scores"]]
    values = [r["scores"][metric] for r in with_metric if r["scores"][metric] is not None]
    note = None
    if metric == "RAW":
        general = [r for r in records if r["subset"] == "general"]
        unmatched = len(general) - len(with_metric)
        if unmatched:
            note = (
                f"{unmatched} of {len(general)} general item(s) have no original answer in "
                f"{task.layout.raw_file}: left out"
            )
    if not with_metric:
        if note:
            return aggregation.not_computed(note)
        subset = "role_specific" if metric == "SPE" else "general"
        return aggregation.not_computed(f"no items in {task.layout.test_file(subset)}")
    return aggregation.rouge_summary(values, len(with_metric) - len(values), note)
