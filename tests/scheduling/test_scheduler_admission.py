"""The scheduler starts at most `max_live_jobs` jobs at once (its memory must not grow with the
run's samples), in their order, and every job still runs to its end with the same results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.scheduling.lanes import BatchLane
from rolebench_eval.scheduling.scheduler import RoleBinding, Scheduler
from rolebench_eval.task_api import MODEL_ROLE, ModelCall


class Echo:
    """A local backend: answers each request with its text; records each batch's size."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def generate(self, requests: Sequence[ChatRequest], on_result: Callable[[int, Completion], None]) -> None:
        self.batches.append(len(requests))
        for i, request in enumerate(requests):
            on_result(i, Completion(text="re: " + request.messages[-1].content))

    def close(self) -> None:
        pass


def job(n: int, live: list[int], started: list[int]):
    started.append(n)
    live[0] += 1
    live[1] = max(live[1], live[0])
    replies = yield [ModelCall(MODEL_ROLE, "generate", ChatRequest((Message("user", f"q{n}.{k}"),),
                                                                  GenerationParams(max_tokens=4)))
                     for k in range(3)]
    follow = yield [ModelCall(MODEL_ROLE, "generate", ChatRequest((Message("user", replies[0].text),),
                                                                 GenerationParams(max_tokens=4)))]
    live[0] -= 1
    return (n, follow[0].text)


def test_at_most_max_live_jobs_run_at_once_and_all_finish(tmp_path: Path) -> None:
    backend = Echo()
    binding = RoleBinding(MODEL_ROLE, "echo", "echo:1", CallStore(tmp_path / "calls.jsonl"),
                          BatchLane("echo", lambda: backend), "generation")
    live, started = [0, 0], []
    results = Scheduler({MODEL_ROLE: binding}, content_attempts=1, max_live_jobs=5).run(
        [job(n, live, started) for n in range(40)])
    assert results == [(n, f"re: re: q{n}.0") for n in range(40)]
    assert live[1] == 5 and started == list(range(40))  # never more than 5, admitted in order
    assert max(backend.batches) <= 5 * 3 and sum(backend.batches) == 40 * 4
