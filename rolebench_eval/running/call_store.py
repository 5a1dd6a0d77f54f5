"""Append-only JSONL store of model calls: the run's system of record and its resume point.

Each finished call is one line, keyed by the hash of the model's identity and the exact request.
A rerun loads the file and sends only the requests it has no successful answer for, so killing a
run at any moment loses at most the calls in flight. Failed calls are recorded too (with their
reason) and retried by the next run; they never count as answers.

Write policy: the file stays open (unbuffered, append mode) for the store's life, and each call is
one `write` of its whole line, so the line is in the kernel's page cache before the call counts as
finished: a killed process (Ctrl-C, kill -9, OOM) loses no finished call, and O_APPEND keeps each
line whole. No fsync: that guards against a machine crash, not a process kill, and costs a disk
round trip per call. The line embeds the request's canonical JSON (the same text its key hashes),
so a call is encoded once (requests.ChatRequest.canonical_json).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running.answer_index import AnswerIndex, Position, key_prefix
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.task_api import ReplyCheck

SCHEMA_VERSION = 1
_KEY_AT = b'"key": "'
_COMPLETION_AT = b'"completion": '


class CallStore:
    """The calls of one run directory, in one file per model role (generation, judges).

    `fallbacks` are the same files of other runs: a call missing here but answered there (same
    model identity, same request, hence the same key) is copied over instead of being made again,
    so re-judging or re-aggregating never repeats a model call. They are read only on a miss.
    """

    def __init__(self, path: Path, fallbacks: Sequence[Path] = ()):
        self.path = path
        # Where each answer's line is (offset, length): a store's memory grows with its number of
        # calls, never with their texts (issue 13), and by ~20 bytes a call in contiguous arrays
        # (answer_index.py); an answer is read back, and its key checked, when it is asked for.
        self._answers = AnswerIndex()
        self._failures: dict[str, Completion] = {}
        self._fallback_paths = [p for p in fallbacks if p != path]
        self._fallbacks: list[CallStore] | None = None
        self.reused_from: set[str] = set()
        self.dropped_partial_line = False
        self._handle: Any = None  # opened on the first append (a store only read opens nothing)
        self._reader: Any = None  # opened on the first answer read back
        self._end = 0  # the file's size: where the next appended line starts
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise RunDirectoryError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        # Line by line: the file is never in memory whole (issue 13: a full PersonaGym's judging
        # calls are ~70 MB; reading them at once doubled the re-derive's peak memory).
        with handle:
            offset = 0
            for number, raw in enumerate(handle, start=1):
                if not self._load_line(number, raw, offset):
                    break
                offset += len(raw)
        self._end = offset

    def _load_line(self, number: int, raw: bytes, offset: int) -> bool:
        """Index one line; False when it was a partial last line (dropped from the file).

        Its key and completion are decoded and checked (`_key_and_completion`); the request
        between them, most of a judging line, is not: it is what the key hashed, read only when
        a sample's prompt is shown (call_index.py), which then names a damaged line."""
        if not raw.strip():
            return True
        try:
            key, data = _key_and_completion(raw)
            if not isinstance(key, str):
                raise TypeError(f"'key' is a {type(key).__name__}, not a string")
            completion = Completion.from_json(data)
        # ValueError covers JSON syntax, bad UTF-8 and wrongly typed fields, AttributeError a
        # field that is not an object: a wrongly shaped line is named, never a traceback.
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if not raw.endswith(b"\n"):  # only the last line can lack its newline
                # A run killed mid-write leaves a partial last line: that call is redone.
                self.dropped_partial_line = True
                self._truncate_partial_tail(len(raw))
                return False
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise RunDirectoryError(
                f"corrupted run directory: {self.path}, line {number}: {why}. Delete that "
                "line (its call will be redone) or the whole run directory."
            ) from exc
        if completion.ok:
            self._set_answer(key, (offset, len(raw)))  # a later line for the same key wins
            self._failures.pop(key, None)
        elif self._find(key) is None:
            self._failures[key] = completion
        return True

    def _truncate_partial_tail(self, tail_bytes: int) -> None:
        with self.path.open("r+b") as handle:
            handle.seek(0, os.SEEK_END)
            handle.truncate(handle.tell() - tail_bytes)

    def answer(self, key: str) -> Completion | None:
        found = self._find(key)
        if found is not None:
            return self._completion(found[0], found[2])
        if not self._fallback_paths:
            return None
        if self._fallbacks is None:
            self._fallbacks = []
            for path in self._fallback_paths:
                try:
                    self._fallbacks.append(CallStore(path))
                except RunDirectoryError:
                    continue  # another run's damage is reported when that run is used
        for other in self._fallbacks:
            there = other._find(key)
            if there is not None:
                _, line, data = there
                position = self._write(line if line.endswith(b"\n") else line + b"\n")
                self._set_answer(key, position)
                self.reused_from.add(other.path.parent.parent.name)
                return self._completion(position, data)
        return None

    def _set_answer(self, key: str, position: Position) -> None:
        # Overwrite the key's older line, if any, so the index holds one entry per key and
        # len() stays the number of answered keys. A new key (the common case) reads no line.
        older = self._find(key)
        self._answers.set(key, position, replaces=older[0] if older is not None else None)

    def _find(self, key: str) -> tuple[Position, bytes, Any] | None:
        """The newest answer line holding `key`: (position, line, completion JSON), or None.

        The index knows a key by its first 64 bits only, so each candidate line's full key is
        compared: a line whose key shares those bits is another call's (skipped); one whose key
        does not was not what the index recorded there, so the file changed under the run."""
        for position in self._answers.candidates(key):
            line = self._line_at(position)
            stored_key, data = self._decode(position, line)
            if stored_key == key:
                return position, line, data
            if not isinstance(stored_key, str) or key_prefix(stored_key) != key_prefix(key):
                raise self._changed(position, f"the line there holds key {stored_key!r}")
        return None

    def _line_at(self, position: tuple[int, int]) -> bytes:
        if self._reader is None:
            self._reader = self.path.open("rb")
        offset, size = position
        self._reader.seek(offset)
        return self._reader.read(size)

    def _decode(self, position: Position, line: bytes) -> tuple[Any, Any]:
        try:
            return _key_and_completion(line)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._changed(position, str(exc)) from exc

    def _completion(self, position: Position, data: Any) -> Completion:
        try:
            return Completion.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._changed(position, str(exc)) from exc

    def _changed(self, position: Position, why: str) -> RunDirectoryError:
        # The line was whole when it was indexed: the file changed under this run.
        return RunDirectoryError(
            f"{self.path} changed while this run used it (byte {position[0]}: {why}); another process "
            "wrote to it: rerun the command"
        )

    def _write(self, data: bytes) -> tuple[int, int]:
        """One line, in one write: in the kernel before the call counts as finished. Where it is."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed by close())
        position = (self._end, len(data))
        self._end += len(data)
        written = self._handle.write(data)
        while written is not None and written < len(data):  # a short write (signal, full pipe)
            data = data[written:]
            written = self._handle.write(data)
        return position

    def close(self) -> None:
        """Close the file (nothing is buffered: every line was written when it was appended)."""
        for name in ("_handle", "_reader"):
            handle = getattr(self, name, None)
            if handle is not None:
                setattr(self, name, None)
                handle.close()
        for other in self._fallbacks or ():
            other.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the file is closed by the OS anyway
            pass

    def failure(self, key: str) -> Completion | None:
        return self._failures.get(key)

    def __len__(self) -> int:
        return len(self._answers)

    def append(
        self, key: str, model: str, stage: str, request: ChatRequest, completion: Completion
    ) -> None:
        # The fields as json.dumps(entry) wrote them; the request's text is its canonical JSON.
        head = json.dumps({"schema": SCHEMA_VERSION, "key": key, "model": model, "stage": stage,
                           "time": round(time.time(), 3)}, ensure_ascii=False)
        line = (f'{head[:-1]}, "request": {request.canonical_json}, '
                f'"completion": {json.dumps(completion.to_json(), ensure_ascii=False)}}}\n')
        position = self._write(line.encode("utf-8"))
        # The canonical text was needed for this key and this line only: tasks keep their
        # requests until the run ends, and a copy of every prompt each would grow with the run.
        request.__dict__.pop("canonical_json", None)
        if completion.ok:
            self._set_answer(key, position)
            self._failures.pop(key, None)
        else:
            self._failures[key] = completion


def _key_and_completion(line: bytes) -> tuple[Any, Any]:
    """A stored line's key and completion. Only the line's head (the key) and its last field (the
    completion) are decoded, not the request between them (most of a judging line). In JSON text
    a quote inside a string is escaped, so the last '"completion": ' is the field's own name; a
    line of another layout is decoded whole."""
    head = line.find(_KEY_AT, 0, 120)
    start = line.rfind(_COMPLETION_AT)
    if head >= 0 and start >= 0:
        key_start = head + len(_KEY_AT)
        try:
            data = json.loads(line[start + len(_COMPLETION_AT):].rstrip()[:-1])
            return line[key_start : line.index(b'"', key_start)].decode("utf-8"), data
        except ValueError:
            pass  # the completion is not the last field
    entry = json.loads(line)
    return entry["key"], entry["completion"]


@dataclass(frozen=True)
class CallResult:
    """One request's outcome in `run_calls`."""

    completion: Completion  # as stored: a reply that failed its check is a failed call
    made: bool  # sent in this run; False: a stored answer, or a duplicate of another request
    unusable: str | None = None  # the check's reason when the last attempt's reply failed it


