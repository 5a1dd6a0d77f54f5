"""The PersonaGym / PersonaGym-Light task: samples, requests, protocols; jobs in pipeline.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.errors import DataError, UsageError, unknown
from rolebench_eval.questions.question_sets import QuestionSet, load_set
from rolebench_eval.judges.rubric_judge import RubricPrompts
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.task_api import Evaluation, FixedFields, LazyJobs, RunSettings, Sample, Task
from rolebench_eval.task_registry import TaskSpec

from . import aggregation, pipeline
from .protocols import PROTOCOLS, Protocol
from .roleplay import TEMPLATES

DATA = Path(__file__).parent / "data"
# The question-generation prompts (`rbe questions generate`) shape a custom set, not a run: their
# hashes are in the set's manifest, whose hash the run records (data.question_set).
GENERATION_PROMPTS = "question_generation"
QUESTIONS_OPTION = "questions"
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


class QuestionFields(FixedFields):
    """A question's fields (Sample.fields): the same keys for every sample, so no dict each."""

    __slots__ = ("persona", "persona_index", "category", "metric", "question_index", "question")


class CustomQuestionFields(FixedFields):
    """A custom question set's question (`--questions`): its persona's id too."""

    __slots__ = ("persona", "persona_index", "persona_id", "category", "metric", "question_index", "question")


def make_task(spec: TaskSpec, settings: RunSettings) -> PersonaGymTask:
    return PersonaGymTask(spec, settings)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read PersonaGym data file {path}: {exc}") from exc


