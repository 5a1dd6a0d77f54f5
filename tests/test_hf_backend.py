"""The transformers backend on the real embedded model: folder and GGUF, policies, finish reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.backends.chat_format import MERGED_NOTE
from rolebench_eval.backends.hf_backend import HFBackend
from rolebench_eval.embedded import embedded_gguf_path, ensure_safetensors_copy
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message

pytestmark = pytest.mark.slow

NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ask(question: str, max_tokens: int = 8, system: str | None = "You are a pirate.") -> ChatRequest:
    messages = ([Message("system", system)] if system else []) + [Message("user", question)]
    return ChatRequest(tuple(messages), GenerationParams(temperature=0.0, max_tokens=max_tokens))


def generate(backend: HFBackend, requests: list[ChatRequest]) -> list[Completion]:
    out: dict[int, Completion] = {}
    backend.generate(requests, lambda i, c: out.__setitem__(i, c))
    assert sorted(out) == list(range(len(requests)))
    return [out[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def gguf_backend() -> HFBackend:
    return HFBackend(str(embedded_gguf_path()), BackendOptions(batch_size=4))


def test_folder_and_gguf_give_the_same_greedy_answers(gguf_backend: HFBackend) -> None:
    requests = [ask("Who are you?"), ask("Name a colour.", 12), ask("Count to three.")]
    batched = generate(gguf_backend, requests)
    # Same batch size: in bf16, left padding may change a greedy token, so batch size is recorded
    # in the manifest rather than promised not to matter.
    folder = HFBackend(str(ensure_safetensors_copy(embedded_gguf_path())), BackendOptions(batch_size=4))
    assert [c.text for c in generate(folder, requests)] == [c.text for c in batched]
    for completion, request in zip(batched, requests):
        assert completion.text and completion.usage.completion_tokens <= request.params.max_tokens
        assert completion.usage.prompt_tokens > 10
    assert gguf_backend.describe()["fingerprint_sha256"] != folder.describe()["fingerprint_sha256"]


def test_finish_reason_length_and_stop(gguf_backend: HFBackend) -> None:
    short, long = generate(gguf_backend, [ask("Tell me a long story.", 3), ask("Say only: yes", 64)])
    assert short.finish_reason == "length" and short.usage.completion_tokens == 3
    assert long.finish_reason in ("stop", "length")
    if long.finish_reason == "stop":
        assert long.usage.completion_tokens < 64


def test_system_prompt_policy(tmp_path: Path) -> None:
    template = tmp_path / "no-system.jinja"
    template.write_text(NO_SYSTEM_TEMPLATE)
    strict = HFBackend(str(embedded_gguf_path()), BackendOptions(chat_template=str(template)))
    with pytest.raises(BackendError, match="rejects the system message"):
        generate(strict, [ask("Hello")])
    merged = HFBackend(
        str(embedded_gguf_path()), BackendOptions(chat_template=str(template), system_prompt_policy="merge")
    )
    (completion,) = generate(merged, [ask("Hello")])
    assert completion.ok and MERGED_NOTE in completion.notes


def test_overlength_prompt_is_never_truncated(gguf_backend: HFBackend) -> None:
    huge = ask("word " * 9000)
    with pytest.raises(BackendError, match="request 1: prompt of .* exceeds the context of 8192 tokens"):
        generate(gguf_backend, [ask("hi"), huge])
    skipping = HFBackend(str(embedded_gguf_path()), BackendOptions(overlength_policy="skip"))
    fine, skipped = generate(skipping, [ask("hi"), huge])
    assert fine.ok
    assert not skipped.ok and "overlength_policy=skip" in (skipped.error or "")
