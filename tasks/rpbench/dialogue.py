"""One RPBench-Auto dialogue as a job: the judge plays the user, two candidates answer each round.

The job yields, in order (every call through the run's store, so a rerun replays the stored turns
and continues at the first one not stored):

1. the judge's opening: the greeting in both slots; its "next_round_user_speaks" opens round 1;
2. per round: the model under test and the baseline answer the same history (one yield), then the
   judge picks the better reply and speaks the user's next line (one yield: with the `both` order
   policy a second call shows the two replies swapped; it is judged, never continued from).

As in the reference, the dialogue continues from the primary judgment: its raw reply becomes the
judge's assistant turn, and the reply in the slot it picked ("model_b"'s when it picked neither)
becomes the candidates' assistant turn. Which candidate sits in slot a in the primary judgment is
drawn per round, as the reference draws it, but from `random.Random(f"{seed}:{sample_id}:{round}")`
so that a rerun asks exactly the same requests. A scene ends early when the winning reply says
"is_chat_finished". A call that failed after the scheduler's retries stops the dialogue: it is
unscored with that reason (its earlier rounds stay in the record, not in the numbers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.requests import Completion, Message
from rolebench_eval.task_api import BASELINE_ROLE, MODEL_ROLE, Job, ModelCall, Sample

from . import prompts, verdicts


@dataclass(frozen=True)
class DialoguePlan:
    """What a dialogue job needs from the task: fixed for the whole run."""

    subset: str  # "character" or "scene"
    rounds: int
    both_orders: bool
    judge_role: str
    judge_label: str
    seed: int
    answer_max_tokens: int | None
    judge_max_tokens: int | None


@dataclass
class DialogueResult:
    sample: Sample
    turns: list[dict[str, Any]] = field(default_factory=list)  # the transcript, in order
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per judged round: judgments, verdict
    stop_reason: str | None = None  # a failed call: the dialogue is unscored
    ended_early: bool = False  # a scene whose winning reply finished it
    format_errors: dict[str, int] = field(default_factory=lambda: {"model": 0, "baseline": 0})
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # per role: tokens of its calls

    def count(self, role: str, completion: Completion) -> None:
        entry = self.usage.setdefault(role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        entry["calls"] += 1
        entry["prompt_tokens"] += completion.usage.prompt_tokens or 0
        entry["completion_tokens"] += completion.usage.completion_tokens or 0


def model_in_slot_a(seed: int, sample_id: str, number: int) -> bool:
    """The primary assignment of round `number`: True puts the model under test in slot a (the
    reference's `model_a = model_1 if random.getrandbits(1)`), seeded so reruns agree."""
    return bool(random.Random(f"{seed}:{sample_id}:{number}").getrandbits(1))


def _failed(result: DialogueResult, what: str, completion: Completion) -> DialogueResult:
    result.stop_reason = f"{what} failed: {completion.error}"
    return result


def dialogue_job(plan: DialoguePlan, sample: Sample) -> Job:
    row = sample.fields["row"]
    result = DialogueResult(sample)
    greeting = prompts.greeting(row)
    candidate = [Message("system", prompts.candidate_system(plan.subset, row)), Message("assistant", greeting)]
    judge = [Message("system", prompts.judge_system(plan.subset, row)), Message("user", prompts.slots(greeting, greeting))]
    result.turns.append({"round": 0, "speaker": "npc", "role": "assistant", "text": greeting, "note": "greeting (data)"})

    def judge_call(stage: str, messages: list[Message]) -> ModelCall:
        return ModelCall(plan.judge_role, stage, prompts.request(messages, plan.judge_max_tokens),
                         check=verdicts.judge_reply_check)

    (opening,) = yield [judge_call("judge_opening", judge)]
    if not opening.ok:
        return _failed(result, "the judge's opening turn", opening)
    result.count("judge", opening)
    parsed = verdicts.parse_reply(opening.text or "")
    judge.append(Message("assistant", opening.text or ""))
    for number in range(1, plan.rounds + 1):
        line = parsed.get("next_round_user_speaks")
        if not isinstance(line, str):
            result.stop_reason = f"round {number}: the judge's reply gives no user line (next_round_user_speaks: {line!r})"
            return result
        candidate.append(Message("user", line))
        result.turns.append({"round": number, "speaker": "user", "role": "user", "text": line, "note": plan.judge_label})
        request = prompts.request(candidate, plan.answer_max_tokens)
        mine, base = yield [ModelCall(MODEL_ROLE, "npc_reply", request), ModelCall(BASELINE_ROLE, "baseline_reply", request)]
        for who, completion in (("the model's reply", mine), ("the baseline's reply", base)):
            if not completion.ok:
                return _failed(result, f"round {number}: {who}", completion)
        result.count("model", mine)
        result.count("baseline", base)
        mine_text, base_text = mine.text or "", base.text or ""
        model_first = model_in_slot_a(plan.seed, sample.sample_id, number)
        slot_a, slot_b = (mine_text, base_text) if model_first else (base_text, mine_text)
        shown = Message("user", prompts.slots(slot_a, slot_b))
        calls = [judge_call("judge_round", [*judge, shown])]
        if plan.both_orders:
            calls.append(judge_call("judge_round_swapped", [*judge, Message("user", prompts.slots(slot_b, slot_a))]))
        replies = yield calls
        for completion in replies:
            if not completion.ok:
                return _failed(result, f"round {number}: the judge's verdict", completion)
            result.count("judge", completion)
        parsed = verdicts.parse_reply(replies[0].text or "")
        model_slot = "model_a" if model_first else "model_b"
        judgments = [verdicts.judgment(parsed, "primary", model_slot)]
        if plan.both_orders:
            swapped = verdicts.parse_reply(replies[1].text or "")
            judgments.append(verdicts.judgment(swapped, "swapped", "model_b" if model_first else "model_a"))
        verdict = verdicts.combine(judgments)
        continued_slot = "model_a" if parsed.get("winner") == "model_a" else "model_b"
        continued_by_model = (continued_slot == "model_a") == model_first
        for speaker, text in (("model", mine_text), ("baseline", base_text)):
            if plan.subset == "scene" and verdicts.scene_state(text) is None:
                result.format_errors[speaker] += 1  # the reference warns and reads "not finished"
            result.turns.append({
                "round": number, "speaker": speaker, "role": "assistant", "text": text,
                "note": "continues the dialogue" if continued_by_model == (speaker == "model") else "not chosen",
            })
        result.rounds.append({
            "round": number,
            "model_in_slot_a": model_first,
            "judgments": [
                {"order": j.order, "model_slot": j.model_slot, "winner_slot": j.winner_slot, "outcome": j.outcome,
                 "reason": j.reason, "reply": reply.text}
                for j, reply in zip(judgments, replies)
            ],
            "verdict": verdict.outcome,
            "inconsistent": verdict.inconsistent,
            "unscored_reason": verdict.reason,
            "length_difference": len(mine_text) - len(base_text),
        })
        reason = parsed.get("decision_reason")
        result.turns.append({"round": number, "speaker": "judge", "role": "judge",
                             "text": f"winner: {parsed.get('winner')!r}" + (f"; {reason}" if reason else ""),
                             "note": f"verdict for the model: {verdict.outcome or 'unscored'}"})
        winner_text = slot_a if continued_slot == "model_a" else slot_b
        if plan.subset == "scene" and parsed.get("winner") in verdicts.SLOTS and verdicts.scene_state(winner_text):
            result.ended_early = number < plan.rounds
            break
        judge += [shown, Message("assistant", replies[0].text or "")]
        candidate.append(Message("assistant", winner_text))
    return result
