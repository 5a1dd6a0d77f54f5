"""PersonaGym as pipelined jobs: call order within a job, and `finish` == `evaluate`.

A small driver runs the jobs by answering their calls from a function (scripted completions keyed
by request content, so the jobs path and the stage-by-stage path get the same completion for the
same request), applying content checks as the scheduler does when asked to.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.requests import Completion
from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, ModelCall, RunSettings
from rolebench_eval.task_registry import build_task, discover

EXAMPLES_REPLY = 'Score 1: Response - "a"\nScore 2: Response - "b"\nScore 3: Response - "c"\nScore 4: Response - "d"\nScore 5: Response - "e"'
HTTP_500 = "HTTP 500 server error (gave up after 6 attempt(s))"
Respond = Callable[[ModelCall], Completion]


def make(name: str, **settings):
    settings.setdefault("judges", (JudgeSpec("j1"),))
    return build_task(discover().tasks[name], RunSettings(**settings))


def checked(call: ModelCall, reply: Completion, apply_checks: bool) -> Completion:
    """What the scheduler does with a reply its call's check rejects (retries exhausted)."""
    if apply_checks and reply.ok and call.check is not None:
        problem = call.check(reply.text or "")
        if problem is not None:
            return Completion.failure(problem)
    return reply


def run_jobs(task, samples, respond: Respond, apply_checks: bool = True):
    """Every job to its end, answering each yield from `respond`; returns the outcome of
    `finish` and, per job, the list of its yields. Jobs run last to first: they are independent."""
    jobs = task.jobs(samples)
    results: list[object] = [None] * len(jobs)
    yields: list[list[list[ModelCall]]] = [[] for _ in jobs]
    for k in reversed(range(len(jobs))):
        job = jobs[k]
        try:
            calls = next(job)
            while True:
                yields[k].append(calls)
                calls = job.send([checked(c, respond(c), apply_checks) for c in calls])
        except StopIteration as stop:
            results[k] = stop.value
    return task.finish(samples, results), yields


def run_evaluate(task, samples, respond: Respond, apply_checks: bool = True):
    """The stage-by-stage path: all answers first, then `evaluate` stage by stage."""
    answers = [
        respond(ModelCall(MODEL_ROLE, "generate", task.generation_request(s))) for s in samples
    ]
    evaluation = task.evaluate(samples, answers)
    stages = []
    try:
        calls = next(evaluation)
        while True:
            stages.append(calls)
            calls = evaluation.send([checked(c, respond(c), apply_checks) for c in calls])
    except StopIteration as stop:
        return stop.value, stages


def verdicts(content: str, score: int) -> str:
    n = content.count("Evaluation Form")  # one per question of the batch
    return "\n".join(f"({k}) Evaluation: ok. Therefore, the final score is {(score + k) % 5 + 1}" for k in range(1, n + 1))


def scripted(samples) -> Respond:
    """Completions with failures of every kind, chosen by which question a request carries."""
    question = {s.sample_id: s.fields["question"] for s in samples}

    def has(content: str, sample_id: str) -> bool:
        return sample_id in question and question[sample_id] in content

    def respond(call: ModelCall) -> Completion:
        content = call.request.messages[-1].content
        if call.model == MODEL_ROLE:
            if has(content, "p000-EA-q2") or has(content, "p001-EA-q0"):
                return Completion.failure(HTTP_500)
            if has(content, "p000-LH-q1"):
                return Completion(text="", notes=("empty answer after 3 attempts",), attempts=3)
            return Completion(text=f"answer {len(content)}")
        if call.model == "examples":
            if has(content, "p000-TC-q0") or has(content, "p001-TC-q0"):
                return Completion.failure(HTTP_500)
            if has(content, "p000-PC-q3") or has(content, "p001-PC-q0"):
                return Completion(text="I'm sorry, I can't help with that.")
            return Completion(text=EXAMPLES_REPLY)
        if has(content, "p000-AJ-q0") or has(content, "p001-AJ-q0"):
            if call.model == "judge:j1":
                return Completion.failure(HTTP_500)
        if has(content, "p000-LH-q6") or has(content, "p001-LH-q0"):
            return Completion(text="(1) Evaluation: I cannot decide.")
        return Completion(text=verdicts(content, len(content) + len(call.model)))

    return respond


CASES = [
    ("personagym-light", "opencharacter", 2, ("j1",)),
    ("personagym", "opencharacter-full", 1, ("j1",)),
    ("personagym", "personagym", 1, ("j1", "j2")),
]


