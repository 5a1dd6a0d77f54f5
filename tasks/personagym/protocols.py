"""The two named PersonaGym judging protocols (see docs: personagym.md)."""

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
            "OpenCharacter (Tables 3 and 5): score examples one question at a time, judge batches "
            "of 1, a single judge (gpt-4o-2024-08-06 in the paper)"
        ),
        judge_batch_size=1,
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
