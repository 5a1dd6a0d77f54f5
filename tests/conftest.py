"""Shared test setup: offline always, and a scripted backend double for pipeline tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest

# Tests never reach a model hub; the embedded model ships as a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rolebench_eval.requests import ChatRequest, Completion, Usage  # noqa: E402


class ScriptedBackend:
    """A backend double answering from a function, counting every request it receives.

    Used where a test needs exact judge replies or an injected fault; the real backends have
    their own tests against the real embedded model and real servers.
    """

    def __init__(self, name: str, reply: Callable[[ChatRequest], str], fail_after: int | None = None):
        self.name = name
        self.reply = reply
        self.fail_after = fail_after
        self.requests: list[ChatRequest] = []

    @property
    def identity(self) -> str:
        return f"scripted:{self.name}"

    def describe(self) -> dict[str, str]:
        return {"backend": "scripted", "name": self.name}

    def generate(self, requests: Sequence[ChatRequest], on_result: Callable[[int, Completion], None]) -> None:
        for index, request in enumerate(requests):
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.requests.append(request)
            text = self.reply(request)
            on_result(index, Completion(text=text, finish_reason="stop", usage=Usage(10, 5)))

    def close(self) -> None:
        pass


@pytest.fixture
def scripted_backends(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, ScriptedBackend]]:
    """Route every model of a run to scripted backends, keyed by the spec's label."""
    import rolebench_eval.running.runner as runner

    def install(replies: dict[str, Callable[[ChatRequest], str]], fail_after: dict[str, int] | None = None) -> dict[str, ScriptedBackend]:
        created: dict[str, ScriptedBackend] = {}

        def build(spec, options):  # noqa: ANN001 - signature of models.build_backend
            backend = ScriptedBackend(spec.label, replies[spec.label], (fail_after or {}).get(spec.label))
            created[spec.label] = backend
            return backend

        monkeypatch.setattr(runner, "build_backend", build)
        # API judges in these tests point at nothing; their endpoint check is not under test here.
        monkeypatch.setattr(runner, "preflight", lambda spec: None)
        return created

    return install
