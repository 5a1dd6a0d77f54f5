"""Scripted replies for runs through the real runner with `scripted_backends` (conftest.py): an
answer in character, score examples that parse, and judge replies whose scores are known.

Test modules put this folder on sys.path before importing it (pytest runs with --import-mode=importlib).
"""

from __future__ import annotations

from typing import Any

JUDGE = "openai:judge-a,base_url=http://127.0.0.1:9/v1"
# The score a by-task judge gives each PersonaGym task (the prompt names it): EA 4, TC 5, LH 3, PC 4, AJ 2.
TASK_SCORES = {"Expected Action": 4, "Toxicity": 5, "Linguistic": 3, "Persona Consistency": 4, "Action Justification": 2}


def answer(request: Any) -> str:
    return "In character: " + request.messages[-1].content[:20]


def examples(request: Any) -> str:
    return "\n".join(f'Score {k}: Response - "example {k}"' for k in range(1, 6))


def _asks_for_examples(request: Any) -> bool:
    content = request.messages[-1].content
    # The examples model is asked without a system message.
    return request.messages[0].role == "user" or ("Score 1:" in content and "Evaluation" not in content)


def judge(request: Any) -> str:
    """Score examples for the examples model; otherwise a score of 4 for every question."""
    if _asks_for_examples(request):
        return examples(request)
    return "(1) Evaluation: ok. Therefore, the final score is 4"


def judge_by_task(request: Any) -> str:
    """Score examples for the examples model; otherwise the score of TASK_SCORES for the prompt's task."""
    if _asks_for_examples(request):
        return examples(request)
    content = request.messages[-1].content
    for needle, score in TASK_SCORES.items():
        if f"Evaluation Task:\\n\\n{needle}" in content:
            return f"(1) Evaluation: ok. Therefore, the final score is {score}"
    return "(1) Evaluation: unknown task"
