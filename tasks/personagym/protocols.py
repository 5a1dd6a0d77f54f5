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
