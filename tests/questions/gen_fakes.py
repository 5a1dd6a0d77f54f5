"""A generator double for question-generation tests: replies chosen by stage, task and attempt."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from rolebench_eval.requests import ChatRequest, Completion, Usage

TASKS = ["Expected Action", "Toxicity", "Linguistic Habits", "Persona Consistency", "Action Justification"]


def task_of(request: ChatRequest) -> str | None:
    """The task a questions request asks for (None: the environment-selection request)."""
    match = re.search(r"Evaluation Task: (.+)\n", request.messages[-1].content)
    return match.group(1) if match else None


def good_questions(task: str, n: int) -> str:
    return "```python\n" + repr([f"At the Wedding, what would you do about {task} problem {i}?" for i in range(n)]) + "\n```"


Reply = Callable[[ChatRequest, int], str]  # (request, how many times this exact request came) -> text


class GeneratorDouble:
    def __init__(self, reply: Reply):
        self.reply = reply
        self.requests: list[ChatRequest] = []
        self.seen: dict[str, int] = {}

    @property
    def identity(self) -> str:
        return "scripted:generator"

    def describe(self) -> dict[str, str]:
        return {"backend": "scripted"}

    def generate(self, requests: Sequence[ChatRequest], on_result: Callable[[int, Completion], None]) -> None:
        for index, request in enumerate(requests):
            self.requests.append(request)
            key = request.cache_key("x")
            self.seen[key] = self.seen.get(key, 0) + 1
            on_result(index, Completion(text=self.reply(request, self.seen[key]), finish_reason="stop",
                                        usage=Usage(100, 20)))

    def close(self) -> None:
        pass


def default_reply(n: int = 3, settings: str = "['Wedding', 'Classroom']") -> Reply:
    def reply(request: ChatRequest, seen: int) -> str:
        task = task_of(request)
        return settings if task is None else good_questions(task, n)

    return reply


def install(monkeypatch: pytest.MonkeyPatch, reply: Reply) -> GeneratorDouble:
    """Every backend the generation opens is this double; endpoints are not asked."""
    import rolebench_eval.models as models

    double = GeneratorDouble(reply)
    monkeypatch.setattr(models, "build_backend", lambda spec, options: double)
    monkeypatch.setattr(models, "preflight", lambda spec: None)
    return double


def persona_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "personas.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
