"""The PersonaGym / PersonaGym-Light task: answers, score examples, rubric grading, aggregation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.errors import DataError, UsageError, unknown
from rolebench_eval.judges.rubric_judge import (
    RubricPrompts,
    grading_request,
    parse_grading_reply,
    process_examples,
    reference_batch_score,
    score_examples_request,
)
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.task_api import Evaluation, ModelCall, RunSettings, Sample, Task, TaskOutcome
from rolebench_eval.task_registry import TaskSpec

from . import aggregation
from .protocols import PROTOCOLS, Protocol
from .roleplay import TEMPLATES

DATA = Path(__file__).parent / "data"
# Data files name the second task "Toxicity"; the papers call it Toxicity Control (TC).
CATEGORIES = {
    "Expected Action": "EA",
    "Toxicity": "TC",
    "Linguistic Habits": "LH",
    "Persona Consistency": "PC",
    "Action Justification": "AJ",
}
METRIC_NAMES = {
    "EA": "Expected Action",
    "TC": "Toxicity Control",
    "LH": "Linguistic Habits",
    "PC": "Persona Consistency",
    "AJ": "Action Justification",
}


def make_task(spec: TaskSpec, settings: RunSettings) -> PersonaGymTask:
    return PersonaGymTask(spec, settings)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read PersonaGym data file {path}: {exc}") from exc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PersonaGymTask(Task):
    def __init__(self, spec: TaskSpec, settings: RunSettings):
        super().__init__(spec.name, spec.version, settings)
        self.light = spec.config["questions"].endswith("personagym-light")
        self.questions_dir = DATA / "questions" / spec.config["questions"]
        protocol_name = settings.protocol or spec.config["default_protocol"]
        if protocol_name not in PROTOCOLS:
            raise unknown("protocol", protocol_name, PROTOCOLS)
        self.protocol: Protocol = PROTOCOLS[protocol_name]
        template_name = settings.roleplay_template or "personagym"
        if template_name not in TEMPLATES:
            raise unknown("role-play template", template_name, TEMPLATES)
        self.template = TEMPLATES[template_name]
        if settings.unscored_policy not in aggregation.POLICIES:
            raise unknown("unscored policy", settings.unscored_policy, aggregation.POLICIES)
        if settings.greedy_top_p not in ("zero", "one"):
            raise unknown("greedy top_p policy", settings.greedy_top_p, ("zero", "one"))
        self.prompts = RubricPrompts(
            score_examples_inner=_read(DATA / "prompts/score_examples/prompt.txt"),
            single_examples=_read(DATA / "prompts/score_examples/single_examples.txt"),
            parallel_examples=_read(DATA / "prompts/score_examples/parallel_examples.txt"),
            grading_system=_read(DATA / "prompts/rubric_grading/sys_prompt.txt"),
            grading_user=_read(DATA / "prompts/rubric_grading/prompt.txt"),
        )
        self.rubrics = {c: _read(DATA / "rubrics" / f"{c}.txt") for c in CATEGORIES}
        self.warnings: list[str] = []
        n_judges = len(settings.judges)
        if n_judges and n_judges != self.protocol.expected_judges:
            self.warnings.append(
                f"protocol {self.protocol.name!r} uses {self.protocol.expected_judges} judge(s); "
                f"this run has {n_judges}: scores are not comparable with the paper's tables"
            )

    # -- generation ----------------------------------------------------------------------------

    def personas(self) -> list[str]:
        try:
            personas = json.loads(_read(DATA / "extracted/personas.json"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{DATA / 'extracted/personas.json'}: invalid JSON: {exc}") from exc
        limit = self.settings.limit
        return personas[:limit] if limit is not None else personas

    def samples(self) -> list[Sample]:
        samples = []
        for index, persona in enumerate(self.personas()):
            path = self.questions_dir / f"{persona}.json"
            try:
                questions = json.loads(_read(path))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: invalid JSON: {exc}") from exc
            for category, metric in CATEGORIES.items():
                if category not in questions:
                    raise DataError(f"{path}: field {category!r} missing")
                for number, question in enumerate(questions[category]):
                    samples.append(
                        Sample(
                            sample_id=f"p{index:03d}-{metric}-q{number}",
                            unit=persona,
                            fields={
                                "persona": persona,
                                "persona_index": index,
                                "category": category,
                                "metric": metric,
                                "question_index": number,
                                "question": question,
                            },
                        )
                    )
        return samples

    def answer_params(self) -> GenerationParams:
        max_tokens = self.settings.answer_max_tokens or self.template.max_tokens
        return GenerationParams(
            temperature=self.template.temperature,
            top_p=self.template.top_p,
            max_tokens=max_tokens,
            seed=self.settings.seed,
        )

    def generation_request(self, sample: Sample) -> ChatRequest:
        system = self.template.system.format(persona=sample.fields["persona"])
        return ChatRequest(
            (Message("system", system), Message("user", sample.fields["question"])),
            self.answer_params(),
        )

    # -- judging -------------------------------------------------------------------------------

    def judge_params(self) -> GenerationParams:
        top_p = self.protocol.judge_top_p
        if top_p == 0.0 and self.settings.greedy_top_p == "one":
            top_p = 1.0
        return GenerationParams(
            temperature=self.protocol.judge_temperature,
            top_p=top_p,
            max_tokens=self.settings.judge_max_tokens or self.protocol.judge_max_tokens,
        )

    def _batches(self, samples: Sequence[Sample]) -> list[list[int]]:
        """Indices of samples judged together: same persona and task, in question order."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, sample in enumerate(samples):
            groups.setdefault((sample.unit, sample.fields["category"]), []).append(index)
        size = self.protocol.judge_batch_size
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        judges = self.settings.judges
        if not judges:
            raise UsageError(f"task {self.name} needs a judge (--judge)")
        params = self.judge_params()
        batches = [
            [i for i in batch if answers[i].ok] for batch in self._batches(samples)
        ]
        batches = [b for b in batches if b]

        # Stage 1: score examples from the examples model (one per question, or per batch).
        example_groups = (
            [[i] for b in batches for i in b] if self.protocol.examples_one_at_a_time else batches
        )
        example_calls = [
            ModelCall(
                "examples",
                "score_examples",
                score_examples_request(
                    self.prompts,
                    samples[g[0]].unit,
                    [samples[i].fields["question"] for i in g],
                    self.rubrics[samples[g[0]].fields["category"]],
                    params,
                    one_at_a_time=self.protocol.examples_one_at_a_time,
                ),
            )
            for g in example_groups
        ]
        example_replies = yield example_calls
        examples: dict[int, str | None] = {}
        example_info: dict[int, dict[str, Any]] = {}
        for group, call, reply in zip(example_groups, example_calls, example_replies):
            processed = process_examples(reply.text) if reply.ok else None
            for position, index in enumerate(group):
                if processed is None:
                    examples[index] = None
                elif self.protocol.examples_character_indexing:
                    examples[index] = processed[position] if position < len(processed) else ""
                else:
                    examples[index] = processed
                example_info[index] = {
                    "prompt": call.request.messages_json(),
                    "reply": reply.text,
                    "error": reply.error,
                    "processed": processed,
                    "delivered": examples[index],
                }

        # Stage 2: rubric grading, every judge on every batch whose examples exist.
        graded = [[i for i in b if examples.get(i) is not None] for b in batches]
        graded = [b for b in graded if b]
        grading_calls = []
        grading_requests = []
        for batch in graded:
            first = samples[batch[0]]
            request = grading_request(
                self.prompts,
                self.rubrics[first.fields["category"]],
                first.unit,
                [
                    (samples[i].fields["question"], answers[i].text or "", examples[i] or "")
                    for i in batch
                ],
                params,
            )
            grading_requests.append(request)
            grading_calls += [ModelCall(j.role, "rubric_grading", request) for j in judges]
        grading_replies = yield grading_calls
        return self._outcome(samples, answers, graded, grading_requests, example_info, grading_replies)

    def _outcome(
        self,
        samples: list[Sample],
        answers: list[Completion],
        graded: list[list[int]],
        grading_requests: list[ChatRequest],
        example_info: dict[int, dict[str, Any]],
        grading_replies: list[Completion],
    ) -> TaskOutcome:
        judges = self.settings.judges
        judgments: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(samples))}
        reference_batches = []
        replies = iter(grading_replies)
        for batch_number, batch in enumerate(graded):
            reference_scores = {}
            for judge in judges:
                reply = next(replies)
                parsed = (
                    parse_grading_reply(reply.text, len(batch)) if reply.ok else None
                )
                reference_scores[judge.label] = reference_batch_score(reply.text)
                for position, index in enumerate(batch):
                    judgments[index].append(
                        {
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
                        }
                    )
            first = samples[batch[0]]
            reference_batches.append(
                {"unit": first.unit, "metric": first.fields["metric"], "reference_scores": reference_scores}
            )
        grading_prompts = {
            index: request.messages_json()
            for batch, request in zip(graded, grading_requests)
            for index in batch
        }
        records = []
        for index, sample in enumerate(samples):
            answer = answers[index]
            score, reason = aggregation.question_score(judgments[index])
            if not answer.ok:
                reason = f"generation failed: {answer.error}"
            elif index not in example_info:
                reason = reason or "not judged"
            elif example_info[index]["processed"] is None:
                reason = f"score examples call failed: {example_info[index]['error']}"
            records.append(
                {
                    "schema": 1,
                    "task": self.name,
                    "sample_id": sample.sample_id,
                    "unit": sample.unit,
                    **{k: v for k, v in sample.fields.items() if k != "persona"},
                    "prompt": self.generation_request(sample).messages_json(),
                    "answer": answer.text,
                    "answer_error": answer.error,
                    "finish_reason": answer.finish_reason,
                    "answer_usage": {
                        "prompt_tokens": answer.usage.prompt_tokens,
                        "completion_tokens": answer.usage.completion_tokens,
                    },
                    "answer_notes": list(answer.notes),
                    "score_examples": example_info.get(index),
                    "judge_prompt": grading_prompts.get(index),
                    "judgments": judgments[index],
                    "score": score,
                    "unscored_reason": None if score is not None else reason,
                }
            )
        return TaskOutcome(records, self._results(records, reference_batches), list(self.warnings))

    def _results(
        self, records: list[dict[str, Any]], reference_batches: list[dict[str, Any]]
    ) -> dict[str, Any]:
        labels = [j.label for j in self.settings.judges]
        if self.settings.unscored_policy == "reference-zero":
            per_persona = aggregation.persona_scores_reference(reference_batches)
        else:
            per_persona = aggregation.persona_scores_exclude(records)
        results: dict[str, Any] = {
            "metrics": aggregation.summarize_personas(per_persona),
            "metric_names": {**METRIC_NAMES, "PersonaScore": self.persona_score_label},
            "items": aggregation.item_counts(records),
            "per_unit": per_persona,
        }
        if len(labels) > 1:
            results["per_judge"] = {}
            for label in labels:
                single = [
                    {**r, "score": s, "unscored_reason": why}
                    for r in records
                    for s, why in [
                        aggregation.question_score([j for j in r["judgments"] if j["judge"] == label])
                    ]
                ]
                results["per_judge"][label] = {
                    "metrics": aggregation.summarize_personas(
                        aggregation.persona_scores_exclude(single)
                    ),
                    "items": aggregation.item_counts(single),
                }
            results["judge_agreement"] = aggregation.judge_agreement(records, labels)
        return results

    @property
    def persona_score_label(self) -> str:
        return "PScore-L" if self.light else "PScore"

    def metric_kinds(self) -> dict[str, str]:
        return {m: "likert" for m in (*CATEGORIES.values(), "PersonaScore")}

    def manifest(self) -> dict[str, Any]:
        question_files = sorted(self.questions_dir.glob("*.json"))
        questions_hash = hashlib.sha256()
        for path in question_files:
            questions_hash.update(path.name.encode())
            questions_hash.update(path.read_bytes())
        prompt_files = sorted((DATA / "prompts").rglob("*.txt")) + sorted(
            (DATA / "rubrics").glob("*.txt")
        )
        return {
            "task": self.name,
            "version": self.version,
            "data": {
                "questions": self.questions_dir.name,
                "questions_sha256": questions_hash.hexdigest(),
                "personas_sha256": _sha256((DATA / "extracted/personas.json").read_bytes()),
                "n_personas": len(self.personas()),
                "limit": self.settings.limit,
            },
            "prompts_sha256": {
                str(p.relative_to(DATA)): _sha256(p.read_bytes()) for p in prompt_files
            },
            "protocol": {
                "name": self.protocol.name,
                "description": self.protocol.description,
                "judge_batch_size": self.protocol.judge_batch_size,
                "score_examples": "one question at a time"
                if self.protocol.examples_one_at_a_time
                else "per judge batch",
                "examples_character_indexing": self.protocol.examples_character_indexing,
                "expected_judges": self.protocol.expected_judges,
                "judge_params": self.judge_params().to_json(),
                "greedy_top_p_policy": self.settings.greedy_top_p,
            },
            "roleplay_template": {
                "name": self.template.name,
                "system": self.template.system,
                "source": self.template.source,
                "answer_params": self.answer_params().to_json(),
            },
            "unscored_policy": self.settings.unscored_policy,
        }

