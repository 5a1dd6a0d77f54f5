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
from functools import lru_cache

from rolebench_eval.requests import ChatRequest, GenerationParams, Message

_EXAMPLE_PATTERN = re.compile(
    r'Score (\d+): *Response - *"?(.*?)"?(?=\n*Score \d+: *Response -|$)', re.S
)
_SEGMENT_PATTERN = re.compile(r"\(\d+\) Evaluation:(.*?)(?=\(\d+\) Evaluation:|$)", re.DOTALL)
# The same split, keeping each segment's label so that question k is judged by segment (k).
_LABELLED_SEGMENT_PATTERN = re.compile(
    r"\((\d+)\) Evaluation:(.*?)(?=\(\d+\) Evaluation:|$)", re.DOTALL
)
_SCORE_PATTERN = re.compile(r"Therefore, the final score is\s*(\d+)")

SCORE_RANGE = range(1, 6)
# What the reference code's API wrapper returns for a call that failed after its retries; the
# reference then uses it as the reply (an answer judged as "Error", examples processed from it).
REFERENCE_ERROR_TEXT = "Error"


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


# A reply is processed by its content check, by the delivery to its batch's questions and by the
# reader of samples.jsonl: remembered for the replies of the batches in flight (a pure function).
@lru_cache(maxsize=4096)
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
    """The reference's positional split of a reply into segments (stripped, empty ones kept)."""
    return [segment.strip() for segment in _SEGMENT_PATTERN.findall(reply)]


def labelled_segments(reply: str) -> list[tuple[int, str]]:
    """Every `(N) Evaluation:` segment with its label N, in reply order (same split as above)."""
    return [(int(label), text.strip()) for label, text in _LABELLED_SEGMENT_PATTERN.findall(reply)]


def parse_segment_score(segment: str) -> int | None:
    """The first 'Therefore, the final score is N' of a segment, as the reference parses it."""
    match = _SCORE_PATTERN.search(segment)
    return int(match.group(1)) if match else None


def parse_grading_reply(reply: str, n_questions: int) -> list[SegmentScore]:
    """Scores for the `n_questions` questions of a batch: question k is judged by segment `(k)`.

    Segments are matched by their label, not by position, because judges echo the prompt's
    empty format block ("(1) Evaluation:" .. "(5) Evaluation:", even for a batch of one) before
    their real evaluations, skip numbers, or repeat one. The rules:
    - an empty segment (nothing after its label) is an echo of the format block and is ignored;
    - labels outside 1..n_questions are ignored;
    - question k is unscored when no non-empty segment `(k)` exists ("no segment (k)"), when
      none of its segments has a final score, or when its segments give different final scores
      (ambiguous: "segment (k) repeated with different scores (2, 4)"); a label repeated with
      the same score, or repeated where only one copy has a score, is that score;
    - a final score outside 1..5 is unscored, never clipped.
    The reference instead maps a missing score to 0 and averages whatever it found by position;
    that arithmetic is `reference_batch_score`, used only under the `reference-zero` policy.
    """
    segments = [(label, text) for label, text in labelled_segments(reply) if text]
    if not segments:
        return [SegmentScore(None, "no '(N) Evaluation:' segments in the reply", None)] * n_questions
    results = []
    for k in range(1, n_questions + 1):
        mine = [text for label, text in segments if label == k]
        scored = [(score, text) for text in mine if (score := parse_segment_score(text)) is not None]
        distinct = sorted({score for score, _ in scored})
        if not mine:
            results.append(SegmentScore(None, f"no segment ({k})", None))
        elif not scored:
            results.append(
                SegmentScore(None, "no 'Therefore, the final score is N' in segment", mine[0])
            )
        elif len(distinct) > 1:
            listed = ", ".join(str(s) for s in distinct)
            results.append(
                SegmentScore(None, f"segment ({k}) repeated with different scores ({listed})", mine[0])
            )
        elif distinct[0] not in SCORE_RANGE:
            results.append(SegmentScore(None, f"score {distinct[0]} outside 1..5", scored[0][1]))
        else:
            results.append(SegmentScore(distinct[0], None, scored[0][1]))
    return results


def examples_reply_problem(text: str) -> str | None:
    """`ModelCall.check` of a score-examples reply: unusable when it post-processes to nothing
    (the judge would otherwise grade against an empty examples block)."""
    if process_examples(text):
        return None
    return "score examples reply has no 'Score N: Response -' entries"


def grading_reply_problem(text: str) -> str | None:
    """`ModelCall.check` of a judge reply: unusable when no `(N) Evaluation:` segment carries a
    final score (nothing in it could become a score, for any question of the batch)."""
    if any(parse_segment_score(segment) is not None for _, segment in labelled_segments(text)):
        return None
    return "judge reply has no '(N) Evaluation:' segment with 'Therefore, the final score is N'"


def reference_batch_score(reply: str | None) -> float:
    """The reference code's batch score: every segment's score (0 when unparsed), split by
    position, averaged over the non-zero ones, 0 if none. A failed call is, in the reference,
    the reply `Error` (no segments, so 0); None is read the same way. Used only by the named
    `reference-zero` policy, to reproduce published numbers."""
    if reply is None:
        reply = REFERENCE_ERROR_TEXT
    scores = [parse_segment_score(s) or 0 for s in parse_segments(reply)]
    nonzero = [s for s in scores if s != 0]
    return sum(nonzero) / len(nonzero) if nonzero else float(sum(scores))
