"""PersonaGym `reference-zero` with failures injected, against the reference arithmetic by hand.

The reference code (docs: personagym.md): a call that fails after its retries returns the text
`Error`, used as the reply: a failed answer is judged as the response `Error`, failed score
examples are `Error` post-processed (an empty examples block), a failed judge reply has no
segments (batch 0). Segments are split by position; an unparsed segment counts 0; a batch scores
the mean of its non-zero segment scores (0 if none); judges are averaged per batch; a task is the
mean of its batches; PersonaScore the mean of the five tasks. Expected numbers below are written
from those rules, not from the code.
"""

from __future__ import annotations

import pytest

from rolebench_eval.requests import Completion
from rolebench_eval.task_api import JudgeSpec, RunSettings
from rolebench_eval.task_registry import build_task, discover

EXAMPLES_REPLY = 'Score 1: Response - "a"\nScore 2: Response - "b"\nScore 3: Response - "c"\nScore 4: Response - "d"\nScore 5: Response - "e"'
FORMAT_ECHO = "(1) Evaluation:\n(2) Evaluation: \n(3) Evaluation: \n(4) Evaluation: \n(5) Evaluation: \n\n"
HTTP_500 = "HTTP 500 server error (gave up after 6 attempt(s))"


def make(name: str, **settings):
    settings.setdefault("judges", (JudgeSpec("j1"),))
    return build_task(discover().tasks[name], RunSettings(**settings))


def reply(*scores: int | None) -> Completion:
    """Segments (1).. in order; None is a segment without a final score."""
    parts = [
        f"({k}) Evaluation: reasons." + (f" Therefore, the final score is {s}" if s is not None else "")
        for k, s in enumerate(scores, 1)
    ]
    return Completion(text="\n".join(parts))


# Full benchmark, persona 0, protocol opencharacter-full: 10 judge batches of 5 in this order.
JUDGE_REPLIES = [
    reply(5, 4, 1, 4, 5),  # EA batch 1: 19/5 = 3.8 (question 3's answer failed: judged as "Error")
    Completion.failure(HTTP_500),  # EA batch 2: the reference reply "Error", no segments: 0
    reply(None, 5, 5, 5, 5),  # TC 1: unparsed segment 0, mean of non-zero 5
    reply(3, 3, 3, 3, 3),  # TC 2: 3                     -> TC (5 + 3) / 2 = 4
    Completion(text=FORMAT_ECHO + reply(2, 2, 4, 4, 4).text),  # LH 1: echo 0s, then 16/5 = 3.2
    Completion(text="I cannot evaluate this."),  # LH 2: no segments: 0 -> LH 1.6
    reply(4, 4, 4, 4, 4),  # PC 1: 4
    reply(5, 5),  # PC 2: 5 (missing segments are simply absent) -> PC 4.5
    reply(2, 2, 2, 2, 2),  # AJ 1: 2
    reply(4, 4, 4, 4, 9),  # AJ 2: the reference takes 9 as a score: 25/5 = 5 -> AJ 3.5
]
EXPECTED = {"EA": 1.9, "TC": 4.0, "LH": 1.6, "PC": 4.5, "AJ": 3.5, "PersonaScore": 15.5 / 5}


def run_with_failures(policy: str):
    task = make("personagym", limit=1, protocol="opencharacter-full", unscored_policy=policy)
    samples = task.samples()
    index = {s.sample_id: i for i, s in enumerate(samples)}
    answers = [Completion(text=f"answer {i}") for i in range(len(samples))]
    answers[index["p000-EA-q2"]] = Completion.failure(HTTP_500)
    evaluation = task.evaluate(samples, answers)
    example_calls = next(evaluation)
    questions = [c.request.messages[0].content for c in example_calls]

    def examples_reply(content: str) -> Completion:
        if samples[index["p000-TC-q0"]].fields["question"] in content:
            return Completion.failure(HTTP_500)
        return Completion(text=EXAMPLES_REPLY)

    grading_calls = evaluation.send([examples_reply(q) for q in questions])
    with pytest.raises(StopIteration) as stop:
        evaluation.send(JUDGE_REPLIES[: len(grading_calls)])
    return example_calls, grading_calls, stop.value.value, index


