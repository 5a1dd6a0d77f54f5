"""Reading the interrogator's and the judges' JSON replies, and the player's reply check.

The JSON object is taken as the reference's `parse_output` takes it: from the first `{` to the
last `}` of the (normalised) reply, read with `json.loads`. Where the reference's dataclasses
accept anything, these checks are stricter, so that no score comes from a malformed verdict:
a judge reply must score every player turn (one entry per turn, in order), each criterion an
integer on the 1-5 Likert scale of the v2 prompt, `is_refusal` a boolean. A reply that fails is
an unusable reply: asked again (bounded, ModelCall.check), then unscored with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import normalise_reply

CRITERIA = ("in_character", "entertaining", "fluency")
JUDGE_FIELDS = (
    "is_refusal_explanation", "is_refusal",
    "in_character_explanation", "in_character_score",
    "fluency_explanation", "fluency_score",
    "entertaining_explanation", "entertaining_score",
)
LIKERT = range(1, 6)
MIN_PLAYER_CHARS = 2  # the reference asserts a stripped player reply of at least 2 characters


def json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the reply's JSON object, None) or (None, why there is none)."""
    text = normalise_reply(text)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None, "no JSON object in the reply"
    try:
        record = json.loads(text[start : end + 1].strip())
    except json.JSONDecodeError as exc:
        return None, f"reply is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
    if not isinstance(record, dict):
        return None, "reply JSON is not an object"
    return record, None


def next_utterance(text: str) -> tuple[str | None, str | None]:
    """The interrogator's next user utterance, or (None, why the reply is unusable)."""
    record, problem = json_object(text)
    if record is None:
        return None, f"interrogator {problem}"
    utterance = record.get("next_utterance")
    if not isinstance(utterance, str):
        return None, "interrogator reply has no 'next_utterance' string"
    return utterance, None


def interrogator_check(text: str) -> str | None:
    return next_utterance(text)[1]


def player_check(text: str) -> str | None:
    if len(normalise_reply(text)) < MIN_PLAYER_CHARS:
        return f"player reply shorter than {MIN_PLAYER_CHARS} characters"
    return None


@dataclass(frozen=True)
class TurnScore:
    turn: Any  # the judge's own "turn" field, kept for the record (turns are matched by order)
    is_refusal: bool
    scores: dict[str, int]  # criterion -> 1..5
    explanations: dict[str, str]


def judge_scores(text: str, n_turns: int) -> tuple[list[TurnScore] | None, str | None]:
    """One TurnScore per player turn, or (None, why the reply cannot be scored)."""
    record, problem = json_object(text)
    if record is None:
        return None, f"judge {problem}"
    entries = record.get("scores")
    if not isinstance(entries, list):
        return None, "judge reply has no 'scores' list"
    if len(entries) != n_turns:
        return None, f"judge scored {len(entries)} turn(s), the dialogue has {n_turns}"
    turns = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            return None, f"judge scores entry {number} is not an object"
        missing = [f for f in JUDGE_FIELDS if f not in entry]
        if missing:
            return None, f"judge scores entry {number} lacks {', '.join(missing)}"
        if not isinstance(entry["is_refusal"], bool):
            return None, f"judge scores entry {number}: is_refusal is not true/false"
        scores = {}
        for criterion in CRITERIA:
            value = entry[f"{criterion}_score"]
            # 4.0 is the integer 4; 3.5, "4" and true are not Likert options.
            whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not whole or int(value) not in LIKERT:
                return None, f"judge scores entry {number}: {criterion}_score {value!r} is not an integer 1-5"
            scores[criterion] = int(value)
        explanations = {
            key: str(entry[f"{key}_explanation"]) for key in ("is_refusal", *CRITERIA)
        }
        turns.append(TurnScore(entry.get("turn"), entry["is_refusal"], scores, explanations))
    return turns, None


def judge_check(n_turns: int) -> Callable[[str], str | None]:
    """The ModelCall.check of a judge call on a dialogue of `n_turns` player turns."""
    def check(text: str) -> str | None:
        return judge_scores(text, n_turns)[1]

    return check
