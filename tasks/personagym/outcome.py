"""PersonaGym: what the judge is given, and the records and results built from its replies.

Two unscored policies meet here (see aggregation.py). Under `exclude` a failed or unusable call
(answer, score examples, judge) leaves its questions unscored with the reason, and nothing is
judged on its behalf. Under `reference-zero` the reference code's behaviour is reproduced: a
failed answer is judged as the reply `Error`, failed score examples are delivered as the
processed form of `Error` (an empty block), a failed judge call is the reply `Error` (batch
score 0). Records never carry a score for such a question under either policy; the substitutions
are flagged in each record and counted in the results, so a reference-zero number stays traceable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rolebench_eval.judges.rubric_judge import (
    REFERENCE_ERROR_TEXT,
    examples_reply_problem,
    parse_grading_reply,
    process_examples,
    reference_batch_score,
)
from rolebench_eval.record_columns import ColumnRecords
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.running.call_refs import SAMPLES_SCHEMA, CallRef, Marked, marks_of
from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, ModelCall, Sample

from . import aggregation

SUBSTITUTED_ANSWER = f"answer judged as {REFERENCE_ERROR_TEXT!r} (reference-zero)"
SUBSTITUTED_EXAMPLES = f"score examples processed from {REFERENCE_ERROR_TEXT!r} (reference-zero)"
SUBSTITUTED_JUDGE = f"judge reply taken as {REFERENCE_ERROR_TEXT!r} (reference-zero)"


def is_empty_answer(answer: Completion) -> bool:
    """A successful answer with no text: judged as the model's answer, but flagged and counted."""
    return answer.ok and not (answer.text or "").strip()


def judged_answer(answer: Completion, reference: bool) -> str | None:
    """The response text the judge grades: the answer, or (reference-zero only) `Error`."""
    if answer.ok:
        return answer.text or ""
    return REFERENCE_ERROR_TEXT if reference else None


def deliver_examples(
    groups: Sequence[Sequence[int]],
    calls: Sequence[ModelCall],
    replies: Sequence[Completion],
    *,
    character_indexing: bool,
    reference: bool,
) -> tuple[dict[int, str | None], dict[int, dict[str, Any]]]:
    """The examples block each question is judged with (None: not judged), and its record info.

    A reply that is ok but processes to nothing (stored before reply checks existed, or a runner
    that did not apply `ModelCall.check`) is as unusable as a failed call: under `exclude` it is
    never judged, since grading against an empty block would produce a score from nothing.
    """
    examples: dict[int, str | None] = {}
    info: dict[int, dict[str, Any]] = {}
    for group, call, reply in zip(groups, calls, replies):
        problem = reply.error if not reply.ok else examples_reply_problem(reply.text or "")
        substituted = reference and not reply.ok
        if problem is None or reference:
            processed: str | None = process_examples(
                REFERENCE_ERROR_TEXT if substituted else (reply.text or "")
            )
        else:
            processed = None
        for position, index in enumerate(group):
            if processed is None:
                examples[index] = None
            elif character_indexing:
                examples[index] = processed[position] if position < len(processed) else ""
            else:
                examples[index] = processed
            info[index] = Marked({
                "prompt": call.request.messages_json(),
                "reply": reply.text,
                "error": reply.error,
                "unusable_reason": problem,
                "processed": processed,
                "delivered": examples[index],
            })
            if reference:
                info[index]["substituted_error_text"] = substituted
            # The prompt, the reply and (when made from the reply) the processed block are the
            # batch's call's texts: samples.jsonl refers to the call (call_refs.py); `delivered`
            # is the question's own segment and stays in its record.
            marks = {
                ("prompt",): CallRef(call.model, call.request, reply, "prompt"),
                ("reply",): CallRef(call.model, call.request, reply, "reply"),
            }
            if processed is not None and not substituted:
                marks[("processed",)] = CallRef(call.model, call.request, reply, "reply", "personagym_examples")
            info[index].call_refs = marks
    return examples, info