def test_reference_zero_judges_failed_calls_as_the_reference_does() -> None:
    example_calls, grading_calls, outcome, index = run_with_failures("reference-zero")
    # Every question gets its examples call (examples do not depend on the answer) and every
    # batch keeps its five questions.
    assert len(example_calls) == 50 and len(grading_calls) == 10
    ea_user = grading_calls[0].request.messages[1].content
    assert ea_user.count("Response: \\n\\nError\\n\\n\\nEvaluation Form") == 1
    assert ea_user.index("answer 1") < ea_user.index("\\n\\nError\\n") < ea_user.index("answer 3")
    tc_user = grading_calls[2].request.messages[1].content
    # The failed examples call is delivered as the processed form of "Error": an empty block.
    assert tc_user.count("------------------------------\\n\\n------------------------------") == 1
    assert tc_user.count('------------------------------\\nScore 1: "a"') == 4

    metrics = outcome.results["metrics"]
    for metric, value in EXPECTED.items():
        assert metrics[metric]["mean"] == pytest.approx(value), metric
    assert outcome.results["per_unit"][outcome.records[0]["unit"]]["PersonaScore"] == pytest.approx(3.1)

    # The stand-ins never become a question's own score, and are counted.
    failed_answer = outcome.records[index["p000-EA-q2"]]
    assert failed_answer["score"] is None
    assert failed_answer["unscored_reason"] == f"generation failed: {HTTP_500}"
    assert failed_answer["reference_substitutions"] == ["answer judged as 'Error' (reference-zero)"]
    failed_examples = outcome.records[index["p000-TC-q0"]]
    assert failed_examples["score"] is None
    assert failed_examples["unscored_reason"] == f"score examples call failed: {HTTP_500}"
    assert failed_examples["score_examples"]["delivered"] == ""
    assert outcome.results["items"]["reference_substitutions"] == {
        "answers_judged_as_error": 1,
        "score_examples_from_error": 1,
        "judge_calls_as_error": 1,
        "judge_batches": 10,
    }
    judged_as_error = outcome.records[index["p000-EA-q5"]]["judgments"][0]
    assert judged_as_error["reference_batch_score"] == 0.0 and judged_as_error["substituted_error_text"]


def test_exclude_drops_failed_calls_and_judges_nothing_in_their_place() -> None:
    example_calls, grading_calls, outcome, index = run_with_failures("exclude")
    # Examples are asked for together with the answer (they do not depend on it), so the failed
    # answer has its examples call too; it is still never judged.
    assert len(example_calls) == 50
    ea_user = grading_calls[0].request.messages[1].content
    assert "\\n\\nError\\n" not in ea_user and ea_user.count("Evaluation Form") == 4
    assert grading_calls[2].request.messages[1].content.count("Evaluation Form") == 4
    records = outcome.records
    assert records[index["p000-EA-q2"]]["unscored_reason"] == f"generation failed: {HTTP_500}"
    assert records[index["p000-TC-q0"]]["unscored_reason"] == f"score examples call failed: {HTTP_500}"
    assert records[index["p000-EA-q2"]]["judgments"] == [] and records[index["p000-TC-q0"]]["judgments"] == []
    assert records[index["p000-EA-q2"]]["score_examples"]["unusable_reason"] is None
    assert records[index["p000-EA-q2"]]["judge_prompt"] is None
    assert "reference_substitutions" not in outcome.results["items"]
    # Label-matched verdicts: the echoed block does not shift LH batch 1 (2, 2, 4, 4, 4).
    assert [records[index[f"p000-LH-q{q}"]]["score"] for q in range(5)] == [2, 2, 4, 4, 4]


def test_two_judges_are_averaged_per_batch_and_per_judge_follows_the_policy() -> None:
    judges = (JudgeSpec("j1"), JudgeSpec("j2"))
    # Light, one persona: 5 batches of one question, calls ordered batch by batch, j1 then j2.
    j1 = [reply(4), reply(5), reply(3), reply(4), reply(5)]
    j2 = [reply(2), Completion.failure(HTTP_500), reply(3), reply(None), reply(5)]
    replies = [r for pair in zip(j1, j2) for r in pair]
    results = {}
    for policy in ("reference-zero", "exclude"):
        task = make("personagym-light", limit=1, judges=judges, unscored_policy=policy)
        samples = task.samples()
        evaluation = task.evaluate(samples, [Completion(text="a") for _ in samples])
        calls = next(evaluation)
        grading_calls = evaluation.send([Completion(text=EXAMPLES_REPLY) for _ in calls])
        assert [c.model for c in grading_calls[:2]] == ["judge:j1", "judge:j2"]
        with pytest.raises(StopIteration) as stop:
            evaluation.send(replies)
        results[policy] = stop.value.value.results

    reference = results["reference-zero"]
    # Batch means: EA (4+2)/2 = 3, TC (5+0)/2 = 2.5, LH 3, PC (4+0)/2 = 2, AJ 5 -> 15.5/5.
    expected = {"EA": 3.0, "TC": 2.5, "LH": 3.0, "PC": 2.0, "AJ": 5.0, "PersonaScore": 3.1}
    for metric, value in expected.items():
        assert reference["metrics"][metric]["mean"] == pytest.approx(value), metric
    j2_ref = reference["per_judge"]["j2"]["metrics"]
    assert [j2_ref[m]["mean"] for m in ("EA", "TC", "LH", "PC", "AJ")] == [2.0, 0.0, 3.0, 0.0, 5.0]
    assert j2_ref["PersonaScore"]["mean"] == pytest.approx(2.0)
    assert reference["per_judge"]["j1"]["metrics"]["PersonaScore"]["mean"] == pytest.approx(4.2)

    # Under exclude, j2's failed and unparsed questions are unscored: no PersonaScore for it.
    j2_ex = results["exclude"]["per_judge"]["j2"]
    assert (j2_ex["metrics"]["TC"]["mean"], j2_ex["metrics"]["PersonaScore"]["mean"]) == (None, None)
    assert j2_ex["items"]["n_unscored"] == 2
    assert results["exclude"]["metrics"]["TC"]["mean"] == pytest.approx(5.0)  # j1 alone scored it
