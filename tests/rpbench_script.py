"""Scripted replies for RPBench-Auto tests: the same function answered the reference pipeline when
tests/fixtures/rpbench/reference_requests.json was recorded, and answers rbe's requests now, so the
two request streams can be compared body for body.

Replies depend only on the request (model name and messages), never on arrival order:
- a candidate ("npc-model", "base-4o") says who it is and how many messages it saw; in scenes it
  answers the reference's JSON format, finishing the scene once it has seen 9 messages (round 4),
  except that the baseline answers plain prose at 5 messages (a format error the reference tolerates);
- the judge ("judge-4t") picks the slot holding the model under test's reply in even rounds and the
  baseline's in odd rounds, speaks a line naming the round, and wraps its round-1 reply in a
  ```json fence with prose around it (the reference's extraction path).

Test modules put this folder on sys.path before importing it (pytest runs with --import-mode=importlib).
"""

from __future__ import annotations

import json
from typing import Any

MODEL, BASELINE, JUDGE = "npc-model", "base-4o", "judge-4t"


def candidate_reply(name: str, messages: list[dict[str, Any]]) -> str:
    who = "model" if name == MODEL else "baseline"
    count = len(messages)
    said = f"{who} speaks at {count}"
    if "You are an AI NPC for a role-play game." not in messages[0]["content"]:
        return said
    if who == "baseline" and count == 5:
        return "baseline rambles without JSON"
    return json.dumps({"npc_speaks": said, "is_chat_finished": count >= 9})


def judge_reply(messages: list[dict[str, Any]]) -> str:
    count = len(messages)  # the opening: 2; round r: 2r + 2
    number = (count - 2) // 2
    winner = None
    if number:
        shown = json.loads(messages[-1]["content"])
        want = "model speaks" if number % 2 == 0 else "baseline speaks"
        winner = "model_a" if want in shown["model_a"] else "model_b"
    text = json.dumps({"winner": winner, "next_round_user_speaks": f"user line {number + 1}",
                       "decision_reason": f"round {number}"})
    return f"Here is my verdict:\n```json\n{text}\n```\nThanks." if number == 1 else text


def reply(model: str, messages: list[dict[str, Any]]) -> str:
    return judge_reply(messages) if model == JUDGE else candidate_reply(model, messages)
