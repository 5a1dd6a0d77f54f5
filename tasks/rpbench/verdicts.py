"""Reading the judge's JSON reply and turning slot choices into verdicts for the model under test.

Parsing follows the reference's `extract_and_parse_json`: the first ```json fenced block if there is
one, else the whole reply, read with json_repair (which mends the small JSON errors models make).
The reference then retries the judge, without bound, until the parsed reply has "winner" and
"next_round_user_speaks"; here that is the call's content check (`judge_reply_check`), retried a
bounded number of times by the scheduler, after which the dialogue stops unscored with the reason.
Unlike the reference, a reply must parse to a JSON object: a reply that parses to a string holding
both words would pass its `in` test and then crash it.

A judged round's winner is "model_a" or "model_b"; anything else (null, another word) is no
verdict: the reference skips such a round in its win rate, here it is an unscored round with the
reason. Under `both` (the default order policy) each round is judged with the model under test in
slot a and in slot b: the same answer chosen both times is a win or a loss, different answers (the
judge followed the slot) a tie, counted as inconsistent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SLOTS = ("model_a", "model_b")
_FENCED = re.compile(r"```json\s+(.+?)\s+```", re.DOTALL)


def parse_reply(text: str) -> Any:
    """The judge's (or a scene NPC's) reply as json_repair reads it (a dict when usable)."""
    import json_repair  # a dependency of rbe, imported where used: only RPBench reads it

    match = _FENCED.search(text)
    try:
        return json_repair.loads(match.group(1) if match else text)
    except Exception:  # noqa: BLE001 - json_repair may raise on pathological input; unusable then
        return None


def judge_reply_check(text: str) -> str | None:
    """Why a judge reply is unusable (retried, then the dialogue is unscored), or None."""
    parsed = parse_reply(text)
    if not isinstance(parsed, dict):
        return "the judge's reply is not a JSON object"
    missing = [key for key in ("winner", "next_round_user_speaks") if key not in parsed]
    if missing:
        return f"the judge's JSON reply has no {' or '.join(repr(k) for k in missing)}"
    return None


def scene_state(text: str) -> bool | None:
    """A scene NPC's "is_chat_finished", as the reference reads it: the whole reply through
    json_repair, the value taken for its truth; None when it cannot be read (the reference then
    warns of a format error and takes "not finished")."""
    import json_repair

    try:
        parsed = json_repair.loads(text)
        return bool(parsed["is_chat_finished"])
    except Exception:  # noqa: BLE001 - the reference treats any failure as a format error
        return None


@dataclass(frozen=True)
class Judgment:
    """One judge call of a round: which slot held the model under test, and which slot won."""

    order: str  # "primary" (the one the dialogue continues from) or "swapped"
    model_slot: str  # "model_a" or "model_b"
    winner_slot: str | None  # "model_a" / "model_b", None: no verdict
    reason: str | None  # why there is no verdict

    @property
    def outcome(self) -> str | None:
        """'win' / 'loss' for the model under test, None when there is no verdict."""
        if self.winner_slot is None:
            return None
        return "win" if self.winner_slot == self.model_slot else "loss"


def judgment(parsed: dict[str, Any], order: str, model_slot: str) -> Judgment:
    winner = parsed.get("winner")
    if winner in SLOTS:
        return Judgment(order, model_slot, winner, None)
    return Judgment(order, model_slot, None, f"{order} judgment: winner is {winner!r}, not model_a or model_b")


@dataclass(frozen=True)
class RoundVerdict:
    outcome: str | None  # "win" / "loss" / "tie" for the model under test; None: unscored round
    inconsistent: bool = False  # both orders judged, and they chose different answers
    reason: str | None = None


VALUES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def combine(judgments: list[Judgment]) -> RoundVerdict:
    """A round's verdict from its one (random-once) or two (both) judgments."""
    for single in judgments:
        if single.outcome is None:
            return RoundVerdict(None, reason=single.reason)
    outcomes = {single.outcome for single in judgments}
    if len(outcomes) == 1:
        return RoundVerdict(outcomes.pop())
    return RoundVerdict("tie", inconsistent=True)
