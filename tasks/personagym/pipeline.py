"""PersonaGym as pipelined jobs: one job per judge batch (same persona and task).

A batch job asks at once for the model under test's answers to its questions and for their score
examples (examples need no answer), then, once both are back, for every judge's grading of the
questions that can be judged, and returns a `BatchResult`. `BatchRecords` turns each batch's result
into its records as it arrives, and all of them into the task's results at the end. The stage-by-stage `evaluate` drives the same jobs
in lockstep (`evaluate_in_lockstep`), so both paths share one implementation and give identical
records for identical completions.

Because the examples are asked for before the answer is known, a question whose answer then fails
still has its examples call (under `exclude` it is not judged; the examples stay in its record and
in the call store for the rerun that retries the answer), and a batched (`personagym` protocol)
examples request always carries the batch's questions, whichever answers succeed.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rolebench_eval.errors import UsageError
from rolebench_eval.judges.rubric_judge import (
    examples_reply_problem,
    grading_reply_problem,
    grading_request,
    score_examples_request,
)
from rolebench_eval.record_columns import ColumnRecords
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.running.call_refs import NOT_SENT_PREFIX, CallRef, forget_encoding
from rolebench_eval.task_api import (
    MODEL_ROLE,
    Evaluation,
    Job,
    ModelCall,
    RecordStream,
    ReplyCheck,
    Sample,
    TaskOutcome,
    finish_from_stream,
)

from . import outcome
from .protocols import examples_regex, grading_regex

if TYPE_CHECKING:  # the task imports this module
    from .task import PersonaGymTask


@dataclass
class BatchResult:
    """What one batch job returns: everything `finish_outcome` needs about its questions."""

    questions: list[int]  # indices into the task's samples, in question order
    answers: list[Completion]  # the model under test's answer to each question
    example_info: dict[int, dict[str, Any]]  # per question: its examples call and delivery
    graded: list[int]  # the questions the judges graded (empty: no grading call)
    grading_request: ChatRequest | None
    grading_replies: list[Completion]  # one per judge, in judge order
    # The request each judge was sent (the same, unless a judge's output is guided): their calls'
    # keys, which samples.jsonl refers to.
    grading_sent: list[ChatRequest] = field(default_factory=list)
    # The model under test's request for each question (its prompt in the record, and its call's key).
    generation_sent: list[ChatRequest] = field(default_factory=list)


def check_judges(task: PersonaGymTask) -> None:
    if not task.settings.judges:
        raise UsageError(f"task {task.name} needs a judge (--judge)")


def examples_check(task: PersonaGymTask) -> ReplyCheck | None:
    """The reply check of score-examples calls. Reply checks make an unusable reply a failed call
    (retried, and retried by the next run). The embedded smoke judge (plumbing only, its replies
    carry no meaning) never writes usable ones, so checking it would only multiply its calls and
    make every rerun repeat them; its unusable replies are still never scored (outcome.py)."""
    smoke = not task.settings.has_examples_model and task.settings.judges[0].smoke
    return None if smoke else examples_reply_problem


def batch_job(task: PersonaGymTask, samples: Sequence[Sample], questions: list[int]) -> Job:
    """The job of one judge batch: answers and score examples at once, then every judge."""
    protocol = task.protocol
    params = task.judge_params()
    reference = task.reference_zero
    judges = task.settings.judges
    first = samples[questions[0]]
    rubric = task.rubrics[first.fields["category"]]
    generation = [
        ModelCall(MODEL_ROLE, "generate", task.generation_request(samples[i])) for i in questions
    ]
    # Built from the batch's questions only: the examples never depend on the answers.
    groups = [[i] for i in questions] if protocol.examples_one_at_a_time else [list(questions)]
    check = examples_check(task)
    guided = task.settings.guided_roles  # --judge-output guided: replies follow the format's regex
    example_calls = [
        ModelCall(
            "examples",
            "score_examples",
            _guide(
                score_examples_request(
                    task.prompts,
                    first.unit,
                    [samples[i].fields["question"] for i in group],
                    rubric,
                    params,
                    one_at_a_time=protocol.examples_one_at_a_time,
                ),
                examples_regex(len(group), params.max_tokens, one_at_a_time=protocol.examples_one_at_a_time)
                if "examples" in guided
                else None,
            ),
            check=check,
        )
        for group in groups
    ]
    replies = yield generation + example_calls
    for call in generation:  # kept for the records: only their keys are needed now
        forget_encoding(call.request)
    answers = list(replies[: len(questions)])
    examples, info = outcome.deliver_examples(
        groups,
        example_calls,
        replies[len(questions) :],
        character_indexing=protocol.examples_character_indexing,
        reference=reference,
    )
    # Under `exclude` a failed answer is unscored and not judged (left out of the judge batch);
    # under `reference-zero` it is judged as the reply "Error", as the reference code does.
    # Examples that are unusable (None) are never judged under either policy.
    graded = [
        i
        for i, answer in zip(questions, answers)
        if (reference or answer.ok) and examples.get(i) is not None
    ]
    if not graded:
        return BatchResult(list(questions), answers, info, [], None, [], [], [c.request for c in generation])
    by_index = dict(zip(questions, answers))
    request = grading_request(
        task.prompts,
        rubric,
        first.unit,
        [
            (
                samples[i].fields["question"],
                outcome.judged_answer(by_index[i], reference) or "",
                examples[i] or "",
            )
            for i in graded
        ],
        params,
    )
    guided_request = _guide(request, grading_regex(len(graded), params.max_tokens))
    grading_calls = [
        ModelCall(
            j.role,
            "rubric_grading",
            guided_request if j.role in guided else request,
            check=None if j.smoke else grading_reply_problem,
        )
        for j in judges
    ]
    grading_replies = yield grading_calls
    for call in grading_calls:
        forget_encoding(call.request)
    return BatchResult(list(questions), answers, info, graded, request, list(grading_replies),
                       [c.request for c in grading_calls], [c.request for c in generation])


def _guide(request: ChatRequest, regex: str | None) -> ChatRequest:
    return request if regex is None else replace(request, guided_regex=regex)


class BatchRecords(RecordStream):
    """The task's records, batch job by batch job, and its results at the end.

    Each batch's records are built as soon as its job's result arrives (in any order: a record's
    `batch` is its batch job's position among the task's batches); what is kept for the results
    is each record without the texts of calls or of its answer (`outcome.keep`), in columns, so a
    streamed run holds no prompt or reply of a finished batch. `close` puts them back in job
    order, which is sample order (`PersonaGymTask.batches` groups consecutive samples), as
    samples.jsonl lists them."""

    def __init__(self, task: PersonaGymTask, samples: list[Sample]):
        self.task = task
        self.samples = samples
        # Every batch's kept records (outcome.keep), in the order their jobs ended, and each one's
        # batch job (machine integers: no object per record).
        self.kept = outcome.kept_records()
        self.kept_batch = array("Q")
        # Per judged batch its reference scores (unit, metric, a score per judge), in columns
        # too, and its batch job.
        labels = [j.label for j in task.settings.judges]
        self.reference = ColumnRecords(("unit", "metric", "reference_scores"), nested={"reference_scores": labels})
        self.reference_batch = array("Q")
        self.covered = 0

    def add(self, index: int, value: Any) -> list[dict[str, Any]]:
        result: BatchResult = value
        task, samples = self.task, self.samples
        reference = task.reference_zero
        judges = task.settings.judges
        graded = [result.graded] if result.graded else []
        sent = result.grading_sent or [result.grading_request] * len(result.grading_replies)
        judgments, reference_batches = outcome.collect_judgments(
            samples, graded, judges, result.grading_replies, reference, sent, first_batch=index
        )
        self.reference.extend(reference_batches)
        self.reference_batch.extend([index] * len(reference_batches))
        grading_prompts = {}
        grading_calls = {}
        if graded:
            assert result.grading_request is not None
            prompt = result.grading_request.messages_json()
            # The judge prompt is the same request to every judge: the record refers to the call
            # of the first judge that has one stored (a budget may have refused a call: no line).
            replies = result.grading_replies
            first = next((k for k, r in enumerate(replies) if not (r.error or "").startswith(NOT_SENT_PREFIX)), 0)
            call = CallRef(judges[first].role, sent[first], replies[first], "prompt")
            for index in result.graded:
                grading_prompts[index] = prompt
                grading_calls[index] = call
        # The request objects the job sent: their keys are computed already (requests.py).
        requests = {samples[i].sample_id: r for i, r in zip(result.questions, result.generation_sent)}
        records = outcome.build_records(
            task.name,
            samples,
            dict(zip(result.questions, result.answers)),
            judgments,
            result.example_info,
            grading_prompts,
            lambda sample: requests.get(sample.sample_id) or task.generation_request(sample),
            reference,
            grading_calls,
            indices=result.questions,
        )
        self.covered += len(result.questions)
        outcome.keep(records, self.kept)
        self.kept_batch.extend([index] * len(records))
        return records

    @property
    def reference_batches(self) -> list[dict[str, Any]]:
        return list(self.reference.sorted_by(self.reference_batch))

    def close(self) -> TaskOutcome:
        if self.covered != len(self.samples):
            # A driver bug, not bad input: the results must cover every sample of `jobs(samples)`.
            raise ValueError(f"PersonaGym: job results cover {self.covered} of {len(self.samples)} samples")
        task = self.task
        # In job order (within a batch, its records keep theirs); the unordered columns are let go.
        kept = self.kept = self.kept.sorted_by(self.kept_batch)
        self.kept_batch = array("Q", sorted(self.kept_batch))
        results_section = outcome.task_results(
            kept,
            self.reference_batches,
            [j.label for j in task.settings.judges],
            task.settings.unscored_policy,
            task.metric_names(),
        )
        return TaskOutcome(kept, results_section, list(task.warnings))


def evaluate_in_lockstep(
    task: PersonaGymTask, samples: list[Sample], answers: list[Completion]
) -> Evaluation:
    """The stage-by-stage interface over the same batch jobs: answers are known, so each job's
    generation calls are answered from `answers`; every job's examples calls are yielded as one
    stage, then every job's grading calls as the next (possibly empty) stage."""
    check_judges(task)
    batches = task.batches(samples)
    jobs = [batch_job(task, samples, batch) for batch in batches]
    firsts = [next(job) for job in jobs]
    for batch, calls in zip(batches, firsts):
        # The job's layout: its questions' generation calls first, in question order.
        assert all(c.model == MODEL_ROLE for c in calls[: len(batch)])
    example_replies = yield [c for batch, calls in zip(batches, firsts) for c in calls[len(batch) :]]
    results: list[BatchResult | None] = [None] * len(jobs)
    pending: list[tuple[int, list[ModelCall]]] = []
    offset = 0
    for k, (job, batch, calls) in enumerate(zip(jobs, batches, firsts)):
        n_examples = len(calls) - len(batch)
        own = [answers[i] for i in batch] + list(example_replies[offset : offset + n_examples])
        offset += n_examples
        try:
            pending.append((k, job.send(own)))
        except StopIteration as stop:
            results[k] = stop.value
    grading_replies = yield [c for _, calls in pending for c in calls]
    offset = 0
    for k, calls in pending:
        try:
            jobs[k].send(list(grading_replies[offset : offset + len(calls)]))
        except StopIteration as stop:
            results[k] = stop.value
        else:
            raise RuntimeError("a PersonaGym batch job yielded more than twice")
        offset += len(calls)
    assert all(r is not None for r in results), "a PersonaGym batch job did not end"
    return finish_from_stream(BatchRecords(task, samples), results)
