"""PersonaGym rubric judge: request bytes and reply parsing, against hand-checked expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolebench_eval.judges.rubric_judge import (
    RubricPrompts,
    examples_reply_problem,
    grading_reply_problem,
    grading_request,
    parse_grading_reply,
    process_examples,
    reference_batch_score,
    score_examples_request,
)
from rolebench_eval.requests import GenerationParams

DATA = Path(__file__).resolve().parents[2] / "tasks" / "personagym" / "data"
PARAMS = GenerationParams(temperature=0.0, top_p=0.0, max_tokens=3000)


def single_quoted_repr(text: str) -> str:
    """Python's repr of a str that holds both quote kinds, built by hand (no repr())."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return "'" + escaped + "'"


@pytest.fixture(scope="module")
def prompts() -> RubricPrompts:
    read = lambda rel: (DATA / rel).read_text(encoding="utf-8")  # noqa: E731
    return RubricPrompts(
        score_examples_inner=read("prompts/score_examples/prompt.txt"),
        single_examples=read("prompts/score_examples/single_examples.txt"),
        parallel_examples=read("prompts/score_examples/parallel_examples.txt"),
        grading_system=read("prompts/rubric_grading/sys_prompt.txt"),
        grading_user=read("prompts/rubric_grading/prompt.txt"),
    )


@pytest.fixture(scope="module")
def rubric() -> str:
    return (DATA / "rubrics" / "Expected Action.txt").read_text(encoding="utf-8")


def test_single_score_examples_request_is_the_protocol_bytes(prompts: RubricPrompts, rubric: str) -> None:
    request = score_examples_request(prompts, "A chef.", ["What do you cook?"], rubric, PARAMS, one_at_a_time=True)
    assert [m.role for m in request.messages] == ["user"]  # no system message in this call
    inner = (
        "Given the following persona, question, and rubric, generate an example  for each of the possible "
        "scores in the rubric for the given persona and question. You are only giving an example of a "
        "response from the given persona for the given question that would attain each score and you must "
        "follow the output format and fill in an example for each of the scores. \n\nPersona: \n\nA chef."
        "\n\nQuestion: \n\nWhat do you cook?\n\nRubric:\n\n" + rubric + "\n \n-------------------------  \n"
        "Output Format (example responses ONLY): \nScore 1:  Response - \n\nScore 2:  Response - \n\n"
        "Score 3:  Response - \n\nScore 4:  Response - \n\nScore 5:  Response - \n-------------------------\n\n"
    )
    # The rubric's own placeholders stay unformatted inside the examples prompt.
    assert "{score_example}" in inner and "{response}" in inner
    expected = prompts.single_examples.replace("{rubrics}", "[" + single_quoted_repr(inner) + "]")
    assert request.messages[0].content == expected
    assert expected.startswith("You are given several rubrics below")
    assert "Rubric 2 Examples" not in expected
    assert request.params == PARAMS


def test_parallel_score_examples_holds_every_question(prompts: RubricPrompts, rubric: str) -> None:
    request = score_examples_request(prompts, "P", ["q1", "q2"], rubric, PARAMS, one_at_a_time=False)
    content = request.messages[0].content
    assert content.startswith(prompts.parallel_examples.split("{rubrics}")[0])
    assert content.count("Question: \\n\\nq1\\n") == 1 and content.count("Question: \\n\\nq2\\n") == 1
    assert content.rstrip().endswith("]")
    with pytest.raises(ValueError):
        score_examples_request(prompts, "P", ["q1", "q2"], rubric, PARAMS, one_at_a_time=True)


def test_grading_request_bytes(prompts: RubricPrompts, rubric: str) -> None:
    request = grading_request(prompts, rubric, "A chef.", [("Q?", "An 'answer'.", 'Score 1: "x"')], PARAMS)
    system, user = request.messages
    assert system.role == "system" and system.content == prompts.grading_system
    filled = rubric.replace("{score_example}", 'Score 1: "x"').replace("{persona}", "A chef.")
    filled = filled.replace("{question}", "Q?").replace("{response}", "An 'answer'.")
    assert user.content == prompts.grading_user.replace("{rubrics}", "[" + single_quoted_repr(filled) + "]")
    # The format block lists five evaluations even for a batch of one, as the reference sends it.
    assert "(5) Evaluation:" in user.content


