"""The vLLM backend on the real engine (vllm-cpu here, CUDA vllm on a GPU) with the embedded model.

Runs in the vLLM environment built by `.ci/vllm-env.sh`:
    .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_backend.py
One engine serves the whole module (start-up costs about 25-40 s on 2 cores); the last test
closes it and starts a second engine, as a judge would after generation.
"""

from __future__ import annotations

import os

import pytest

# vLLM reads these when the engine starts (in a spawned process that inherits them). The CPU
# ones are ignored by CUDA vLLM. An explicit setting in the environment wins.
for _name, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_name, _value)

pytest.importorskip("vllm")

from rolebench_eval.backends.base import Backend, BackendOptions  # noqa: E402
from rolebench_eval.backends.chat_format import MERGED_NOTE  # noqa: E402
from rolebench_eval.backends.vllm_backend import GREEDY_TOP_P_NOTE, VLLMBackend  # noqa: E402
from rolebench_eval.embedded import embedded_gguf_path  # noqa: E402
from rolebench_eval.errors import BackendError  # noqa: E402
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message  # noqa: E402

pytestmark = pytest.mark.vllm

CONTEXT = 512  # small on purpose: overlength prompts are cheap to build
PERSONA = "You are Captain Mira Vale, a retired starship pilot who speaks in short, dry sentences."
# A template that, like some models' own, refuses the system role.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def persona_request(question: str, **params: object) -> ChatRequest:
    return ChatRequest(
        (Message("system", PERSONA), Message("user", question)),
        GenerationParams(**params),  # type: ignore[arg-type]
    )


def run(backend: VLLMBackend, requests: list[ChatRequest]) -> list[Completion]:
    """generate() with the callback checked: exactly one result per index."""
    results: dict[int, Completion] = {}

    def on_result(index: int, completion: Completion) -> None:
        assert index not in results, f"request {index} answered twice"
        results[index] = completion

    backend.generate(requests, on_result)
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


class GenerateSpy:
    """Wraps LLM.generate on one engine to count calls and keep the submitted prompts."""

    def __init__(self, llm: object) -> None:
        self.inner = llm.generate  # type: ignore[attr-defined]
        self.calls: list[tuple[list[dict[str, list[int]]], list[object]]] = []

    def __call__(self, prompts, sampling_params, **kwargs):  # noqa: ANN001, ANN204
        self.calls.append((list(prompts), list(sampling_params)))
        return self.inner(prompts, sampling_params, **kwargs)


@pytest.fixture(scope="module")
def backend():
    # float32: batched and single greedy answers are compared token for token, and bf16's
    # rounding makes near-ties (hence batch-dependent answers) far more likely.
    engine = VLLMBackend(
        str(embedded_gguf_path()),
        BackendOptions(dtype="float32"),
        enforce_eager=True,
        max_model_len=CONTEXT,
    )
    yield engine
    engine.close()


@pytest.fixture
def spy(backend: VLLMBackend, monkeypatch: pytest.MonkeyPatch) -> GenerateSpy:
    watcher = GenerateSpy(backend.llm)
    monkeypatch.setattr(backend.llm, "generate", watcher)
    return watcher


def test_identity_and_manifest(backend: VLLMBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.identity.startswith("vllm:")
    facts = backend.describe()
    assert facts["max_model_len"] == CONTEXT
    assert facts["tensor_parallel_size"] == 1 and facts["data_parallel_size"] == 1
    assert len(facts["chat_template_sha256"]) == 64
    assert facts["vllm"] and facts["dtype"]
    # Another chat template means other prompts, so another cache identity.
    other = backend.with_options(BackendOptions(chat_template=None, system_prompt_policy="merge"))
    assert other.identity != backend.identity


def test_two_tasks_in_one_generate_call_match_single_requests(
    backend: VLLMBackend, spy: GenerateSpy
) -> None:
    task_a = [  # PersonaGym-like: greedy, longer answers
        persona_request(q, temperature=0.0, max_tokens=24)
        for q in ("What did you fly?", "Describe your last landing.", "Why did you retire?")
    ]
    task_b = [  # a sampled task with its own settings, plus a greedy one sent with top_p=0
        persona_request("Name a star.", temperature=0.8, top_p=0.9, max_tokens=12, seed=7),
        persona_request("Say hello.", temperature=0.0, top_p=0.0, max_tokens=10),
    ]
    batch = task_a + task_b
    answers = run(backend, batch)

    assert len(spy.calls) == 1, "all requests must go to the engine in one generate call"
    prompts, params = spy.calls[0]
    assert len(prompts) == len(batch)
    assert sorted(p.max_tokens for p in params) == sorted(r.params.max_tokens for r in batch)
    assert {p.temperature for p in params} == {0.0, 0.8}
    for request, answer in zip(batch, answers, strict=True):
        assert answer.ok and answer.text
        assert answer.finish_reason in ("stop", "length")
        assert 0 < answer.usage.completion_tokens <= request.params.max_tokens
        assert answer.usage.prompt_tokens in {len(p["prompt_token_ids"]) for p in prompts}
    assert answers[4].notes == (GREEDY_TOP_P_NOTE,)
    assert answers[0].notes == ()

    greedy = [0, 1, 2, 4]
    singles = {i: run(backend, [batch[i]])[0] for i in greedy}
    assert len(spy.calls) == 1 + len(greedy)
    for i in greedy:
        assert singles[i].text == answers[i].text, f"request {i}: batch and single differ"


def test_prompt_uses_the_models_chatml_template(backend: VLLMBackend, spy: GenerateSpy) -> None:
    run(backend, [persona_request("Who are you?", max_tokens=4)])
    ((prompts, _),) = spy.calls
    text = backend.llm.get_tokenizer().decode(prompts[0]["prompt_token_ids"])
    assert text.startswith(f"<|im_start|>system\n{PERSONA}<|im_end|>")
    assert "<|im_start|>user\nWho are you?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_system_policy_with_a_template_that_rejects_system(
    backend: VLLMBackend, spy: GenerateSpy, tmp_path
) -> None:
    template = tmp_path / "no_system.jinja"
    template.write_text(NO_SYSTEM_TEMPLATE, encoding="utf-8")
    request = persona_request("Who are you?", max_tokens=8)

    failing = backend.with_options(BackendOptions(chat_template=str(template)))
    with pytest.raises(BackendError, match="rejects the system message"):
        run(failing, [request])
    assert spy.calls == [], "nothing may be generated when the policy is fail"

    merging = backend.with_options(
        BackendOptions(chat_template=str(template), system_prompt_policy="merge")
    )
    (answer,) = run(merging, [request])
    assert answer.ok and answer.text
    assert MERGED_NOTE in answer.notes
    text = backend.llm.get_tokenizer().decode(spy.calls[0][0][0]["prompt_token_ids"])
    assert f"<|im_start|>user\n{PERSONA}\n\nWho are you?" in text
    assert "<|im_start|>system" not in text


