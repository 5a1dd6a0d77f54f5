"""The named PersonaGym judging protocols (see docs: personagym.md).

Numbers from different protocols are not comparable: each name fixes how many questions one judge
call grades, how score examples are requested and delivered, and how many judges are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    judge_batch_size: int  # questions of one persona and task per judge call
    examples_one_at_a_time: bool  # score examples per question (True) or per batch (False)
    # The reference code indexes the batched examples reply as a string, so question i receives
    # its i-th character. Reproduced only where the protocol is the reference's.
    examples_character_indexing: bool
    expected_judges: int
    judge_temperature: float = 0.0
    judge_top_p: float = 0.0
    judge_max_tokens: int = 3000


PROTOCOLS: dict[str, Protocol] = {
    "opencharacter": Protocol(
        name="opencharacter",
        description=(
            "OpenCharacter Table 3 (PersonaGym-Light): score examples one question at a time, "
            "judge batches of 1, a single judge (gpt-4o-2024-08-06 in the paper)"
        ),
        judge_batch_size=1,
        examples_one_at_a_time=True,
        examples_character_indexing=False,
        expected_judges=1,
    ),
    # The OpenCharacter authors' code on the full benchmark (Table 5): the judge grades the
    # questions of one persona and task in batches of 5, while score examples are still written
    # one question at a time (single_examples.txt) and delivered whole. On Light (one question per
    # persona and task) every batch has one question, so its requests equal `opencharacter`'s.
    "opencharacter-full": Protocol(
        name="opencharacter-full",
        description=(
            "OpenCharacter Table 5 (full PersonaGym): score examples one question at a time, "
            "judge batches of 5, a single judge (gpt-4o-2024-08-06 in the paper)"
        ),
        judge_batch_size=5,
        examples_one_at_a_time=True,
        examples_character_indexing=False,
        expected_judges=1,
    ),
    "personagym": Protocol(
        name="personagym",
        description=(
            "PersonaGym paper (Table 1): score examples per batch of 5 questions (delivered by "
            "the reference code's character indexing), judge batches of 5, two judges averaged "
            "(gpt-4o-2024-05-13 and Llama-3-70B-chat in the paper)"
        ),
        judge_batch_size=5,
        examples_one_at_a_time=False,
        examples_character_indexing=True,
        expected_judges=2,
    ),
}


# -- guided judge output (--judge-output guided) ----------------------------------------------
# The formats the protocol's prompts ask for, as regexes a constrained decoder follows: the judge
# reply (`rubric_judge.parse_grading_reply`) and the score examples reply (`process_examples`).
# Each is written in the subset both Python `re` and the decoders (llguidance, vLLM) read: no
# lookarounds, no lazy quantifiers, no backreferences. A reply that matches one parses into a
# verdict for every question (or five usable examples); real replies of strong judges match too.
#
# An evaluation's text may hold anything but a new "(N) ..." label: a "(" must not be followed by
# a digit, so the text cannot start another segment. Its length is bounded so that a decoder that
# would ramble reaches the score sentence within the call's max_tokens (a cut-off reply is still
# unscored, with its reason, like any other).
# One character per token: the most tokens ASCII text can take (a weak model's degenerate text,
# "(A) 1.5\n(B) 2.5 ...", comes close; English prose averages about 4 characters per token).
_CHARS_PER_TOKEN = 1
_SEGMENT_OVERHEAD_TOKENS = 24  # label, score sentence and separators
_EXAMPLE_OVERHEAD_TOKENS = 10  # "Score k:  Response - " and the line break
_EVALUATION_CHAR = r"(?:[^(]|\([^0-9(])"
_GAP = r"[ \n]{0,3}"


def segment_text_limit(
    max_tokens: int, n_segments: int, overhead_tokens: int = _SEGMENT_OVERHEAD_TOKENS
) -> int:
    """Characters of free text per segment that still leave room for every segment's fixed part."""
    per_segment = max_tokens // max(1, n_segments) - overhead_tokens
    return max(16, per_segment * _CHARS_PER_TOKEN)


def grading_regex(n_questions: int, max_tokens: int) -> str:
    """The judge reply: "(1) Evaluation: ... Therefore, the final score is N" for each question
    1..n in order, N in 1..5 (the rubric's range), nothing before the first label."""
    if n_questions < 1:
        raise ValueError("a judge batch has at least one question")
    # A unit of the text is one character, or "(" and the next one: half the limit in units
    # bounds the text to the limit in characters (and tokens).
    units = max(8, segment_text_limit(max_tokens, n_questions) // 2)
    segments = [
        rf"\({k}\) Evaluation:{_GAP}{_EVALUATION_CHAR}{{0,{units}}}"
        r"Therefore, the final score is [1-5]\.?"
        for k in range(1, n_questions + 1)
    ]
    return _GAP.join(segments) + _GAP


def examples_regex(n_questions: int, max_tokens: int, *, one_at_a_time: bool) -> str:
    """The score examples reply: "Score k: Response - <one line>" for k = 1..5, as the
    single_examples prompt's output format shows; per batch (parallel_examples), one
    "Rubric i Examples:" block per question. Examples are one line each: `process_examples`
    keeps only the first line of an example anyway."""
    blocks = 1 if one_at_a_time else n_questions
    limit = segment_text_limit(max_tokens, 5 * blocks, _EXAMPLE_OVERHEAD_TOKENS)
    line = rf"[^\n]{{1,{limit}}}"
    scores = r"\n{1,2}".join(rf"Score {k}: {{1,2}}Response - {line}" for k in range(1, 6))
    if one_at_a_time:
        return rf"(?:Rubric 1 Examples:\n{{1,2}})?{scores}\n?"
    rubrics = [rf"Rubric {i} Examples:\n{{1,2}}{scores}" for i in range(1, blocks + 1)]
    return r"\n{1,2}".join(rubrics) + r"\n?"
