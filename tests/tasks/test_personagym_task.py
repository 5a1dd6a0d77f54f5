"""PersonaGym task: samples, protocol call structure, and aggregation computed by hand."""

from __future__ import annotations

from statistics import pstdev

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.requests import Completion
from rolebench_eval.task_api import JudgeSpec, RunSettings
from rolebench_eval.task_registry import build_task, discover

EXAMPLES_REPLY = 'Score 1: Response - "a"\nScore 2: Response - "b"\nScore 3: Response - "c"\nScore 4: Response - "d"\nScore 5: Response - "e"'
PROCESSED = 'Score 1: "a"\n\nScore 2: "b"\n\nScore 3: "c"\n\nScore 4: "d"\n\nScore 5: "e"'


def make(name: str, **settings) -> object:
    registry = discover()
    settings.setdefault("judges", (JudgeSpec("j1"),))
    return build_task(registry.tasks[name], RunSettings(**settings))


def verdict(score: int | None) -> Completion:
    if score is None:
        return Completion(text="(1) Evaluation: I cannot decide.")
    return Completion(text=f"(1) Evaluation: reasons. Therefore, the final score is {score}")


def drive(task, samples, answers, grading_replies):
    evaluation = task.evaluate(samples, answers)
    example_calls = next(evaluation)
    grading_calls = evaluation.send([Completion(text=EXAMPLES_REPLY) for _ in example_calls])
    replies = grading_replies(grading_calls)
    with pytest.raises(StopIteration) as stop:
        evaluation.send(replies)
    return example_calls, grading_calls, stop.value.value


def test_sample_counts_cover_the_benchmark() -> None:
    assert len(make("personagym-light").samples()) == 1000  # 200 personas x 5 tasks x 1
    full = make("personagym", limit=3).samples()
    assert len(full) == 150 and len({s.sample_id for s in full}) == 150
    assert [s.fields["metric"] for s in full[:11:10]] == ["EA", "TC"]


def test_generation_request_uses_the_named_roleplay_template() -> None:
    task = make("personagym-light", limit=1)
    sample = task.samples()[0]
    request = task.generation_request(sample)
    persona = sample.fields["persona"]
    assert request.messages[0].content == (
        f"Adopt the identity of {persona}. Answer the questions while staying in strict accordance "
        "with the nature of this identity."
    )
    assert request.messages[1].content == sample.fields["question"]
    assert (request.params.temperature, request.params.top_p, request.params.max_tokens) == (0.9, 0.9, 3000)
    other = make("personagym-light", limit=1, roleplay_template="opencharacter").generation_request(sample)
    assert other.messages[0].content.startswith("You are an AI character with the following Persona.\n\n# Persona\n" + persona)
    assert other.params.max_tokens == 1024


def test_unknown_names_are_rejected_with_suggestions() -> None:
    with pytest.raises(UsageError, match="Did you mean 'opencharacter'"):
        make("personagym-light", protocol="open-character")
    with pytest.raises(UsageError, match="role-play template"):
        make("personagym-light", roleplay_template="nope")


def test_opencharacter_protocol_one_question_per_call_and_hand_computed_scores() -> None:
    task = make("personagym-light", limit=2)
    samples = task.samples()
    answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
    # Persona 0: EA 4, TC 5, LH 3, PC 4, AJ 5. Persona 1: EA 2, TC unparsed, LH 3, PC 3, AJ 4.
    scores = [4, 5, 3, 4, 5, 2, None, 3, 3, 4]
    example_calls, grading_calls, outcome = drive(
        task, samples, answers, lambda calls: [verdict(s) for s in scores]
    )
    assert len(example_calls) == 10 and {c.model for c in example_calls} == {"examples"}
    assert len(grading_calls) == 10 and {c.model for c in grading_calls} == {"judge:j1"}
    # Judge requests are greedy with top_p 0, exactly as the protocol sends them.
    params = grading_calls[0].request.params
    assert (params.temperature, params.top_p, params.max_tokens) == (0.0, 0.0, 3000)
    # The one-at-a-time protocol delivers the whole processed examples to the judge.
    assert repr(PROCESSED)[1:-1] in grading_calls[0].request.messages[1].content
    metrics = outcome.results["metrics"]
    assert metrics["EA"]["mean"] == pytest.approx(3.0) and metrics["EA"]["std"] == pytest.approx(1.0)
    assert (metrics["TC"]["mean"], metrics["TC"]["n"], metrics["TC"]["n_unscored"]) == (5.0, 1, 1)
    assert metrics["PersonaScore"]["mean"] == pytest.approx(4.2)  # (4+5+3+4+5)/5; persona 1 lacks TC
    assert (metrics["PersonaScore"]["n"], metrics["PersonaScore"]["n_unscored"]) == (1, 1)
    assert outcome.results["items"]["n_unscored"] == 1
    record = outcome.records[6]
    assert record["score"] is None
    assert record["unscored_reason"] == "no 'Therefore, the final score is N' in segment"
    assert record["judgments"][0]["reply"] == "(1) Evaluation: I cannot decide."
    assert record["judge_prompt"][0]["role"] == "system"


