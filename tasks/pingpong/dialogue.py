"""One PingPong dialogue as a job (task_api.Job): the interrogator and the player take turns, then
every judge scores the whole conversation.

Turn t yields the interrogator's call (USER_ROLE), then the player's (MODEL_ROLE), one call per
yield: each depends on the other's last reply. Every call goes through the run's store, so a rerun
after a kill replays the stored turns without sending them and continues at the first missing one.
A turn whose call failed (after the scheduler's bounded retries) or whose reply is unusable stops
the dialogue: it is returned unscored with that reason and is never judged; the other dialogues go
on. After the last turn, all judges' calls are yielded at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.requests import Completion, GenerationParams
from rolebench_eval.task_api import MODEL_ROLE, USER_ROLE, Job, JudgeSpec, ModelCall

from . import parsing, protocol

STAGE_USER = "interrogate"
STAGE_PLAYER = "generate"
STAGE_JUDGE = "judge_dialogue"


@dataclass(frozen=True)
class DialogueParams:
    interrogator: GenerationParams
    player: GenerationParams
    judge: GenerationParams
    user_check: bool = True  # ask an unusable interrogator reply again (ModelCall.check)


@dataclass
class DialogueResult:
    """What `finish` needs of one dialogue."""

    sample_id: str
    n_turns: int  # turns asked for
    messages: protocol.ChatMessages = field(default_factory=list)  # normalised, as the prompts saw them
    turn_calls: list[dict[str, Any]] = field(default_factory=list)  # per turn: raw replies, usage
    failure: str | None = None  # why the dialogue stopped before its last turn
    failed_turn: int | None = None
    judge_prompt: list[dict[str, str]] | None = None
    judge_replies: tuple[Completion, ...] = ()  # one per judge, in settings order


def _usage(completion: Completion) -> dict[str, int | None]:
    return {"prompt_tokens": completion.usage.prompt_tokens, "completion_tokens": completion.usage.completion_tokens}


def _call_info(completion: Completion) -> dict[str, Any]:
    return {
        "reply": completion.text,
        "error": completion.error,
        "attempts": completion.attempts,
        "attempt_errors": list(completion.attempt_errors),
        "finish_reason": completion.finish_reason,
        "usage": _usage(completion),
        "notes": list(completion.notes),
    }


def dialogue_job(
    sample_id: str,
    settings: protocol.Settings,
    character: protocol.Character,
    situation: protocol.Situation,
    n_turns: int,
    judges: Sequence[JudgeSpec],
    params: DialogueParams,
) -> Job:
    result = DialogueResult(sample_id, n_turns)
    messages = result.messages
    for turn in range(1, n_turns + 1):
        request = protocol.interrogator_request(settings, character, situation, messages, params.interrogator)
        check = parsing.interrogator_check if params.user_check else None
        (asked,) = yield [ModelCall(USER_ROLE, STAGE_USER, request, check=check)]
        info: dict[str, Any] = {"turn": turn, "user": _call_info(asked)}
        result.turn_calls.append(info)
        if not asked.ok:
            return _stopped(result, turn, f"interrogator call failed at turn {turn}: {asked.error}")
        utterance, problem = parsing.next_utterance(asked.text or "")
        if utterance is None:
            return _stopped(result, turn, f"interrogator reply unusable at turn {turn}: {problem}")
        messages.append({"role": "user", "content": utterance})
        request = protocol.player_request(settings, character, messages, params.player)
        (answer,) = yield [ModelCall(MODEL_ROLE, STAGE_PLAYER, request, check=parsing.player_check)]
        info["player"] = _call_info(answer)
        if not answer.ok:
            return _stopped(result, turn, f"player call failed at turn {turn}: {answer.error}")
        # The scheduler hands an answer that stayed empty as an ok reply (flagged): unusable here,
        # since the reference stops the dialogue on a reply under 2 characters.
        problem = parsing.player_check(answer.text or "")
        if problem is not None:
            return _stopped(result, turn, f"{problem} at turn {turn} (after {answer.attempts} attempt(s))")
        messages.append({"role": "assistant", "content": protocol.normalise_reply(answer.text or "")})
    if judges:
        request = protocol.judge_request(settings, character, situation, messages, params.judge)
        result.judge_prompt = request.messages_json()
        calls = [
            # The embedded smoke judge's replies rarely parse: retrying them would triple its
            # calls for nothing; they stay unscored with the reason.
            ModelCall(judge.role, STAGE_JUDGE, request, check=None if judge.smoke else parsing.judge_check(n_turns))
            for judge in judges
        ]
        result.judge_replies = tuple((yield calls))
    return result


def _stopped(result: DialogueResult, turn: int, reason: str) -> DialogueResult:
    result.failure, result.failed_turn = reason, turn
    return result