def test_overlength_error_and_skip(backend: VLLMBackend, spy: GenerateSpy) -> None:
    short = persona_request("Hi.", max_tokens=8)
    long = persona_request("tell me " * CONTEXT, max_tokens=8)
    with pytest.raises(
        BackendError, match=rf"request 1: prompt of \d+ tokens .* context {CONTEXT}"
    ):
        run(backend, [short, long])
    assert spy.calls == []

    skipping = backend.with_options(BackendOptions(overlength_policy="skip"))
    first, second = run(skipping, [short, long])
    assert first.ok
    assert second.text is None and not second.ok
    assert "overlength_policy=skip" in (second.error or "")
    tokens = int((second.error or "").split("prompt of ")[1].split(" ")[0])
    assert tokens > CONTEXT  # measured, not truncated
    assert len(spy.calls) == 1 and len(spy.calls[0][0]) == 1


def test_finish_reasons_length_and_stop(backend: VLLMBackend) -> None:
    (cut,) = run(backend, [persona_request("Tell me a long story.", max_tokens=3)])
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 3

    (full,) = run(backend, [persona_request("Tell me a long story.", max_tokens=32)])
    words = (full.text or "").split()
    assert len(words) >= 3
    stop = f" {words[2]}"
    (stopped,) = run(
        backend, [persona_request("Tell me a long story.", max_tokens=32, stop=(stop,))]
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == (full.text or "")[: (full.text or "").index(stop)]


def test_guided_regex_constrains_the_reply_to_the_judge_format(backend: VLLMBackend, spy: GenerateSpy) -> None:
    import re

    from rolebench_eval.judges.rubric_judge import parse_grading_reply
    from rolebench_eval.tasks.personagym.protocols import grading_regex

    regex = grading_regex(1, 96)
    guided = ChatRequest(
        (Message("user", "Rate the answer 'Aye, the sea took my ship.' from 1 to 5."),),
        GenerationParams(max_tokens=96), guided_regex=regex,
    )
    free = ChatRequest(guided.messages, guided.params)
    guided_reply, free_reply = run(backend, [guided, free])
    assert guided_reply.ok and guided_reply.finish_reason == "stop", guided_reply
    assert re.fullmatch(regex, guided_reply.text or "")
    assert parse_grading_reply(guided_reply.text or "", 1)[0].score in range(1, 6)
    # The regex went to the engine as structured outputs; the free request carried none.
    (_, sampling), = spy.calls
    assert sorted(p.structured_outputs is not None for p in sampling) == [False, True]
    assert [p.structured_outputs.regex for p in sampling if p.structured_outputs] == [regex]
    assert not re.fullmatch(regex, free_reply.text or "")


def test_close_frees_the_engine_so_a_judge_engine_can_start(backend: VLLMBackend) -> None:
    """Runs last: it closes the module's engine."""
    import psutil

    def engine_processes() -> set[int]:
        # vLLM names its engine-core and worker processes "VLLM::..."; exited ones may linger
        # as zombies until reaped, which hold no memory.
        return {
            child.pid
            for child in psutil.Process().children(recursive=True)
            if child.name().startswith("VLLM") and child.status() != psutil.STATUS_ZOMBIE
        }

    assert engine_processes(), "the engine core runs in a child process"
    backend.close()
    backend.close()  # idempotent: the fixture closes again
    assert engine_processes() == set()

    judge = VLLMBackend(
        str(embedded_gguf_path()), BackendOptions(), enforce_eager=True, max_model_len=CONTEXT
    )
    try:
        (verdict,) = run(
            judge, [persona_request("Rate this answer from 1 to 5: 'Hello.'", max_tokens=6)]
        )
        assert verdict.ok and verdict.usage.completion_tokens
    finally:
        judge.close()