@pytest.mark.parametrize("benchmark,protocol,limit,judges", CASES)
def test_first_yield_holds_answers_and_examples_grading_comes_after(benchmark, protocol, limit, judges) -> None:
    task = make(benchmark, limit=limit, protocol=protocol, judges=tuple(JudgeSpec(j) for j in judges))
    samples = task.samples()
    _, yields = run_jobs(task, samples, lambda call: (
        Completion(text=EXAMPLES_REPLY) if call.model == "examples"
        else Completion(text=verdicts(call.request.messages[-1].content, 3))
        if call.model.startswith("judge:") else Completion(text="an answer")))
    size = task.protocol.judge_batch_size
    assert len(yields) == len(samples) // size  # one job per judge batch
    for job_yields in yields:
        assert len(job_yields) == 2
        first, second = job_yields
        generation = [c for c in first if c.model == MODEL_ROLE]
        examples = [c for c in first if c.model == "examples"]
        assert len(generation) == size and {c.stage for c in generation} == {"generate"}
        assert len(examples) == (1 if protocol == "personagym" else size)
        assert len(first) == len(generation) + len(examples)  # no judge before the answers
        assert [c.model for c in second] == [f"judge:{j}" for j in judges]
        assert {c.stage for c in second} == {"rubric_grading"}
    # The generation calls are exactly the task's generation requests, in sample order.
    sent = [c.request for job_yields in yields for c in job_yields[0] if c.model == MODEL_ROLE]
    assert sent == [task.generation_request(s) for s in samples]


@pytest.mark.parametrize("apply_checks", [True, False])
@pytest.mark.parametrize("policy", ["exclude", "reference-zero"])
@pytest.mark.parametrize("benchmark,protocol,limit,judges", CASES)
def test_finish_gives_what_evaluate_gives(benchmark, protocol, limit, judges, policy, apply_checks) -> None:
    judge_specs = tuple(JudgeSpec(j) for j in judges)
    outcomes = []
    for run in (run_jobs, run_evaluate):
        task = make(benchmark, limit=limit, protocol=protocol, judges=judge_specs, unscored_policy=policy)
        samples = task.samples()
        outcome, _ = run(task, samples, scripted(samples), apply_checks)
        outcomes.append(outcome)
    jobs_outcome, staged_outcome = outcomes
    assert json.dumps(jobs_outcome.records, sort_keys=True) == json.dumps(staged_outcome.records, sort_keys=True)
    assert json.dumps(jobs_outcome.results, sort_keys=True) == json.dumps(staged_outcome.results, sort_keys=True)
    assert jobs_outcome.warnings == staged_outcome.warnings
    # The injected failures are all there, each with its reason, none with a score.
    records = {r["sample_id"]: r for r in jobs_outcome.records}
    failed = records.get("p000-EA-q2") or records["p001-EA-q0"]
    assert failed["score"] is None and failed["unscored_reason"] == f"generation failed: {HTTP_500}"
    items = jobs_outcome.results["items"]
    assert items["empty_answers"] == (1 if "p000-LH-q1" in records else 0)
    assert items["n_unscored"] >= 4
    assert all(r["score"] is None for r in jobs_outcome.records if r["unscored_reason"])
    if policy == "reference-zero":
        subs = items["reference_substitutions"]
        assert subs["answers_judged_as_error"] >= 1 and subs["score_examples_from_error"] >= 1
    else:
        assert failed["judgments"] == []


def test_a_failed_answer_leaves_the_batched_examples_request_alone() -> None:
    ok = lambda call: Completion(text="fine")  # noqa: E731
    requests = {}
    for label, fail in (("all ok", False), ("one failed", True)):
        task = make("personagym", limit=1, judges=(JudgeSpec("j1"), JudgeSpec("j2")))
        samples = task.samples()
        answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
        if fail:
            answers[2] = Completion.failure(HTTP_500)  # p000-EA-q2, in the first batch of five
        evaluation = task.evaluate(samples, answers)
        example_calls = next(evaluation)
        grading_calls = evaluation.send([Completion(text=EXAMPLES_REPLY) for _ in example_calls])
        requests[label] = (example_calls[0].request.to_json(), grading_calls[0].request.messages[1].content)
        with pytest.raises(StopIteration):
            evaluation.send([ok(c) for c in grading_calls])
    (examples_ok, grading_ok), (examples_failed, grading_failed) = requests["all ok"], requests["one failed"]
    assert examples_failed == examples_ok  # all five questions, as the protocol asks for them
    assert examples_ok["messages"][0]["content"].count("Rubric 5 Examples:") == 1
    # The failed answer is left out of the judge batch (exclude); the others keep the example
    # character of their position in the five-question examples batch (reference indexing).
    assert grading_ok.count("Evaluation Form") == 5 and grading_failed.count("Evaluation Form") == 4
    assert "answer 2" not in grading_failed
    processed = 'Score 1: "a"\n\nScore 2: "b"'
    for position in (0, 1, 3, 4):
        assert f"Score Examples: \\n{processed[position]}\\n---" in grading_failed


def test_a_batch_without_usable_examples_asks_no_judge_and_jobs_need_a_judge() -> None:
    task = make("personagym-light", limit=1)
    samples = task.samples()
    # Stored before reply checks existed: a 200 whose examples process to nothing.
    outcome, yields = run_jobs(task, samples, lambda call: Completion(text="no examples here"), False)
    assert [len(y) for y in yields] == [1] * 5  # the examples check failed: no grading call
    assert {r["unscored_reason"] for r in outcome.records} == {
        "score examples reply unusable: score examples reply has no 'Score N: Response -' entries"}
    with pytest.raises(UsageError, match="needs a judge"):
        make("personagym-light", limit=1, judges=()).jobs(samples)
