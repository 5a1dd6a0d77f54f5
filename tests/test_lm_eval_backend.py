"""LMEvalBackend on lm-eval's real `hf` model (the embedded SmolLM2 copy) and on its chat-API
models against a scripted loopback server. Offline; the model is loaded once for the module."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.backends.base import Backend, BackendOptions
from rolebench_eval.backends.chat_format import MERGED_NOTE
from rolebench_eval.backends.lm_eval_backend import (
    FINISH_REASON_NOTE,
    NO_COUNTS_NOTE,
    USAGE_NOTE,
    LMEvalBackend,
    redact_model_args,
)
from rolebench_eval.embedded import embedded_gguf_path, ensure_safetensors_copy
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message

pytestmark = pytest.mark.slow

PERSONA = "You are Sherlock Holmes, the consulting detective of Baker Street."
MAX_LENGTH = 256  # small, so that a long prompt overflows without a huge input

# A template like Gemma's: it raises on the system role (lm-eval would drop the persona).
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat(*messages: tuple[str, str], max_tokens: int = 12, **params: Any) -> ChatRequest:
    return ChatRequest(
        messages=tuple(Message(role, content) for role, content in messages),  # type: ignore
        params=GenerationParams(max_tokens=max_tokens, **params),
    )


def run(backend: LMEvalBackend, requests: list[ChatRequest]) -> list[Completion]:
    results: dict[int, Completion] = {}
    backend.generate(requests, lambda index, completion: results.__setitem__(index, completion))
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return ensure_safetensors_copy(embedded_gguf_path())


@pytest.fixture(scope="module")
def hf_backend(model_dir: Path) -> Iterator[LMEvalBackend]:
    backend = LMEvalBackend(
        "hf",
        f"pretrained={model_dir},device=cpu,batch_size=4,max_length={MAX_LENGTH}",
        BackendOptions(),
    )
    yield backend
    backend.close()


def sibling(backend: LMEvalBackend, model_dir: Path, **options: Any) -> LMEvalBackend:
    """Same loaded model, other options (loading it again would cost seconds per test)."""
    return LMEvalBackend(
        "hf",
        f"pretrained={model_dir},device=cpu,batch_size=4,max_length={MAX_LENGTH}",
        replace(BackendOptions(), **options),
        lm=backend.lm,
    )


@pytest.fixture()
def sent_prompts(hf_backend: LMEvalBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contexts that actually reach lm-eval's generate_until."""
    seen: list[str] = []
    original = hf_backend.lm.generate_until

    def spy(instances: list[Any], **kwargs: Any) -> list[str]:
        seen.extend(instance.args[0] for instance in instances)
        return original(instances, **kwargs)

    monkeypatch.setattr(hf_backend.lm, "generate_until", spy)
    return seen


