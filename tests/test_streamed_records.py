"""Records stream to samples.jsonl as jobs end (issue 13), in job order whatever order jobs end in,
and a streaming run keeps nothing of a finished job but what its results read."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.running.sample_sink import PARTS_FOLDER, SampleSink
from rolebench_eval.running.task_jobs import run_task_jobs
from rolebench_eval.scheduling.lanes import BatchLane
from rolebench_eval.scheduling.scheduler import RoleBinding, Scheduler
from rolebench_eval.task_api import (
    MODEL_ROLE,
    LazyJobs,
    ModelCall,
    RecordStream,
    RunSettings,
    Sample,
    Task,
    TaskOutcome,
)


class Echo:
    def generate(self, requests: Sequence[ChatRequest], on_result: Callable[[int, Completion], None]) -> None:
        for i, request in enumerate(requests):
            on_result(i, Completion(text="re: " + request.messages[-1].content))

    def close(self) -> None:
        pass


def ask(text: str) -> ModelCall:
    return ModelCall(MODEL_ROLE, "generate", ChatRequest((Message("user", text),), GenerationParams(max_tokens=4)))


class Recording(RecordStream):
    def __init__(self) -> None:
        self.order: list[int] = []

    def add(self, index: int, value: Any) -> list[dict[str, Any]]:
        assert index == value[0]
        self.order.append(index)
        return [{"job": value[0], "reply": value[1]}]

    def close(self) -> TaskOutcome:
        return TaskOutcome([{"job": n} for n in self.order], {"n": len(self.order)})


class Rounds(Task):
    """Job k makes `rounds(k)` dependent calls, so jobs end in another order than they start."""

    def __init__(self, name: str, rounds: Callable[[int], int], n: int, stream: bool = True, lazy: bool = False):
        super().__init__(name, "1", RunSettings())
        self.rounds, self.n, self.stream, self.lazy, self.ended = rounds, n, stream, lazy, []
        self.recording = Recording()

    def samples(self) -> list[Sample]:
        return [Sample(f"s{k}", f"u{k}", {}) for k in range(self.n)]

    def generation_request(self, sample: Sample) -> ChatRequest:
        raise NotImplementedError

    def evaluate(self, samples, answers):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def manifest(self) -> dict[str, Any]:
        return {}

    def jobs(self, samples):  # noqa: ANN001, ANN201
        def job(k: int):  # noqa: ANN202
            text = f"{self.name}-{k}"
            for _ in range(self.rounds(k)):
                text = (yield [ask(text)])[0].text
            self.ended.append(k)
            return (k, text)

        return LazyJobs(len(samples), job) if self.lazy else [job(k) for k in range(len(samples))]

    def record_stream(self, samples):  # noqa: ANN001, ANN201
        return self.recording if self.stream else None

    def finish(self, samples, results):  # noqa: ANN001, ANN201
        if self.stream:
            return super().finish(samples, results)
        return TaskOutcome([{"job": k, "reply": text} for k, text in results], {"n": len(results)})


def scheduler(tmp_path: Path, max_live_jobs: int = 1024) -> Scheduler:
    binding = RoleBinding(MODEL_ROLE, "echo", "echo:1", CallStore(tmp_path / "calls.jsonl"),
                          BatchLane("echo", Echo), "generation")
    return Scheduler({MODEL_ROLE: binding}, content_attempts=1, max_live_jobs=max_live_jobs)


@pytest.mark.parametrize("lazy", [False, True], ids=["job lists", "lazy jobs beside a list"])
def test_records_reach_the_stream_in_job_order_and_samples_list_tasks_in_order(tmp_path: Path, lazy: bool) -> None:
    late_first = Rounds("a", lambda k: 4 - k, 4, lazy=lazy)  # job 0 ends last
    whole = Rounds("b", lambda k: 1 + k % 2, 3, stream=False)
    sink = SampleSink(tmp_path, ["a", "b"], {})
    outcomes = run_task_jobs([late_first, whole], scheduler(tmp_path), sink)
    sink.commit()
    assert late_first.ended == late_first.recording.order == [3, 2, 1, 0]  # streamed as they ended ...
    rows = [json.loads(line) for line in (tmp_path / rd.SAMPLES).open()]
    # ... written in job order, task by task.
    assert [(r["job"], r["reply"]) for r in rows] == [
        (0, "re: re: re: re: a-0"), (1, "re: re: re: a-1"), (2, "re: re: a-2"), (3, "re: a-3"),
        (0, "re: b-0"), (1, "re: re: b-1"), (2, "re: b-2"),
    ]
    assert outcomes["a"].results == {"n": 4} and outcomes["b"].results == {"n": 3}
    assert outcomes["a"].records == [{"job": n} for n in (3, 2, 1, 0)]  # what the stream kept
    assert not (tmp_path / PARTS_FOLDER).exists()


def test_with_on_done_the_scheduler_keeps_no_value_and_hands_each_as_its_job_ends(tmp_path: Path) -> None:
    task = Rounds("a", lambda k: 3 if k == 0 else 1, 6)
    seen: list[int] = []
    values = scheduler(tmp_path, max_live_jobs=2).run(task.jobs(task.samples()), lambda i, v: seen.append(i))
    assert values == [None] * 6
    # Two live at a time, one batch per round: while job 0 makes its 3 calls, jobs 1 and 2 pass
    # through the other slot (job 0's last round and job 3 share a batch).
    assert seen == [1, 2, 0, 3, 4, 5]


def test_a_killed_run_s_parts_are_removed_and_a_failed_one_s_discarded(tmp_path: Path) -> None:
    (tmp_path / PARTS_FOLDER).mkdir()
    (tmp_path / PARTS_FOLDER / "000-a.jsonl").write_text('{"stale": true}\n')
    sink = SampleSink(tmp_path, ["a"], {})
    assert not (tmp_path / PARTS_FOLDER).exists()
    sink.add("a", [{"x": 1}])
    sink.discard()
    assert not (tmp_path / PARTS_FOLDER).exists() and not (tmp_path / rd.SAMPLES).exists()


def test_a_job_s_value_is_freed_once_handed_over_not_kept_by_its_worker(tmp_path: Path) -> None:
    import weakref

    class Value:  # what a job returns; weakly referenced to see when it is freed
        pass

    def job(k: int):  # noqa: ANN202
        yield [ask(f"q{k}")]
        return Value()

    handed: list[weakref.ref] = []
    alive_when_next_ended: list[int] = []

    def on_done(index: int, value: Any) -> None:
        # Every earlier value was dropped by the consumer (this one): none may still be alive.
        alive_when_next_ended.append(sum(ref() is not None for ref in handed))
        handed.append(weakref.ref(value))

    scheduler(tmp_path, max_live_jobs=2).run([job(k) for k in range(8)], on_done)
    assert len(handed) == 8 and alive_when_next_ended == [0] * 8
