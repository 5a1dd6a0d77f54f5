"""The unit of work every backend understands: a chat request and its completion.

Requests are frozen and canonically serialisable so that a request's hash (together with the
model's identity) is the cache key that makes runs resumable without repeating a call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings sent with a request. `None` means "not sent; backend default"."""

    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_json(self) -> dict[str, Any]:
        # Spelled out (asdict deep-copies): the same dict, field order included.
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, "stop": list(self.stop)}


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    # Guided output (--judge-output guided): the reply must match this regex in full (the
    # backend constrains decoding to it). Serialised, and so hashed, only when set: every
    # request without it keeps the hash it always had.
    guided_regex: str | None = None

    def messages_json(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"messages": self.messages_json(), "params": self.params.to_json()}
        if self.guided_regex is not None:
            data["guided_regex"] = self.guided_regex
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> ChatRequest:
        params = dict(data["params"])
        params["stop"] = tuple(params.get("stop") or ())
        return ChatRequest(
            messages=tuple(Message(m["role"], m["content"]) for m in data["messages"]),
            params=GenerationParams(**params),
            guided_regex=data.get("guided_regex"),
        )

    @cached_property
    def canonical_json(self) -> str:
        """The request as canonical JSON (sorted keys, no spaces), computed once per request: it
        is both what the key hashes and what the call store writes, so a call encodes it once.
        (A cached_property writes the instance's __dict__, which a frozen dataclass allows; it
        is no field: equality, hashing and `replace` ignore it.)"""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def cache_key(self, model_identity: str) -> str:
        """Hash of the model identity and the exact request: equal keys mean the same call.

        The bytes hashed are those of `json.dumps({"model": identity, "request": to_json()},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"))` (what every stored key was
        made from), assembled from `canonical_json`; keys are remembered per identity."""
        keys = self.__dict__.setdefault("_keys", {})
        key = keys.get(model_identity)
        if key is None:
            payload = ('{"model":' + json.dumps(model_identity, ensure_ascii=False)
                       + ',"request":' + self.canonical_json + "}")
            key = keys[model_identity] = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        return key


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one request.

    `error` is set exactly when the call failed, and says why; `text` is then None, or the
    unusable reply itself (kept for traceability: empty, or failing its task's check). A failed
    call is recorded and reported as such; it is never turned into a score.
    """

    text: str | None
    finish_reason: str | None = None  # "stop", "length", or None when the backend cannot tell
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    # Backend-specific facts worth keeping (e.g. "system message merged into user turn").
    notes: tuple[str, ...] = ()
    # How many attempts this result took (backend retries and the runner's content retries), and
    # why each earlier attempt failed, in order: a recovered fault stays visible.
    attempts: int = 1
    attempt_errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "error": self.error,
            "notes": list(self.notes),
            "attempts": self.attempts,
            "attempt_errors": list(self.attempt_errors),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Completion:
        return Completion(
            text=data.get("text"),
            finish_reason=data.get("finish_reason"),
            usage=Usage(**(data.get("usage") or {})),
            error=data.get("error"),
            notes=tuple(data.get("notes") or ()),
            attempts=int(data.get("attempts") or 1),
            attempt_errors=tuple(data.get("attempt_errors") or ()),
        )

    @staticmethod
    def failure(reason: str) -> Completion:
        return Completion(text=None, error=reason)