def run_calls(
    store: CallStore,
    backend_identity: str,
    model_label: str,
    stage: str,
    requests: Sequence[ChatRequest],
    generate: Callable[[Sequence[ChatRequest], Callable[[int, Completion], None]], None],
    progress: Callable[[int], None] | None = None,
    *,
    checks: Sequence[ReplyCheck | None] | None = None,
    content_attempts: int = 1,
) -> list[CallResult]:
    """Answer `requests`, reusing stored answers and calling `generate` only for the rest.

    Identical requests within one batch are sent once. `checks[i]` (optional) says why a reply
    to request i is unusable: such a reply is asked again, up to `content_attempts` attempts in
    all, and if the last one fails too it is stored as a failed call (text kept, error set), so a
    later run retries it. A stored answer that fails its check is not reused but asked again.
    """
    keys = [request.cache_key(backend_identity) for request in requests]
    check_of = list(checks) if checks is not None else [None] * len(requests)
    results: list[Completion | None] = []
    for key, check in zip(keys, check_of):
        stored = store.answer(key)
        # An answer stored before this check existed (or by another version) is not trusted.
        if stored is not None and check is not None and check(stored.text or "") is not None:
            stored = None
        results.append(stored)
    unusable: list[str | None] = [None] * len(requests)
    made = [False] * len(requests)
    pending: dict[str, list[int]] = {}
    for index, (key, result) in enumerate(zip(keys, results)):
        if result is None:
            pending.setdefault(key, []).append(index)
    if progress and len(requests) - sum(len(v) for v in pending.values()):
        progress(len(requests) - sum(len(v) for v in pending.values()))
    order = list(pending)
    to_send = [requests[pending[key][0]] for key in order]
    send_checks = [check_of[pending[key][0]] for key in order]
    # Attempts and the reasons of failed attempts so far, per position in `to_send`.
    history: list[tuple[int, list[str]]] = [(0, []) for _ in to_send]

    def finish(position: int, completion: Completion, reason: str | None) -> None:
        key = order[position]
        store.append(key, model_label, stage, to_send[position], completion)
        for index in pending[key]:
            results[index] = completion
            unusable[index] = reason
        made[pending[key][0]] = True
        if progress:
            progress(len(pending[key]))

    def round_callback(positions: list[int], last: bool, retry: list[int]) -> Callable[[int, Completion], None]:
        def on_result(sub_index: int, completion: Completion) -> None:
            position = positions[sub_index]
            before, errors = history[position]
            attempts = before + completion.attempts
            errors = [*errors, *completion.attempt_errors]
            check = send_checks[position]
            reason = check(completion.text or "") if check is not None and completion.ok else None
            if reason is not None and not last:
                history[position] = (attempts, [*errors, f"unusable reply: {reason}"])
                retry.append(position)
                return
            merged = replace(completion, attempts=attempts, attempt_errors=tuple(errors))
            if reason is not None:
                merged = replace(merged, error=f"unusable reply: {reason} (after {attempts} attempt(s))")
            finish(position, merged, reason)

        return on_result

    positions = list(range(len(to_send)))
    for round_number in range(1, max(1, content_attempts) + 1):
        if not positions:
            break
        retry: list[int] = []
        last = round_number >= content_attempts
        generate([to_send[p] for p in positions], round_callback(positions, last, retry))
        positions = sorted(retry)
    for index, result in enumerate(results):
        if result is None:
            # A backend that forgot a request must not turn into a silent gap.
            results[index] = Completion.failure("backend returned no result for this request")
    return [CallResult(r, m, u) for r, m, u in zip(results, made, unusable) if r is not None]
