"""RoleBench as per-item jobs (task_api.Job), driven by a scripted model and judge.

A small driver answers each job's calls from a function of the call, in several orders (one job
to its end before the next, all jobs a step at a time, last job first), and `finish` over the
jobs' results is checked to give exactly the records, results and warnings of `evaluate` over the
same scripted completions, with failures injected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.judges import pairwise_ranking as ranking
from rolebench_eval.requests import ChatRequest, Completion, Message
from rolebench_eval.task_api import MODEL_ROLE, Job, JudgeSpec, ModelCall, RunSettings, TaskOutcome
from rolebench_eval.task_registry import build_task, discover
from rolebench_eval.tasks.rolebench import item_jobs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rolebench"
FULL = str(FIXTURES / "full")
PARTIAL = str(FIXTURES / "partial")

Reply = Callable[[ModelCall], Completion]


def make(name: str, root: str = FULL, **settings: Any):  # noqa: ANN201 - the task object
    options = {"rolebench_dir": root, **dict(settings.pop("options", {}))}
    return build_task(discover().tasks[name], RunSettings(options=options, **settings))


def ranking_reply(first_rank: int, second_rank: int) -> str:
    return str(
        [
            {"model": "model_1", "reason": "r", "rank": first_rank},
            {"model": "model_2", "reason": "r", "rank": second_rank},
        ]
    )


class Script:
    """Scripted completions, a pure function of the call (as a cache would give them back).

    The model answers item i with "ANSWER-i <question start>" (so ROUGE is not trivially 0);
    `failed` items get a failed call, `empty` items an empty answer. The judge prefers the model
    in both orders, except: `first_shown` items (always the first answer shown: inconsistent),
    `unparsed` items (no list when the baseline is shown first), and judges in `broken_judges`,
    whose calls fail with HTTP 500 on odd items.
    """

    def __init__(self, task: Any, failed: tuple[int, ...] = (), empty: tuple[int, ...] = (),
                 first_shown: tuple[int, ...] = (), unparsed: tuple[int, ...] = (),
                 broken_judges: tuple[str, ...] = ()):
        self.index = {}
        for i, sample in enumerate(task.samples()):
            self.index.setdefault(task.generation_request(sample), i)
        self.samples = task.samples()
        self.failed, self.empty, self.first_shown = failed, empty, first_shown
        self.unparsed, self.broken_judges = unparsed, broken_judges

    def __call__(self, call: ModelCall) -> Completion:
        if call.model == MODEL_ROLE:
            i = self.index[call.request]
            if i in self.failed:
                return Completion.failure("timeout (gave up after 3 attempt(s))")
            if i in self.empty:
                return Completion(text="", finish_reason="stop", notes=("empty answer after 3 attempt(s)",), attempts=3)
            return Completion(text=f"ANSWER-{i} " + self.samples[i].fields["question"][:10], finish_reason="stop")
        content = call.request.messages[1].content
        match = re.search(r"'model': 'model_(\d)', 'response': 'ANSWER-(\d+)", content)
        if match is None:  # the empty answer: the model's position cannot be told; rank it first
            return Completion(text=ranking_reply(1, 2), finish_reason="stop")
        item, model_first = int(match.group(2)), match.group(1) == "1"
        if call.model.removeprefix("judge:") in self.broken_judges and item % 2:
            return Completion.failure("HTTP 500 (gave up after 3 attempt(s))")
        if item in self.first_shown:
            return Completion(text=ranking_reply(1, 2))
        if item in self.unparsed and not model_first:
            return Completion(text="I prefer the second one.")
        return Completion(text=ranking_reply(1, 2) if model_first else ranking_reply(2, 1))


def run_jobs(jobs: list[Job], reply: Reply, order: str = "sequential") -> tuple[list[Any], list[tuple[int, list[ModelCall]]]]:
    """Drive jobs, answering each yielded call with `reply`; (results, log of (job, calls)).

    sequential: each job to its end before the next starts; reversed: the same, last job first;
    interleaved: every running job one step per round (all answers back before any judgment).
    """
    results: list[Any] = [None] * len(jobs)
    pending: dict[int, list[ModelCall]] = {}
    log: list[tuple[int, list[ModelCall]]] = []

    def advance(i: int, value: list[Completion] | None) -> None:
        try:
            calls = jobs[i].send(value)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)
            return
        log.append((i, calls))
        pending[i] = calls

    if order in ("sequential", "reversed"):
        indices = range(len(jobs)) if order == "sequential" else range(len(jobs) - 1, -1, -1)
        for i in indices:
            advance(i, None)
            while i in pending:
                advance(i, [reply(c) for c in pending[i]])
    else:
        for i in range(len(jobs)):
            advance(i, None)
        while pending:
            for i in list(pending):
                advance(i, [reply(c) for c in pending[i]])
    return results, log


def run_evaluate(task: Any, reply: Reply) -> tuple[list[list[ModelCall]], TaskOutcome]:
    """The stage-by-stage interface over the same script: all answers, then evaluate()."""
    samples = task.samples()
    answers = [reply(ModelCall(MODEL_ROLE, "generate", task.generation_request(s))) for s in samples]
    evaluation = task.evaluate(samples, answers)
    batches: list[list[ModelCall]] = []
    try:
        batch = next(evaluation)
        while True:
            batches.append(batch)
            batch = evaluation.send([reply(c) for c in batch])
    except StopIteration as stop:
        return batches, stop.value


def call_key(call: ModelCall) -> tuple[Any, ...]:
    return call.model, call.stage, call.request, call.check


# -- the jobs' shape ------------------------------------------------------------------------------


def test_each_job_asks_for_its_answer_then_at_once_for_its_rankings() -> None:
    task = make("rolebench-zh", judges=(JudgeSpec("a"), JudgeSpec("b")))
    samples = task.samples()
    script = Script(task, failed=(2,))
    results, log = run_jobs(task.jobs(samples), script)
    # Job 0's rankings come right after its own answer, before job 1 asks for anything; a failed
    # answer (item 2) ends its job: nothing to judge.
    assert [(i, [c.stage for c in calls]) for i, calls in log[:5]] == [
        (0, ["generate"]),
        (0, ["pairwise_ranking"] * 4),
        (1, ["generate"]),
        (1, ["pairwise_ranking"] * 4),
        (2, ["generate"]),
    ]
    assert log[5][0] == 3
    assert len(log) == 2 * len(samples) - 1
    first = log[0][1][0]
    assert first == ModelCall(MODEL_ROLE, "generate", task.generation_request(samples[0]))
    assert first.check is None  # the empty-answer rule is the scheduler's, for MODEL_ROLE
    # Every judge, both orders, in one batch: judge-major, model-first then baseline-first.
    rankings = log[1][1]
    assert [c.model for c in rankings] == ["judge:a", "judge:a", "judge:b", "judge:b"]
    shown = [re.search(r"'model': 'model_(\d)', 'response': 'ANSWER-0", c.request.messages[1].content) for c in rankings]
    assert [m.group(1) for m in shown] == ["1", "2", "1", "2"]
    assert all(c.check is ranking.reply_check for c in rankings)
    assert [type(r) for r in results] == [item_jobs.ItemResult] * len(samples)
    assert results[2].plan is None and results[2].replies == () and not results[2].answer.ok
    assert len(results[0].replies) == 4 and results[0].skipped is None


def test_jobs_without_judges_or_baseline_only_ask_for_the_answer() -> None:
    for task in (make("rolebench-zh"), make("rolebench-en-rolegen", judges=(JudgeSpec("j"),))):
        samples = task.samples()
        results, log = run_jobs(task.jobs(samples), Script(task))
        assert [(i, [c.model for c in calls]) for i, calls in log] == [(i, [MODEL_ROLE]) for i in range(len(samples))]
        assert all(r.plan is None and r.replies == () for r in results)
    # role generalization has no baseline files: every item is skipped, with the reason.
    assert results[0].skipped == "missing rolebench-eng/role-generalization/role_specific/rolegpt_baseline.jsonl"


def test_smoke_judge_calls_carry_no_check_and_random_order_asks_one_order() -> None:
    task = make("rolebench-zh", judges=(JudgeSpec("s", smoke=True),), options={"win_rate_order": "random-order"})
    _, log = run_jobs(task.jobs(task.samples()), Script(task))
    rankings = [calls for _, calls in log if calls[0].stage == "pairwise_ranking"]
    assert [len(calls) for calls in rankings] == [1] * len(task.samples())
    assert all(c.check is None for calls in rankings for c in calls)


# -- finish over jobs == evaluate ----------------------------------------------------------------

CASES = {
    "no-judge": dict(name="rolebench-zh", settings={}, script={"failed": (2,), "empty": (1,)}),
    "both-orders-failures": dict(
        name="rolebench-zh",
        settings={"judges": (JudgeSpec("gpt"),)},
        script={"failed": (2,), "empty": (1,), "first_shown": (0,), "unparsed": (3,)},
    ),
    "random-order-two-judges": dict(
        name="rolebench-zh",
        settings={"judges": (JudgeSpec("a"), JudgeSpec("b")), "options": {"win_rate_order": "random-order"}, "seed": 3},
        script={"failed": (4,), "unparsed": (0, 3), "broken_judges": ("b",)},
    ),
    "english-failed-judge-calls": dict(
        name="rolebench-en",
        settings={"judges": (JudgeSpec("j"),), "options": {"judge_reference": "none", "missing_description": "empty"}},
        script={"failed": (1,), "broken_judges": ("j",)},
    ),
    "smoke-judge": dict(name="rolebench-zh", settings={"judges": (JudgeSpec("s", smoke=True),)}, script={"unparsed": (1,)}),
    "no-baseline": dict(name="rolebench-en-rolegen", settings={"judges": (JudgeSpec("j"),)}, script={"failed": (0,)}),
    "partial-data": dict(name="rolebench-zh", root=PARTIAL, settings={"judges": (JudgeSpec("j"),)}, script={}),
}


@pytest.mark.parametrize("order", ["sequential", "interleaved", "reversed"])
@pytest.mark.parametrize("case", list(CASES))
def test_finish_over_jobs_equals_evaluate(case: str, order: str) -> None:
    spec = CASES[case]
    task = make(spec["name"], root=spec.get("root", FULL), **spec["settings"])
    script = Script(task, **spec["script"])
    samples = task.samples()
    batches, expected = run_evaluate(task, script)
    results, log = run_jobs(task.jobs(samples), script, order)
    outcome = task.finish(samples, results)
    assert outcome.records == expected.records
    assert outcome.results == expected.results
    assert outcome.warnings == expected.warnings
    # The same ranking calls (with the same checks): evaluate sends them as one batch, in item
    # order; the jobs, each right after its answer.
    assert len(batches) <= 1
    job_rankings = [c for _, calls in sorted(log, key=lambda e: e[0]) for c in calls if c.model != MODEL_ROLE]
    assert [call_key(c) for c in job_rankings] == [call_key(c) for c in (batches[0] if batches else [])]


def test_the_failure_cases_give_the_expected_counts() -> None:
    # The equality above is only worth something if the scripted failures reach the outcome.
    spec = CASES["both-orders-failures"]
    task = make(spec["name"], **spec["settings"])
    samples = task.samples()
    results, _ = run_jobs(task.jobs(samples), Script(task, **spec["script"]), "interleaved")
    outcome = task.finish(samples, results)
    assert [r["verdicts"]["gpt"]["outcome"] for r in outcome.records] == ["tie", "tie", "unscored", "unscored", "win", "win"]
    # Item 0 by script, item 1 (the empty answer, always ranked first shown): both inconsistent.
    assert [r["verdicts"]["gpt"]["inconsistent"] for r in outcome.records[:2]] == [True, True]
    assert [r["empty_answer"] for r in outcome.records] == [False, True, False, False, False, False]
    assert [len(r["judgments"]) for r in outcome.records] == [2, 2, 0, 2, 2, 2]
    items = outcome.results["items"]
    assert items["empty_answers"] == 1
    assert (items["judgments"]["n"], items["judgments"]["n_scored"], items["judgments"]["n_unscored"]) == (6, 4, 2)
    assert sorted(items["judgments"]["unscored_reasons"]) == [
        "baseline-first: no Python list found in the reply",
        "generation failed: timeout (gave up after 3 attempt(s))",
    ]
    details = outcome.results["win_rate"]["judges"]["gpt"]
    assert (details["wins"], details["ties"], details["losses"], details["inconsistent"]) == (2, 2, 0, 2)
    assert outcome.results["metrics"]["win_rate"]["mean"] == pytest.approx(2 / 4)
    assert outcome.results["metrics"]["SPE"]["n_unscored"] == 1  # item 2 is role-specific


def test_finish_refuses_results_that_do_not_match_the_samples() -> None:
    task = make("rolebench-zh")
    samples = task.samples()
    results, _ = run_jobs(task.jobs(samples), Script(task))
    with pytest.raises(ValueError, match="one ItemResult per sample"):
        task.finish(samples, results[:-1])
    with pytest.raises(ValueError, match="one ItemResult per sample"):
        task.finish(samples, list(reversed(results)))


# -- the lockstep driver -------------------------------------------------------------------------


def test_lockstep_batches_rounds_and_passes_empty_yields_through() -> None:
    def job(name: str, rounds: int) -> Job:
        got = []
        empty = yield []  # answered with [] at once, never part of a batch
        assert empty == []
        for r in range(rounds):
            (reply,) = yield [ModelCall("judge:x", f"{name}{r}", ChatRequest((Message("user", f"{name}{r}"),)))]
            got.append(reply.text)
        return got

    driver = item_jobs.lockstep([job("a", 2), job("b", 0), job("c", 1)])
    batch = next(driver)
    assert [c.stage for c in batch] == ["a0", "c0"]
    batch = driver.send([Completion(text="A0"), Completion(text="C0")])
    assert [c.stage for c in batch] == ["a1"]
    with pytest.raises(StopIteration) as stop:
        driver.send([Completion(text="A1")])
    assert stop.value.value == [["A0", "A1"], [], ["C0"]]
    with pytest.raises(ValueError, match="1 completion"):
        bad = item_jobs.lockstep([job("a", 1), job("c", 1)])
        next(bad)
        bad.send([Completion(text="only one")])

