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


def five_verdicts(score: int, n: int = 5) -> Completion:
    return Completion(text=" ".join(f"({k}) Evaluation: Therefore, the final score is {score}" for k in range(1, n + 1)))


def test_opencharacter_full_batches_five_questions_with_examples_one_at_a_time() -> None:
    task = make("personagym", limit=1, protocol="opencharacter-full")
    samples = task.samples()
    answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
    example_calls, grading_calls, outcome = drive(
        task, samples, answers, lambda calls: [five_verdicts(4) for _ in calls]
    )
    # Score examples: one call per question (50), each the single_examples.txt prompt.
    assert len(example_calls) == 50
    assert all(c.request.messages[0].content.startswith("You are given several rubrics below") for c in example_calls)
    assert all("Rubric 2 Examples" not in c.request.messages[0].content for c in example_calls)
    # Judge: 5 tasks x 2 batches of 5 questions, one judge, each question with its whole examples.
    assert len(grading_calls) == 10 and {c.model for c in grading_calls} == {"judge:j1"}
    user = grading_calls[0].request.messages[1].content
    assert user.count("Score Examples: \\n" + repr(PROCESSED)[1:-1] + "\\n---") == 5
    assert [user.count(f"answer {i}") for i in range(6)] == [1, 1, 1, 1, 1, 0]
    assert outcome.results["metrics"]["PersonaScore"]["mean"] == pytest.approx(4.0)
    protocol = task.manifest()["protocol"]
    assert (protocol["name"], protocol["judge_batch_size"], protocol["score_examples"]) == (
        "opencharacter-full", 5, "one question at a time")
    assert protocol["examples_character_indexing"] is False and protocol["expected_judges"] == 1
    assert not task.warnings


def test_opencharacter_full_on_light_sends_the_same_requests_as_opencharacter() -> None:
    runs = {}
    for protocol in ("opencharacter", "opencharacter-full"):
        task = make("personagym-light", limit=2, protocol=protocol)
        samples = task.samples()
        answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
        example_calls, grading_calls, _ = drive(task, samples, answers, lambda calls: [verdict(4) for _ in calls])
        runs[protocol] = [c.request.to_json() for c in example_calls + grading_calls]
    assert len(runs["opencharacter"]) == 20
    assert runs["opencharacter"] == runs["opencharacter-full"]


def test_full_benchmark_defaults_and_table5_warning() -> None:
    assert make("personagym", limit=1).protocol.name == "personagym"  # Table 1 is its own paper
    registry = discover()
    for name in ("personagym", "personagym-light"):
        assert "opencharacter-full" in registry.tasks[name].config["protocols"]
    warned = make("personagym", limit=1, protocol="opencharacter").warnings
    assert any("Table 5" in w and "opencharacter-full" in w for w in warned)
    assert not make("personagym-light", limit=1, protocol="opencharacter").warnings


def test_calls_carry_reply_checks_for_unusable_examples_and_verdicts() -> None:
    task = make("personagym-light", limit=1)
    samples = task.samples()
    example_calls, grading_calls, _ = drive(
        task, samples, [Completion(text="a") for _ in samples], lambda calls: [verdict(3) for _ in calls]
    )
    check = example_calls[0].check
    assert check is not None and check(EXAMPLES_REPLY) is None
    assert check("Here are the examples you asked for.") == "score examples reply has no 'Score N: Response -' entries"
    judge_check = grading_calls[0].check
    assert judge_check is not None and judge_check(verdict(3).text) is None
    assert judge_check("(1) Evaluation:\n(2) Evaluation: \n(3) Evaluation: ") == (
        "judge reply has no '(N) Evaluation:' segment with 'Therefore, the final score is N'")
    # The embedded smoke judge is not checked (its replies never are usable; retrying them would
    # only repeat its calls on every rerun); a real judge beside it is.
    smoke = make("personagym-light", limit=1, judges=(JudgeSpec("embedded", smoke=True), JudgeSpec("j2")))
    example_calls, grading_calls, _ = drive(
        smoke, samples, [Completion(text="a") for _ in samples], lambda calls: [verdict(3) for _ in calls]
    )
    assert example_calls[0].check is None
    assert [c.check is None for c in grading_calls[:2]] == [True, False]
    assert make("personagym-light", limit=1, judges=(JudgeSpec("embedded", smoke=True),),
                has_examples_model=True).evaluate(samples, [Completion(text="a") for _ in samples]).send(None)[0].check


def test_examples_that_process_to_nothing_are_never_judged_under_exclude() -> None:
    task = make("personagym-light", limit=1)
    samples = task.samples()
    evaluation = task.evaluate(samples, [Completion(text="a") for _ in samples])
    example_calls = next(evaluation)
    # The TC examples reply is a 200 with no usable entries (stored before checks existed).
    replies = [Completion(text=EXAMPLES_REPLY) for _ in example_calls]
    replies[1] = Completion(text="I'm sorry, I can't help with that.")
    grading_calls = evaluation.send(replies)
    assert len(grading_calls) == 4  # TC is not judged against an empty examples block
    with pytest.raises(StopIteration) as stop:
        evaluation.send([verdict(4) for _ in grading_calls])
    record = stop.value.value.records[1]
    assert record["score"] is None and record["judgments"] == []
    assert record["unscored_reason"] == (
        "score examples reply unusable: score examples reply has no 'Score N: Response -' entries")
    assert stop.value.value.results["metrics"]["TC"]["mean"] is None


def test_empty_answers_are_judged_flagged_and_counted() -> None:
    task = make("personagym-light", limit=1)
    samples = task.samples()
    answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
    answers[2] = Completion(text="", notes=("empty answer after 3 attempts",), attempts=3)
    _, grading_calls, outcome = drive(task, samples, answers, lambda calls: [verdict(1) for _ in calls])
    assert len(grading_calls) == 5  # the empty answer is judged as the model's answer
    assert "Response: \\n\\n\\n\\n\\nEvaluation Form" in grading_calls[2].request.messages[1].content
    assert [r["empty_answer"] for r in outcome.records] == [False, False, True, False, False]
    assert outcome.records[2]["score"] == 1
    assert outcome.results["items"]["empty_answers"] == 1
    assert outcome.results["items"]["n_unscored"] == 0


def test_manifest_records_what_changes_the_measurement() -> None:
    protocol = make("personagym-light", limit=1).manifest()["protocol"]
    assert protocol["examples_model_role"] == "examples" and protocol["examples_model"] == "first judge"
    assert protocol["segment_matching"].startswith("by (N) label")
    assert make("personagym-light", limit=1, has_examples_model=True).manifest()["protocol"]["examples_model"] == (
        "--examples-model")
    manifest = make("personagym-light", limit=1, unscored_policy="reference-zero").manifest()
    assert manifest["unscored_policy"] == "reference-zero"
    assert manifest["failed_calls"] == "judged as 'Error' (reference code)"
    assert make("personagym-light", limit=1).manifest()["failed_calls"] == "unscored"
