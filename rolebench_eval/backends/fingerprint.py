"""Cheap, stable identities for models: a result must change when the weights change (model
files on disk, or what a server says about the model it serves)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Full hashes of multi-GB checkpoints would take minutes; the head and tail of each weight file
# plus its size change whenever the weights do in practice, and small files are hashed whole.
_SAMPLE = 4 << 20
_SMALL = 16 << 20


def text_sha256(text: str) -> str:
    """sha256 of a text (chat templates, prompts) as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        if size <= _SMALL:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_SAMPLE))
            handle.seek(size - _SAMPLE)
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def model_fingerprint(path: Path) -> str:
    """sha256 over a model file, or over every file of a model folder (names and contents)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        name = file.name if path.is_file() else str(file.relative_to(path))
        if name.startswith(".") or "/." in name:
            continue
        digest.update(name.encode())
        digest.update(_file_digest(file).encode())
    return digest.hexdigest()


# -- what an OpenAI-compatible server says about the model it serves -------------------------------
#
# The model name alone does not identify a checkpoint: serve checkpoint B under A's name and every
# stored answer of A would be reused as B's. Servers say more in their metadata, and only fields
# that stay the same from one request to the next while the checkpoint does may enter an identity.

# Servers whose `created` is the time of the request (vLLM, SGLang, llama.cpp's llama-server), not
# a property of the model; elsewhere (OpenAI API, Ollama, transformers serve) it is the model's own
# date or its files' modification time.
_REQUEST_TIME_CREATED = {"vllm", "sglang", "llamacpp"}
# A `created` this close to our clock is taken for a request time on servers not listed above.
_REQUEST_TIME_WINDOW_S = 5.0
# /v1/models entry fields naming or sizing the checkpoint: vLLM and SGLang `root` (the model path,
# or a LoRA adapter's path with its base model in `parent`), `max_model_len`; llama.cpp `meta`.
_ENTRY_FIELDS = ("root", "parent", "max_model_len")


def served_model_facts(
    entry: Mapping[str, Any] | None, props: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    """The stable facts identifying the served checkpoint, from its /v1/models entry and
    llama.cpp's /props (None when absent); {} when the server tells nothing that identifies it.

    `owned_by` is kept beside identifying facts but is not one: servers answer a constant there.
    """
    facts: dict[str, Any] = {}
    entry = entry or {}
    for name in _ENTRY_FIELDS:
        if entry.get(name) not in (None, ""):
            facts[name] = entry[name]
    meta = entry.get("meta")
    if isinstance(meta, Mapping):
        scalars = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        if scalars:
            facts["meta"] = dict(sorted(scalars.items()))
    owned_by = entry.get("owned_by")
    created = entry.get("created")
    if (
        isinstance(created, (int, float))
        and not isinstance(created, bool)
        and created > 0
        and str(owned_by).lower() not in _REQUEST_TIME_CREATED
        and abs(created - now) > _REQUEST_TIME_WINDOW_S
    ):
        facts["created"] = created
    if props:
        facts.update(_props_facts(props))
    if facts and isinstance(owned_by, str) and owned_by:
        facts["owned_by"] = owned_by
    return facts


def _props_facts(props: Mapping[str, Any]) -> dict[str, Any]:
    """llama.cpp's /props: the model file, the context size and the chat template it applies."""
    facts: dict[str, Any] = {}
    if isinstance(props.get("model_path"), str) and props["model_path"]:
        facts["model_path"] = props["model_path"]
    settings = props.get("default_generation_settings")
    if isinstance(settings, Mapping) and isinstance(settings.get("n_ctx"), int):
        facts["n_ctx"] = settings["n_ctx"]
    if isinstance(props.get("chat_template"), str) and props["chat_template"]:
        facts["chat_template_sha256"] = text_sha256(props["chat_template"])[:16]
    return facts


def server_fingerprint(facts: Mapping[str, Any] | None) -> str | None:
    """A short hash of the server's facts about its model; None when it told nothing."""
    if not facts:
        return None
    canonical = json.dumps(facts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return text_sha256(canonical)[:16]