def collect_judgments(
    samples: Sequence[Sample],
    graded: Sequence[Sequence[int]],
    judges: Sequence[JudgeSpec],
    replies: Sequence[Completion],
    reference: bool,
    sent: Sequence[ChatRequest] | None = None,
    first_batch: int = 0,
) -> tuple[dict[int, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Per judged sample its judges' verdicts (label-matched segments; a sample of no batch in
    `graded` has no entry), and per batch the reference arithmetic's score of each judge
    (positional segments, failures as `Error`). With the request `sent` for each reply, each
    verdict's reply is marked as its call's text (call_refs.py). Batches are numbered from
    `first_batch` (the task's judged batches before these)."""
    judgments: dict[int, list[dict[str, Any]]] = {i: [] for batch in graded for i in batch}
    reference_batches = []
    reply_iter = iter(replies)
    sent_iter = iter(sent or ())
    for batch_number, batch in enumerate(graded, start=first_batch):
        reference_scores = {}
        for judge in judges:
            reply = next(reply_iter)
            request = next(sent_iter, None)
            parsed = parse_grading_reply(reply.text or "", len(batch)) if reply.ok else None
            reference_scores[judge.label] = reference_batch_score(
                reply.text if reply.ok else REFERENCE_ERROR_TEXT
            )
            for position, index in enumerate(batch):
                judgment = Marked({
                    "judge": judge.label,
                    "batch": batch_number,
                    "batch_position": position,
                    "batch_size": len(batch),
                    "reply": reply.text,
                    "score": parsed[position].score if parsed else None,
                    "unscored_reason": (
                        parsed[position].unscored_reason
                        if parsed
                        else f"judge call failed: {reply.error}"
                    ),
                    "usage": {
                        "prompt_tokens": reply.usage.prompt_tokens,
                        "completion_tokens": reply.usage.completion_tokens,
                    },
                })
                if reference:
                    judgment["reference_batch_score"] = reference_scores[judge.label]
                    judgment["substituted_error_text"] = not reply.ok
                if request is not None:
                    judgment.call_refs = {("reply",): CallRef(judge.role, request, reply, "reply")}
                judgments[index].append(judgment)
        first = samples[batch[0]]
        reference_batches.append(
            {"unit": first.unit, "metric": first.fields["metric"], "reference_scores": reference_scores}
        )
    return judgments, reference_batches


def build_records(
    task_name: str,
    samples: Sequence[Sample],
    answers: Mapping[int, Completion] | Sequence[Completion],
    judgments: Mapping[int, list[dict[str, Any]]],
    example_info: dict[int, dict[str, Any]],
    grading_prompts: dict[int, list[dict[str, str]]],
    generation_request: Callable[[Sample], ChatRequest],
    reference: bool,
    grading_calls: dict[int, CallRef] | None = None,
    indices: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One record per sample (of `indices` only, when given: one judge batch's questions). Texts
    of calls are marked (`Marked.call_refs`, call_refs.py) so that samples.jsonl refers to the
    calls files for them: the prompt, the score examples' prompt, reply and processed block, the
    judge prompt (`grading_calls`: the call of one judge of the question's batch) and each judge's
    reply."""
    records = []
    for index in range(len(samples)) if indices is None else indices:
        sample = samples[index]
        answer = answers[index]
        examples = example_info.get(index)
        request = generation_request(sample)
        own_judgments = judgments.get(index, [])
        marks: dict[tuple[str | int, ...], CallRef] = {("prompt",): CallRef(MODEL_ROLE, request, answer, "prompt")}
        marks.update({("score_examples", *path): ref for path, ref in marks_of(examples).items()})
        for position, judgment in enumerate(own_judgments):
            marks.update({("judgments", position, *path): ref for path, ref in marks_of(judgment).items()})
        if grading_calls is not None and index in grading_calls:
            marks[("judge_prompt",)] = grading_calls[index]
        score, reason = aggregation.question_score(own_judgments)
        substitutions = []
        # A question whose answer or examples failed never carries a score, even where the
        # reference-zero arithmetic judged a stand-in for it.
        if not answer.ok:
            score, reason = None, f"generation failed: {answer.error}"
            if reference:
                substitutions.append(SUBSTITUTED_ANSWER)
        if examples is None:
            reason = reason or "not judged"
        elif examples["unusable_reason"] is not None:
            if answer.ok:
                failed = examples["error"] is not None
                kind = "call failed" if failed else "reply unusable"
                score, reason = None, f"score examples {kind}: {examples['unusable_reason']}"
            if reference and examples.get("substituted_error_text"):
                substitutions.append(SUBSTITUTED_EXAMPLES)
        if reference and any(j.get("substituted_error_text") for j in own_judgments):
            substitutions.append(SUBSTITUTED_JUDGE)
        record = Marked({
            "schema": SAMPLES_SCHEMA,
            "task": task_name,
            "sample_id": sample.sample_id,
            "unit": sample.unit,
            **{k: v for k, v in sample.fields.items() if k != "persona"},
            "prompt": request.messages_json(),
            "answer": answer.text,
            "answer_error": answer.error,
            "empty_answer": is_empty_answer(answer),
            "finish_reason": answer.finish_reason,
            "answer_usage": {
                "prompt_tokens": answer.usage.prompt_tokens,
                "completion_tokens": answer.usage.completion_tokens,
            },
            "answer_notes": list(answer.notes),
            "score_examples": examples,
            "judge_prompt": grading_prompts.get(index),
            "judgments": own_judgments,
            "score": score,
            "unscored_reason": None if score is not None else reason,
        }, call_refs=marks)
        if reference:
            record["reference_substitutions"] = substitutions
        records.append(record)
    return records


# What the results (`task_results`) and the reliability figures (judge_reliability.py) read of a
# record, of its score examples and of each judgment: all the rest is in samples.jsonl. Of the
# answer only its length is read (the length-bias figure), as `answer_chars`.
_KEPT_FIELDS = ("task", "sample_id", "unit", "metric", "score", "unscored_reason", "empty_answer",
                "answer_chars", "answer_error", "score_examples", "reference_substitutions")
_KEPT_EXAMPLES_FIELDS = ("error", "unusable_reason", "substituted_error_text")
_KEPT_JUDGMENT_FIELDS = ("judge", "batch_position", "score", "unscored_reason", "substituted_error_text",
                         "reference_batch_score")


def kept_records() -> ColumnRecords:
    """Where a streamed run keeps each sample's record for its results, until the last job ends:
    the fields above, in columns (record_columns.py), without the texts of calls (prompts, score
    examples, judge prompt and replies) or the answer's text, which samples.jsonl has."""
    return ColumnRecords(_KEPT_FIELDS, nested={"score_examples": _KEPT_EXAMPLES_FIELDS},
                         listed={"judgments": _KEPT_JUDGMENT_FIELDS})


def keep(records: Sequence[Mapping[str, Any]], into: ColumnRecords) -> None:
    """Add full records to `kept_records()`: their answers' texts become their lengths."""
    for record in records:
        answer = record["answer"]
        into.append(record, {"answer_chars": len(answer) if isinstance(answer, str) else None})


def upstream_failure(record: dict[str, Any]) -> bool:
    """Whether the question's answer or score examples failed (then no judge's verdict counts)."""
    examples = record["score_examples"]
    # A kept record has the answer's length instead of its text (`keep`), None for no answer.
    answer = record["answer_chars"] if "answer_chars" in record else record["answer"]
    answer_failed = answer is None or record["answer_error"] is not None
    return answer_failed or bool(examples and examples["unusable_reason"])


def task_results(
    records: list[dict[str, Any]],
    reference_batches: list[dict[str, Any]],
    labels: Sequence[str],
    policy: str,
    metric_names: dict[str, str],
) -> dict[str, Any]:
    """The task's results section; overall and per judge under the same unscored policy."""

    def per_persona(judge: str | None, scored: list[dict[str, Any]]) -> dict[str, Any]:
        if policy == "reference-zero":
            return aggregation.persona_scores_reference(reference_batches, judge)
        return aggregation.persona_scores_exclude(scored)

    overall = per_persona(None, records)
    items = aggregation.item_counts(records)
    if policy == "reference-zero":
        items["reference_substitutions"] = reference_substitution_counts(records, reference_batches)
    results: dict[str, Any] = {
        "metrics": aggregation.summarize_personas(overall),
        "metric_names": metric_names,
        "items": items,
        "per_unit": overall,
    }
    if len(labels) > 1:
        results["per_judge"] = {}
        for label in labels:
            single = [
                r
                if upstream_failure(r)
                else {**r, "score": s, "unscored_reason": why}
                for r in records
                for s, why in [
                    aggregation.question_score([j for j in r["judgments"] if j["judge"] == label])
                ]
            ]
            results["per_judge"][label] = {
                "metrics": aggregation.summarize_personas(per_persona(label, single)),
                "items": aggregation.item_counts(single),
            }
        results["judge_agreement"] = aggregation.judge_agreement(records, labels)
    return results


def reference_substitution_counts(
    records: Sequence[dict[str, Any]], reference_batches: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """How many stand-ins for failed calls the reference-zero numbers contain."""
    subs = [s for r in records for s in r.get("reference_substitutions", ())]
    failed_judge_calls = sum(
        1
        for r in records
        for j in r["judgments"]
        if j.get("substituted_error_text") and j["batch_position"] == 0
    )
    return {
        "answers_judged_as_error": subs.count(SUBSTITUTED_ANSWER),
        "score_examples_from_error": subs.count(SUBSTITUTED_EXAMPLES),
        "judge_calls_as_error": failed_judge_calls,
        "judge_batches": len(reference_batches),
    }
