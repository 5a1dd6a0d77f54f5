"""Guided output through transformers (llguidance) on the embedded SmolLM2-135M model: the
PersonaGym judge and score-examples requests of a real persona give a verdict and usable examples,
which the same model almost never writes free (bench/bench_guided_output.py)."""

from __future__ import annotations

import re

import pytest

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.backends.hf_backend import HFBackend
from rolebench_eval.embedded import embedded_gguf_path
from rolebench_eval.judges.rubric_judge import parse_grading_reply, process_examples
from rolebench_eval.judges.pairwise_ranking import ANONYMOUS_NAMES, parse_ranking
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.task_api import JudgeSpec, RunSettings
from rolebench_eval.task_registry import build_task, discover
from rolebench_eval.tasks.rolebench.prompts import ranking_regex

pytestmark = pytest.mark.slow


def generate(backend: HFBackend, requests: list[ChatRequest]) -> list[Completion]:
    out: dict[int, Completion] = {}
    backend.generate(requests, lambda i, c: out.__setitem__(i, c))
    return [out[i] for i in range(len(requests))]


def test_embedded_model_guided_gives_parseable_verdicts_and_examples() -> None:
    spec = discover([]).resolve(["personagym-light"])[0]
    settings = RunSettings(judges=(JudgeSpec("embedded", smoke=True),), limit=1, judge_max_tokens=128,
                           guided_roles=("judge:embedded", "examples"))
    task = build_task(spec, settings)
    samples = task.samples()[:1]
    job = task.jobs(samples)[0]
    first = next(job)
    (examples_call,) = [c for c in first if c.stage == "score_examples"]
    backend = HFBackend(str(embedded_gguf_path()), BackendOptions(batch_size=4))
    try:
        ranking = ChatRequest(
            (Message("user", "Rank model_1 and model_2 as RoleLLM asks."),),
            GenerationParams(max_tokens=128), guided_regex=ranking_regex(ANONYMOUS_NAMES, 128),
        )
        examples, ranked = generate(backend, [examples_call.request, ranking])
        assert examples.ok and re.fullmatch(examples_call.request.guided_regex, examples.text), examples
        assert process_examples(examples.text).count("Score ") == 5
        assert parse_ranking(ranked.text, "model_1").outcome in ("win", "loss", "tie"), ranked.text
        answers = [Completion("Aye.", finish_reason="stop") if c.stage == "generate" else examples for c in first]
        (grading_call,) = job.send(answers)
        (verdict,) = generate(backend, [grading_call.request])
    finally:
        backend.close()
    assert verdict.ok and verdict.finish_reason == "stop", verdict
    assert re.fullmatch(grading_call.request.guided_regex, verdict.text)
    (score,) = parse_grading_reply(verdict.text, 1)
    assert score.score in range(1, 6) and score.unscored_reason is None
