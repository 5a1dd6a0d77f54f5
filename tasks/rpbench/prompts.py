"""RPBench-Auto's prompts and request parameters, byte for byte as the reference builds them.

Reference: boson-ai/RPBench-Auto @ 01a2579 (run_character_eval.py, run_scene_eval.py, utils.py).

- The candidate (the model under test, and the baseline) gets a system prompt from the subset's
  template, then the NPC's greeting as an assistant turn, then the user's lines and the winning
  replies, alternating.
- The judge gets its own system prompt (it plays the user and picks the winner), then as user turns
  `json.dumps({"model_a": A, "model_b": B})` (json's defaults: ASCII escapes, ", " and ": "
  separators), the first with the greeting in both slots, and its own raw replies as assistant turns.
- Every call: temperature 1.0, max_tokens 2048 (utils.chat_completion's defaults), no seed.

Placeholders are filled with string.Template.substitute, as the reference does: a scene's
`npc_profile` is a dict and is rendered with str() (a Python repr).
"""

from __future__ import annotations

import json
from string import Template
from typing import Any

from rolebench_eval.requests import ChatRequest, GenerationParams, Message

TEMPERATURE = 1.0
MAX_TOKENS = 2048
# Judged rounds per dialogue (MAX_MESSAGES_PER_CHAR): the opening judgment comes before them.
ROUNDS = {"character": 5, "scene": 10}

_CHARACTER_PROFILE = (
    "# NPC Profile:\n## Name\n$name_text\n\n## Title\n$title\n\n## Description\n$description\n\n"
    "## Definition\n$definition_text\n\n## Long Definition\n$long_definition_text\n"
)
_SCENE_CONTEXT = (
    "# Background:    \n$background\n\n# NPC Profile:\n$npc_profile\n\n# Previous plots recap:\n$plot_recap\n\n"
    "# Current Objectives:\n$objectives\n\n# When to end the scene:\n$progression\n\n# NPC Status:\n$npc_status\n\n"
)
_REPLY_FORMAT = (
    'It will be in a JSON format: {"winner": "model_a" or "model_b", "next_round_user_speaks": '
    '"YOUR RESPONSE AS THE SIMULATED USER", "decision_reason": "REASON FOR PICK THE WINNER"}. '
    'For the first round, use "winner": null'
)

CANDIDATE_TEMPLATES = {
    "character": Template("$background\n\n" + _CHARACTER_PROFILE),
    "scene": Template(
        _SCENE_CONTEXT
        + "You are an AI NPC for a role-play game. Based on the previous information, you will play a NPC "
        "character in the scene.\nReply in this JSON format: {\"npc_speaks\": \"YOUR RESPONSE\", "
        "\"is_chat_finished\": true or false}. If the scene is finished and ready to move on, set "
        "\"is_chat_finished\" to true. Otherwise, set it to false.\n"
    ),
}
JUDGE_TEMPLATES = {
    "character": Template(
        _CHARACTER_PROFILE
        + "\nYou are a judge for an AI NPC system. You need to simulate a user and interact with 2 AI NPC. "
        "For each round (except the first round), you should pick a better response from the 2 AI NPC and "
        "come up with your reply. " + _REPLY_FORMAT + "\n"
    ),
    "scene": Template(
        _SCENE_CONTEXT
        + "You are testing a game powered by AI NPCs. You need to simulate a player and interact with 2 AI "
        "NPC. The NPC will responds with its reply and determine if the scene meets the criteria to end and "
        "move on to the next plot. For each round (except the first round), you should pick a better "
        "response from the 2 AI NPC and come up with your reply. " + _REPLY_FORMAT + ". If the winner you "
        "pick have \"is_chat_finished\" set to true, you can leave \"next_round_user_speaks\" empty.\n"
    ),
}
# Fields each subset's templates read (checked when the data is loaded).
REQUIRED_FIELDS = {
    "character": ("name_text", "title", "description", "definition_text", "long_definition_text"),
    "scene": ("background", "npc_profile", "plot_recap", "objectives", "progression", "npc_status"),
}


def candidate_system(subset: str, row: dict[str, Any]) -> str:
    if subset == "character":
        return CANDIDATE_TEMPLATES[subset].substitute(background=row["background"], **row["npc_profile"])
    return CANDIDATE_TEMPLATES[subset].substitute(row)


def judge_system(subset: str, row: dict[str, Any]) -> str:
    return JUDGE_TEMPLATES[subset].substitute(row["npc_profile"] if subset == "character" else row)


def greeting(row: dict[str, Any]) -> str:
    return "\n".join(row["conversation"][0]["sentences"])


def slots(model_a: str, model_b: str) -> str:
    """The judge's user turn: both replies under their slot names."""
    return json.dumps({"model_a": model_a, "model_b": model_b})


def params(max_tokens: int | None) -> GenerationParams:
    """Every RPBench call's parameters; `max_tokens` overrides 2048 (--max-tokens / --judge-max-tokens)."""
    return GenerationParams(temperature=TEMPERATURE, max_tokens=max_tokens or MAX_TOKENS)


def request(messages: list[Message], max_tokens: int | None) -> ChatRequest:
    return ChatRequest(tuple(messages), params(max_tokens))
