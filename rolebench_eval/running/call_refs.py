"""Samples refer to their calls: each text is stored once, in the calls files (issue 13).

A task builds its records with every text inline (aggregation and tests read them as they are) and
marks which values are texts of a call (a `Marked` dict's `call_refs`, {path: CallRef}): a prompt (the
request's messages) or a reply (the completion's text, or a text derived from it by a named,
deterministic function such as PersonaGym's processing of score examples). When samples.jsonl is
written, `RecordEncoder` replaces each marked value with a reference to the call's line

    {"$call": "<call key>", "file": "judging", "part": "prompt"}
    {"$call": "<call key>", "file": "judging", "part": "reply", "sha": "<hash of the reply text>"}
    {"$call": ..., "part": "reply", "sha": ..., "derive": "personagym_examples"}

and `rolebench_eval.analysis.run_samples.iter_samples` puts the text back. A reply reference names
the hash of the text the record was built from, so the reader picks that line even when a key has
several (a retried failure, a later `--fresh` run) and refuses a calls file that no longer holds it.
A value stays inline when its role has no calls file in this run, or when the call was never
stored (a budget refused it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rolebench_eval.requests import ChatRequest, Completion

SAMPLES_SCHEMA = 2  # 1: every text inline; 2: texts of calls as {"$call": ...} references
CALL = "$call"
CALL_FILES = {"generation": "calls/generation.jsonl", "judging": "calls/judging.jsonl"}
NOT_SENT_PREFIX = "not sent: "  # scheduler.NOT_SENT: a refused call has no line in the calls files


def _personagym_examples(text: str) -> str:
    from rolebench_eval.judges.rubric_judge import process_examples

    return process_examples(text)


# Named derivations a reply reference may apply (a fixed table: a samples file never names code).
DERIVATIONS: dict[str, Callable[[str], str]] = {"personagym_examples": _personagym_examples}


def text_sha(text: str) -> str:
    """The reply hash of a reference: 16 hex digits of BLAKE2b over the UTF-8 text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class CallRef:
    """A value of a record that is a text of one call of `role` (see the module docstring)."""

    role: str
    request: ChatRequest
    completion: Completion | None  # what the call returned: says whether it was stored
    part: str  # "prompt" (the request's messages) or "reply" (the completion's text)
    derive: str | None = None  # a DERIVATIONS name applied to the reply text

    def __post_init__(self) -> None:
        # A record keeps its calls' requests until samples.jsonl is written, only for their keys
        # (which a request remembers per identity once computed). Its cached canonical JSON
        # (requests.py: what the key hashes and the store writes, already written by now) is a
        # second copy of every text: dropped, so that holding a whole run's records does not
        # double their memory; it is recomputed if ever needed.
        forget_encoding(self.request)


def forget_encoding(request: ChatRequest) -> None:
    """Drop a sent request's cached canonical JSON (requests.py), keeping its keys: once its call
    is stored, a job that keeps the request (for its record) needs only the key."""
    vars(request).pop("canonical_json", None)


class Marked(dict):  # type: ignore[type-arg]
    """A dict (to every reader, `json.dumps` and `==` included) that also carries `call_refs`:
    which of its values are texts of calls, {path (tuple of keys and indices): CallRef}. A copy
    (`dict(record)`, `{**record}`) is a plain dict without them: its texts are then written inline,
    never lost."""

    __slots__ = ("call_refs",)

    def __init__(self, *args: Any, call_refs: dict[tuple[str | int, ...], CallRef] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.call_refs = dict(call_refs or {})


def marks_of(value: Any) -> dict[tuple[str | int, ...], CallRef]:
    """The marks a dict carries (none for a plain dict)."""
    return getattr(value, "call_refs", None) or {}


class RecordEncoder:
    """Turns in-memory records into what samples.jsonl stores: marked values become references.

    `roles` maps each bound model role to (model identity, calls file name in CALL_FILES): the
    key of a call is its request's cache key under that identity, as the scheduler computed it.
    """

    def __init__(self, roles: Mapping[str, tuple[str, str]]):
        self._roles = dict(roles)
        self._keys: dict[tuple[int, str], tuple[ChatRequest, str]] = {}

    def _key(self, request: ChatRequest, identity: str) -> str:
        # Records of one batch share their request objects: each key is computed once. The
        # request is kept with its key, so its id cannot be reused by another object meanwhile.
        memo = self._keys.get((id(request), identity))
        if memo is None:
            memo = (request, request.cache_key(identity))
            self._keys[(id(request), identity)] = memo
        return memo[1]

    def reference(self, ref: CallRef) -> dict[str, Any] | None:
        """The stored form of `ref`, or None to keep the value inline."""
        bound = self._roles.get(ref.role)
        completion = ref.completion
        if bound is None or completion is None:
            return None
        if completion.error is not None and completion.error.startswith(NOT_SENT_PREFIX):
            return None
        identity, file = bound
        stored: dict[str, Any] = {CALL: self._key(ref.request, identity), "file": file, "part": ref.part}
        if ref.part == "reply":
            if not completion.text:
                return None  # nothing to share: None or "" stays inline
            stored["sha"] = text_sha(completion.text)
            if ref.derive is not None:
                stored["derive"] = ref.derive
        return stored

    def encode(self, record: dict[str, Any]) -> dict[str, Any]:
        marks = marks_of(record)
        if not marks:
            return record
        out = dict(record)
        for path, ref in marks.items():
            stored = self.reference(ref)
            if stored is not None:
                _replace(out, path, stored)
        return out


def _replace(record: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set record[path] = value, copying the containers on the way (the in-memory record and the
    dicts it shares with other records stay as they were)."""
    node: Any = record
    for step in path[:-1]:
        child = node[step]
        child = dict(child) if isinstance(child, dict) else list(child)
        node[step] = child
        node = child
    node[path[-1]] = value