def test_greedy_answers_match_plain_transformers(
    hf_backend: LMEvalBackend, model_dir: Path, sent_prompts: list[str]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    assert isinstance(hf_backend, Backend)
    requests = [
        chat(("system", PERSONA), ("user", "Who are you?")),
        chat(("user", "Name a colour.")),
        chat(("user", "What is the capital of France?"), max_tokens=16),  # short: ends by EOS
    ]
    completions = run(hf_backend, requests)

    assert len(sent_prompts) == 3
    assert PERSONA in sent_prompts[0]  # the persona reached the model, not dropped
    tokenizer = hf_backend.lm.tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    for request, prompt, completion in zip(requests, sent_prompts, completions, strict=True):
        assert completion.ok and completion.text and completion.text.strip()
        assert FINISH_REASON_NOTE in completion.notes and USAGE_NOTE in completion.notes
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(
                **inputs, max_new_tokens=request.params.max_tokens, do_sample=False
            )
        new_tokens = output[0, inputs.input_ids.shape[1] :].tolist()
        assert completion.text == tokenizer.decode(new_tokens, skip_special_tokens=True)
        assert completion.usage.prompt_tokens == inputs.input_ids.shape[1]
        assert completion.usage.completion_tokens == len(
            tokenizer.encode(completion.text, add_special_tokens=False)
        )
        stopped_by_eos = tokenizer.eos_token_id in new_tokens
        assert completion.finish_reason == ("stop" if stopped_by_eos else "length")
    # both inferred finish reasons were cross-checked, not just one
    assert {c.finish_reason for c in completions} == {"stop", "length"}


def test_tiny_max_tokens_finishes_by_length(hf_backend: LMEvalBackend) -> None:
    (completion,) = run(hf_backend, [chat(("user", "Tell me a long story."), max_tokens=3)])
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_template_rejecting_system_fail_and_merge(
    hf_backend: LMEvalBackend, model_dir: Path, tmp_path: Path, sent_prompts: list[str]
) -> None:
    template = tmp_path / "no_system.jinja"
    template.write_text(NO_SYSTEM_TEMPLATE, encoding="utf-8")
    request = chat(("system", PERSONA), ("user", "Who are you?"), max_tokens=4)

    failing = sibling(hf_backend, model_dir, chat_template=str(template))
    with pytest.raises(BackendError, match="rejects the system message"):
        run(failing, [request])
    assert sent_prompts == []  # nothing reached lm-eval

    merging = sibling(
        hf_backend, model_dir, chat_template=str(template), system_prompt_policy="merge"
    )
    (completion,) = run(merging, [request])
    assert completion.ok and completion.text
    assert MERGED_NOTE in completion.notes
    assert sent_prompts[0].startswith(f"<|im_start|>user\n{PERSONA}\n\nWho are you?")
    assert merging.identity != hf_backend.identity  # the template changes the answers


def test_overlength_error_and_skip(hf_backend: LMEvalBackend, model_dir: Path) -> None:
    requests = [
        chat(("user", "Hi."), max_tokens=4),
        chat(("user", "word " * 300), max_tokens=4),
    ]
    with pytest.raises(BackendError, match=r"request 1: prompt has \d+ tokens but .* fits 252"):
        run(hf_backend, requests)

    skipping = sibling(hf_backend, model_dir, overlength_policy="skip")
    answered, skipped = run(skipping, requests)
    assert answered.ok
    assert not skipped.ok and skipped.error and "(overlength_policy=skip)" in skipped.error


def test_describe_and_identity(hf_backend: LMEvalBackend) -> None:
    facts = hf_backend.describe()
    assert facts["model_type"] == "hf" and facts["max_length"] == MAX_LENGTH
    assert facts["lm_eval_version"] == "0.4.13"
    assert facts["stop_sequences_appended_by_lm_eval"] == ["<|im_end|>"]
    assert '"model_type": "hf"' in hf_backend.identity
    assert "batch_size" not in hf_backend.identity  # throughput does not change answers


def test_redaction_of_secret_looking_args() -> None:
    args = {
        "api_key": "abc",
        "auth_token": "xyz",
        "model": "sk-looks-like-a-key",
        "base_url": "https://user:pw@host/v1?api_key=k&x=1",
        "tokenizer": "gpt2",
        "add_bos_token": True,
        "max_gen_toks": 5,
    }
    assert redact_model_args(args) == {
        "api_key": "<redacted>",
        "auth_token": "<redacted>",
        "model": "<redacted>",
        "base_url": "https://host/v1?api_key=%3Credacted%3E&x=1",
        "tokenizer": "gpt2",
        "add_bos_token": True,
        "max_gen_toks": 5,
    }


# --- chat-API models: a scripted OpenAI-compatible server on loopback -------------------------


class _ScriptedServer(BaseHTTPRequestHandler):
    payloads: list[dict[str, Any]] = []
    reply: str | None = "Elementary."

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).payloads.append(json.loads(body))
        message = {"role": "assistant", "content": self.reply}
        answer = {"choices": [{"index": 0, "message": message}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def chat_url() -> Iterator[str]:
    _ScriptedServer.payloads = []
    _ScriptedServer.reply = "Elementary."
    server = HTTPServer(("127.0.0.1", 0), _ScriptedServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/chat/completions"
    server.shutdown()
    thread.join()


def test_chat_model_sends_messages_unchanged(chat_url: str) -> None:
    backend = LMEvalBackend(
        "local-chat-completions",
        f"base_url={chat_url},model=persona-model,auth_token=sk-secret-value",
        BackendOptions(),
    )
    request = chat(("system", PERSONA), ("user", "Who are you?"), stop=("\n\n",), max_tokens=20)
    (completion,) = run(backend, [request])
    assert completion.text == "Elementary." and completion.finish_reason is None
    assert NO_COUNTS_NOTE in completion.notes
    (payload,) = _ScriptedServer.payloads
    assert payload["messages"] == [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": "Who are you?"},
    ]
    assert payload["max_tokens"] == 20 and payload["temperature"] == 0.0
    assert "\n\n" in payload["stop"]
    manifest = json.dumps(backend.describe()) + backend.identity
    assert "sk-secret-value" not in manifest and "<redacted>" in manifest

    _ScriptedServer.reply = None  # a null answer: lm-eval turns it into ''
    (empty,) = run(backend, [request])
    assert not empty.ok and empty.error and "empty or null answer" in empty.error


@pytest.mark.parametrize(
    ("model", "params", "problem"),
    [
        ("gpt-5-mini", {"temperature": 0.0}, "temperature 0.0 sent as 1"),
        ("persona-model", {"stop": ("a", "b", "c", "d", "e")}, r"stop sequences \['e'\] not sent"),
    ],
)
def test_chat_payload_changes_are_refused(
    chat_url: str, model: str, params: dict[str, Any], problem: str
) -> None:
    backend = LMEvalBackend(
        "openai-chat-completions", f"base_url={chat_url},model={model}", BackendOptions()
    )
    with pytest.raises(BackendError, match=f"request 0: .*{problem}"):
        run(backend, [chat(("user", "Hi."), **params)])
    assert _ScriptedServer.payloads == []  # refused before anything was sent
