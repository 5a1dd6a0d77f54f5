"""The PersonaGym rubric judge: score examples, rubric grading prompts, and reply parsing.

Everything here reproduces the reference implementation byte for byte (PersonaGym,
github.com/vsamuel2003/PersonaGym, and the OpenCharacter fork): the prompts are Python
`str.format` fills whose `{rubrics}` field is the Python `repr` of a list of strings, and the
parsers use the reference regular expressions. Where the reference silently turns failures into
zeros, this module reports them instead (see `parse_grading_reply`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rolebench_eval.requests import ChatRequest, GenerationParams, Message

_EXAMPLE_PATTERN = re.compile(
    r'Score (\d+): *Response - *"?(.*?)"?(?=\n*Score \d+: *Response -|$)', re.S
)
_SEGMENT_PATTERN = re.compile(r"\(\d+\) Evaluation:(.*?)(?=\(\d+\) Evaluation:|$)", re.DOTALL)
_SCORE_PATTERN = re.compile(r"Therefore, the final score is\s*(\d+)")

SCORE_RANGE = range(1, 6)


@dataclass(frozen=True)
class RubricPrompts:
    """The prompt files of the protocol (text exactly as shipped)."""

    score_examples_inner: str  # prompts/score_examples/prompt.txt
    single_examples: str  # prompts/score_examples/single_examples.txt
    parallel_examples: str  # prompts/score_examples/parallel_examples.txt
    grading_system: str  # prompts/rubric_grading/sys_prompt.txt
    grading_user: str  # prompts/rubric_grading/prompt.txt


def score_examples_request(
    prompts: RubricPrompts,
    persona: str,
    questions: list[str],
    rubric: str,
    params: GenerationParams,
    *,
    one_at_a_time: bool,
) -> ChatRequest:
    """The request that asks the examples model for one example answer per score 1..5.

    `rubric` goes in unformatted: its own placeholders stay in the text, as in the reference.
    """
    if one_at_a_time and len(questions) != 1:
        raise ValueError("one-at-a-time score examples take exactly one question")
    inner = [
        prompts.score_examples_inner.format(persona=persona, question=q, rubric=rubric)
        for q in questions
    ]
    wrapper = prompts.single_examples if one_at_a_time else prompts.parallel_examples
    return ChatRequest((Message("user", wrapper.format(rubrics=str(inner))),), params)


def process_examples(reply: str) -> str:
    """Post-process an examples reply into the `score_example` text (reference algorithm)."""
    matches = _EXAMPLE_PATTERN.findall(reply)
    processed = "\n\n".join(f'Score {score}: "{text.strip()}"' for score, text in matches)
    return "\n\n".join(line for line in processed.split("\n") if line.startswith("Score"))


def grading_request(
    prompts: RubricPrompts,
    rubric: str,
    persona: str,
    items: list[tuple[str, str, str]],
    params: GenerationParams,
) -> ChatRequest:
    """The judge request for a batch of (question, answer, score_example) of one persona/task."""
    filled = [
        rubric.format(persona=persona, question=q, response=a, score_example=examples)
        for q, a, examples in items
    ]
    return ChatRequest(
        (
            Message("system", prompts.grading_system),
            Message("user", prompts.grading_user.format(rubrics=str(filled))),
        ),
        params,
    )


@dataclass(frozen=True)
class SegmentScore:
    """The judge's verdict on one question: a score in 1..5, or why there is none."""

    score: int | None
    unscored_reason: str | None
    segment: str | None


def parse_segments(reply: str) -> list[str]:
    return [segment.strip() for segment in _SEGMENT_PATTERN.findall(reply)]


def parse_segment_score(segment: str) -> int | None:
    """The first 'Therefore, the final score is N' of a segment, as the reference parses it."""
    match = _SCORE_PATTERN.search(segment)
    return int(match.group(1)) if match else None


def parse_grading_reply(reply: str, n_questions: int) -> list[SegmentScore]:
    """Scores for the `n_questions` questions of a batch; segment i belongs to question i.

    Unlike the reference (which maps a missing score to 0 and averages whatever it found), a
    missing segment, a segment without a final score, or a score outside 1..5 is unscored with
    its reason.
    """
    segments = parse_segments(reply)
    results = []
    for i in range(n_questions):
        if i >= len(segments):
            reason = (
                "no '(N) Evaluation:' segments in the reply"
                if not segments
                else f"reply has {len(segments)} evaluation segment(s); none for question {i + 1}"
            )
            results.append(SegmentScore(None, reason, None))
            continue
        score = parse_segment_score(segments[i])
        if score is None:
            results.append(
                SegmentScore(None, "no 'Therefore, the final score is N' in segment", segments[i])
            )
        elif score not in SCORE_RANGE:
            results.append(SegmentScore(None, f"score {score} outside 1..5", segments[i]))
        else:
            results.append(SegmentScore(score, None, segments[i]))
    return results


def reference_batch_score(reply: str | None) -> float:
    """The reference code's batch score: every segment's score (0 when unparsed, and 0 for a
    failed call), averaged over the non-zero ones, 0 if none. Used only by the named
    `reference-zero` policy, to reproduce published numbers."""
    if reply is None:
        return 0.0
    scores = [parse_segment_score(s) or 0 for s in parse_segments(reply)]
    nonzero = [s for s in scores if s != 0]
    return sum(nonzero) / len(nonzero) if nonzero else float(sum(scores))