def test_reference_zero_policy_reproduces_the_reference_arithmetic() -> None:
    task = make("personagym-light", limit=2, unscored_policy="reference-zero")
    samples = task.samples()
    answers = [Completion(text="a") for _ in samples]
    scores = [4, 5, 3, 4, 5, 2, None, 3, 3, 4]
    _, _, outcome = drive(task, samples, answers, lambda calls: [verdict(s) for s in scores])
    metrics = outcome.results["metrics"]
    assert metrics["TC"]["mean"] == pytest.approx(2.5)  # the unparsed reply counts 0
    assert metrics["TC"]["std"] == pytest.approx(2.5)
    persona_scores = [4.2, (2 + 0 + 3 + 3 + 4) / 5]
    assert metrics["PersonaScore"]["mean"] == pytest.approx(sum(persona_scores) / 2)
    assert metrics["PersonaScore"]["std"] == pytest.approx(pstdev(persona_scores))


def test_failed_judge_call_is_unscored_never_a_number() -> None:
    task = make("personagym-light", limit=1)
    samples = task.samples()
    answers = [Completion(text="a") for _ in samples]
    replies = [verdict(4), Completion.failure("HTTP 500 server error (gave up after 6 attempt(s))")] + [verdict(4)] * 3
    _, _, outcome = drive(task, samples, answers, lambda calls: replies)
    record = outcome.records[1]
    assert record["score"] is None and record["unscored_reason"].startswith("judge call failed: HTTP 500")
    assert outcome.results["metrics"]["TC"]["mean"] is None


def test_personagym_protocol_batches_of_five_two_judges_and_character_indexing() -> None:
    task = make("personagym", limit=1, judges=(JudgeSpec("j1"), JudgeSpec("j2")))
    samples = task.samples()
    answers = [Completion(text=f"answer {i}") for i in range(len(samples))]

    def replies(calls):
        out = []
        for call in calls:
            score = 4 if call.model == "judge:j1" else 2
            text = " ".join(f"({k}) Evaluation: Therefore, the final score is {score}" for k in range(1, 6))
            out.append(Completion(text=text))
        return out

    example_calls, grading_calls, outcome = drive(task, samples, answers, replies)
    assert len(example_calls) == 10  # 5 tasks x 2 batches of 5 questions
    assert "Rubric 5 Examples:" in example_calls[0].request.messages[0].content
    assert len(grading_calls) == 20  # 10 batches x 2 judges
    # Question i of a batch receives character i of the processed examples (reference behaviour).
    user = grading_calls[0].request.messages[1].content
    for char in PROCESSED[:5]:
        assert f"Score Examples: \\n{char}\\n------------------------------" in user
    metrics = outcome.results["metrics"]
    assert metrics["EA"]["mean"] == pytest.approx(3.0)  # mean of the two judges, 4 and 2
    agreement = outcome.results["judge_agreement"]["pairs"][0]
    assert agreement["n_both_scored"] == 50 and agreement["exact_agreement"] == 0.0
    assert agreement["mean_abs_difference"] == pytest.approx(2.0)
    assert outcome.results["per_judge"]["j1"]["metrics"]["PersonaScore"]["mean"] == pytest.approx(4.0)
    assert any("uses 2 judge(s)" in w for w in make("personagym", limit=1).warnings)


def test_greedy_top_p_policy_for_servers_that_reject_zero_is_named_and_recorded() -> None:
    task = make("personagym-light", limit=1, greedy_top_p="one")
    samples = task.samples()
    example_calls, grading_calls, _ = drive(
        task, samples, [Completion(text="a") for _ in samples], lambda calls: [verdict(3) for _ in calls]
    )
    assert {c.request.params.top_p for c in example_calls + grading_calls} == {1.0}
    assert {c.request.params.temperature for c in grading_calls} == {0.0}
    protocol = task.manifest()["protocol"]
    assert protocol["greedy_top_p_policy"] == "one" and protocol["judge_params"]["top_p"] == 1.0
    assert make("personagym-light", limit=1).manifest()["protocol"]["judge_params"]["top_p"] == 0.0