def _judge_output_entry(settings: RunSettings) -> dict[str, Any]:
    roles = [j.role for j in settings.judges] + ["examples"]
    entry = {role: "guided" for role in roles if role in settings.guided_roles}
    return {"judge_output": entry} if entry else {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PersonaGymTask(Task):
    def __init__(self, spec: TaskSpec, settings: RunSettings):
        super().__init__(spec.name, spec.version, settings)
        self.light = spec.config["questions"].endswith("personagym-light")
        self.questions_dir = DATA / "questions" / spec.config["questions"]
        # --task-option questions=DIR: a generated question set instead of the benchmark's.
        self.question_set: QuestionSet | None = None
        folder = settings.options.get(QUESTIONS_OPTION)
        if folder is not None:
            self.question_set = load_set(Path(folder), f"--task-option {QUESTIONS_OPTION}=")
            if self.light and self.question_set.most_per_task > 1:
                raise UsageError(
                    f"--task-option {QUESTIONS_OPTION}={folder}: {self.name} evaluates one question per task, the "
                    f"set has up to {self.question_set.most_per_task}; derive its Light set with "
                    f"`rbe questions light {folder}` or run --tasks personagym"
                )
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
        if self.question_set is not None and self.question_set.modified:
            self.warnings.append(
                f"question set {self.question_set.path} was changed after it was written (its files hash to "
                f"{self.question_set.sha256[:12]}, its manifest recorded "
                f"{str(self.question_set.manifest.get('questions_sha256'))[:12]}): the run records the files' hash"
            )
        n_judges = len(settings.judges)
        if n_judges and n_judges != self.protocol.expected_judges:
            self.warnings.append(
                f"protocol {self.protocol.name!r} uses {self.protocol.expected_judges} judge(s); "
                f"this run has {n_judges}: scores are not comparable with the paper's tables"
            )
        if not self.light and protocol_name == "opencharacter":
            self.warnings.append(
                "protocol 'opencharacter' judges one question per call; OpenCharacter Table 5 "
                "(full PersonaGym) was judged in batches of 5 with protocol 'opencharacter-full': "
                "use --protocol opencharacter-full to compare with Table 5"
            )

    # -- generation ----------------------------------------------------------------------------

    def personas(self) -> list[str]:
        if self.question_set is not None:
            texts = [p.persona for p in self.question_set.personas]
            return texts[: self.settings.limit] if self.settings.limit is not None else texts
        try:
            personas = json.loads(_read(DATA / "extracted/personas.json"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{DATA / 'extracted/personas.json'}: invalid JSON: {exc}") from exc
        limit = self.settings.limit
        return personas[:limit] if limit is not None else personas

    def _custom_samples(self, qset: QuestionSet) -> list[Sample]:
        limit = self.settings.limit
        samples = []
        for index, persona in enumerate(qset.personas[:limit] if limit is not None else qset.personas):
            for category, metric in CATEGORIES.items():
                for number, question in enumerate(persona.questions.get(category) or []):
                    samples.append(Sample(
                        sample_id=f"p{index:03d}-{metric}-q{number}",
                        unit=persona.persona,
                        fields=CustomQuestionFields(persona=persona.persona, persona_index=index,
                                                    persona_id=persona.id, category=category, metric=metric,
                                                    question_index=number, question=question),
                    ))
        return samples

    def samples(self) -> list[Sample]:
        if self.question_set is not None:
            return self._custom_samples(self.question_set)
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
                            fields=QuestionFields(persona=persona, persona_index=index, category=category,
                                                  metric=metric, question_index=number, question=question),
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

    def batches(self, samples: Sequence[Sample]) -> list[list[int]]:
        """Indices of samples judged together: same persona and task, in question order."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, sample in enumerate(samples):
            groups.setdefault((sample.unit, sample.fields["category"]), []).append(index)
        size = self.protocol.judge_batch_size
        return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]

    @property
    def reference_zero(self) -> bool:
        return self.settings.unscored_policy == "reference-zero"

    # One job per judge batch (pipeline.py): its answers and score examples at once, then its
    # judges. `evaluate` drives the same jobs stage by stage, so both paths give the same records.

    def jobs(self, samples: list[Sample]) -> LazyJobs:
        pipeline.check_judges(self)
        batches = self.batches(samples)
        return LazyJobs(len(batches), lambda index: pipeline.batch_job(self, samples, batches[index]))

    def record_stream(self, samples: list[Sample]) -> pipeline.BatchRecords:
        return pipeline.BatchRecords(self, samples)

    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        return pipeline.evaluate_in_lockstep(self, samples, answers)

    def metric_names(self) -> dict[str, str]:
        return {**METRIC_NAMES, "PersonaScore": self.persona_score_label}

    @property
    def persona_score_label(self) -> str:
        return "PScore-L" if self.light else "PScore"

    def metric_kinds(self) -> dict[str, str]:
        return {m: "likert" for m in (*CATEGORIES.values(), "PersonaScore")}

    def _data_manifest(self) -> dict[str, Any]:
        if self.question_set is not None:
            qset = self.question_set
            return {
                # Not a benchmark folder name: `rbe table` refuses it (published tables are the
                # benchmark's questions), `compare` and the leaderboard keep sets apart by hash.
                "questions": "custom",
                "questions_sha256": qset.sha256,
                "personas_sha256": hashlib.sha256(
                    json.dumps([p.persona for p in qset.personas], ensure_ascii=False).encode("utf-8")
                ).hexdigest(),
                "question_set": qset.identity(),
                "n_personas": len(self.personas()),
                "limit": self.settings.limit,
            }
        question_files = sorted(self.questions_dir.glob("*.json"))
        questions_hash = hashlib.sha256()
        for path in question_files:
            questions_hash.update(path.name.encode())
            questions_hash.update(path.read_bytes())
        return {
            "questions": self.questions_dir.name,
            "questions_sha256": questions_hash.hexdigest(),
            "personas_sha256": _sha256((DATA / "extracted/personas.json").read_bytes()),
            "n_personas": len(self.personas()),
            "limit": self.settings.limit,
        }

    def manifest(self) -> dict[str, Any]:
        prompt_files = sorted(
            p for p in (DATA / "prompts").rglob("*.txt") if GENERATION_PROMPTS not in p.relative_to(DATA).parts
        ) + sorted((DATA / "rubrics").glob("*.txt"))
        return {
            "task": self.name,
            "version": self.version,
            "data": self._data_manifest(),
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
                # Which model role writes the score examples; its identity is the run manifest's
                # `examples_model` (the first judge unless --examples-model is given).
                "examples_model_role": "examples",
                "examples_model": "--examples-model" if self.settings.has_examples_model else "first judge",
                # How a judge reply becomes per-question verdicts (changes what is measured).
                "segment_matching": "by (N) label; empty segments ignored; differing repeats unscored",
                "unusable_replies": "score examples that process to nothing and judge replies "
                "without a final score are failed calls",
            },
            "roleplay_template": {
                "name": self.template.name,
                "system": self.template.system,
                "source": self.template.source,
                "answer_params": self.answer_params().to_json(),
            },
            "unscored_policy": self.settings.unscored_policy,
            # Which personas were sampled, not how they were scored: `rbe compare` shows these
            # differences without refusing (rolebench_eval/analysis/comparability.py).
            # Where a question set lies, and its folder's name, say nothing about what it holds.
            "non_blocking": ["data.limit", "data.n_personas", "data.question_set.path", "data.question_set.name",
                             "data.question_set.recorded_sha256"],
            # Under reference-zero a failed answer or score-examples call is judged as the
            # reference code's "Error" text; under exclude it is unscored (see outcome.py).
            "failed_calls": (
                "judged as 'Error' (reference code)" if self.reference_zero else "unscored"
            ),
            # --judge-output guided (a deviation): the roles whose replies follow the format
            # regexes of protocols.py; absent when none does, so free runs keep their hash.
            **_judge_output_entry(self.settings),
        }