def test_process_examples_reference_algorithm() -> None:
    reply = 'Score 1: Response - "bad"\n\nScore 2:  Response - meh\nextra line\n\nScore 3: Response - ok'
    # Continuation lines of a multi-line example are dropped, exactly as the reference does.
    assert process_examples(reply) == 'Score 1: "bad"\n\nScore 2: "meh\n\nScore 3: "ok"'
    assert process_examples("no examples here") == ""


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        ("(1) Evaluation: fine. Therefore, the final score is 4", 1, [(4, None)]),
        ("(1) Evaluation: Therefore, the final score is 5\n(2) Evaluation:\n", 1, [(5, None)]),
        (
            "(1) Evaluation: a. Therefore, the final score is 2 (2) Evaluation: b, no verdict",
            2,
            [(2, None), (None, "no 'Therefore, the final score is N' in segment")],
        ),
        ("(1) Evaluation: Therefore, the final score is 7", 1, [(None, "score 7 outside 1..5")]),
        ("(1) Evaluation: Therefore, the final score is 0", 1, [(None, "score 0 outside 1..5")]),
        ("I think it deserves a 4.", 1, [(None, "no '(N) Evaluation:' segments in the reply")]),
        (
            "(1) Evaluation: Therefore, the final score is 3",
            2,
            [(3, None), (None, "no segment (2)")],
        ),
        # The first 'final score' of a segment wins, as in the reference regex search.
        ("(1) Evaluation: Therefore, the final score is 3. Therefore, the final score is 5", 1, [(3, None)]),
    ],
)
def test_parse_grading_reply(reply: str, n: int, expected: list[tuple[int | None, str | None]]) -> None:
    assert [(s.score, s.unscored_reason) for s in parse_grading_reply(reply, n)] == expected


def test_reference_batch_score_keeps_the_reference_zero_arithmetic() -> None:
    reply = (
        "(1) Evaluation: x Therefore, the final score is 4 (2) Evaluation: nothing "
        "(3) Evaluation: Therefore, the final score is 2"
    )
    assert reference_batch_score(reply) == 3.0  # mean of non-zero scores: (4 + 2) / 2
    assert reference_batch_score("(1) Evaluation: none") == 0.0
    assert reference_batch_score(None) == 0.0  # a failed call counts 0 in the reference
    assert reference_batch_score("Error") == 0.0  # what the reference's failed call returns
    # The reference splits by position: an echoed empty format block scores 0 per segment, and
    # only non-zero scores are averaged; a repeated label counts twice.
    echoed = "(1) Evaluation:\n(2) Evaluation: \n(1) Evaluation: Therefore, the final score is 4"
    assert reference_batch_score(echoed) == 4.0
    repeated = "(1) Evaluation: Therefore, the final score is 4 (1) Evaluation: Therefore, the final score is 1"
    assert reference_batch_score(repeated) == 2.5


FORMAT_ECHO = "(1) Evaluation:\n(2) Evaluation: \n(3) Evaluation: \n(4) Evaluation: \n(5) Evaluation: \n\n"


def verdict(label: int, score: int | str) -> str:
    return f"({label}) Evaluation: because. Therefore, the final score is {score}\n"


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        # The prompt's empty format block echoed before the real evaluation (batch of one).
        (FORMAT_ECHO + verdict(1, 4), 1, [(4, None)]),
        (FORMAT_ECHO + verdict(1, 2) + verdict(2, 5), 2, [(2, None), (5, None)]),
        # A skipped number: question 3 keeps its own score, question 2 is unscored.
        (verdict(1, 4) + verdict(3, 2), 3, [(4, None), (None, "no segment (2)"), (2, None)]),
        # Out of order: matched by label.
        (verdict(2, 5) + verdict(1, 1), 2, [(1, None), (5, None)]),
        # A label repeated with different scores is ambiguous; the other question keeps its score.
        (
            verdict(1, 4) + verdict(1, 2) + verdict(2, 5),
            2,
            [(None, "segment (1) repeated with different scores (2, 4)"), (5, None)],
        ),
        # Repeated with the same score, or where only one copy has a score: that score.
        ("(1) Evaluation:\n" + verdict(1, 3) + verdict(1, 3), 1, [(3, None)]),
        ("(1) Evaluation: see below.\n(2) Evaluation:\n" + verdict(2, 4) + verdict(1, 2), 2, [(2, None), (4, None)]),
        # Only the empty format block: nothing to score.
        (FORMAT_ECHO, 1, [(None, "no '(N) Evaluation:' segments in the reply")]),
        # A label beyond the batch is ignored, it does not shift the others.
        (verdict(2, 1) + verdict(1, 5), 1, [(5, None)]),
    ],
)
def test_segments_are_matched_by_label(reply: str, n: int, expected: list[tuple[int | None, str | None]]) -> None:
    assert [(s.score, s.unscored_reason) for s in parse_grading_reply(reply, n)] == expected


def test_reply_checks_name_what_makes_a_reply_unusable() -> None:
    examples = 'Score 1: Response - "a"\nScore 2: Response - "b"'
    assert examples_reply_problem(examples) is None
    for unusable in ["", "Sure, here are the examples:", "Score 1: a\nScore 2: b"]:
        assert examples_reply_problem(unusable) == "score examples reply has no 'Score N: Response -' entries"
    no_verdict = "judge reply has no '(N) Evaluation:' segment with 'Therefore, the final score is N'"
    for unusable in ["", "I would give it a 4.", FORMAT_ECHO, "(1) Evaluation: good, a 4."]:
        assert grading_reply_problem(unusable) == no_verdict
    assert grading_reply_problem(FORMAT_ECHO + verdict(1, 4)) is None
    # A final score outside 1..5 is a parseable verdict: that question is unscored, not the call.
    assert grading_reply_problem(verdict(1, 9)) is None
