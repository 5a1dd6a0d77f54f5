"""Append-only JSONL store of model calls: the run's system of record and its resume point.

Each finished call is one line, flushed at once, keyed by the hash of the model's identity and the
exact request. A rerun loads the file and sends only the requests it has no successful answer for,
so killing a run at any moment loses at most the calls in flight. Failed calls are recorded too
(with their reason) and retried by the next run; they never count as answers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.requests import ChatRequest, Completion

SCHEMA_VERSION = 1


class CallStore:
    """The calls of one run directory, in one file per model role (generation, judges).

    `fallbacks` are the same files of other runs: a call missing here but answered there (same
    model identity, same request, hence the same key) is copied over instead of being made again,
    so re-judging or re-aggregating never repeats a model call. They are read only on a miss.
    """

    def __init__(self, path: Path, fallbacks: Sequence[Path] = (), *, keep_lines: bool = False):
        self.path = path
        self._answers: dict[str, Completion] = {}
        self._failures: dict[str, Completion] = {}
        self._lines: dict[str, str] = {}
        self._keep_lines = keep_lines
        self._fallback_paths = [p for p in fallbacks if p != path]
        self._fallbacks: list[CallStore] | None = None
        self.reused_from: set[str] = set()
        self.dropped_partial_line = False
        if path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as handle:
            lines = handle.readlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = entry["key"]
                completion = Completion.from_json(entry["completion"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                if number == len(lines) and not line.endswith("\n"):
                    # A run killed mid-write leaves a partial last line: that call is redone.
                    self.dropped_partial_line = True
                    self._truncate_partial_tail(len(line.encode("utf-8")))
                    continue
                raise RunDirectoryError(
                    f"corrupted run directory: {self.path}, line {number}: {exc}. Delete that "
                    "line (its call will be redone) or the whole run directory."
                ) from exc
            if completion.ok:
                self._answers[key] = completion
                self._failures.pop(key, None)
                if self._keep_lines:
                    self._lines[key] = line if line.endswith("\n") else line + "\n"
            elif key not in self._answers:
                self._failures[key] = completion

    def _truncate_partial_tail(self, tail_bytes: int) -> None:
        with self.path.open("r+b") as handle:
            handle.seek(0, os.SEEK_END)
            handle.truncate(handle.tell() - tail_bytes)

    def answer(self, key: str) -> Completion | None:
        found = self._answers.get(key)
        if found is not None or not self._fallback_paths:
            return found
        if self._fallbacks is None:
            self._fallbacks = []
            for path in self._fallback_paths:
                try:
                    self._fallbacks.append(CallStore(path, keep_lines=True))
                except RunDirectoryError:
                    continue  # another run's damage is reported when that run is used
        for other in self._fallbacks:
            line = other._lines.get(key)
            if line is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
                self._answers[key] = other._answers[key]
                self.reused_from.add(other.path.parent.parent.name)
                return self._answers[key]
        return None

    def failure(self, key: str) -> Completion | None:
        return self._failures.get(key)

    def __len__(self) -> int:
        return len(self._answers)

    def append(
        self, key: str, model: str, stage: str, request: ChatRequest, completion: Completion
    ) -> None:
        entry: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "key": key,
            "model": model,
            "stage": stage,
            "time": round(time.time(), 3),
            "request": request.to_json(),
            "completion": completion.to_json(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
        if completion.ok:
            self._answers[key] = completion
            self._failures.pop(key, None)
        else:
            self._failures[key] = completion


def run_calls(
    store: CallStore,
    backend_identity: str,
    model_label: str,
    stage: str,
    requests: Sequence[ChatRequest],
    generate: Callable[[Sequence[ChatRequest], Callable[[int, Completion], None]], None],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Completion], int]:
    """Answer `requests`, reusing stored answers and calling `generate` only for the rest.

    Identical requests within one batch are sent once. Returns (completions, calls made).
    """
    keys = [request.cache_key(backend_identity) for request in requests]
    results: list[Completion | None] = [store.answer(key) for key in keys]
    pending: dict[str, list[int]] = {}
    for index, (key, result) in enumerate(zip(keys, results)):
        if result is None:
            pending.setdefault(key, []).append(index)
    if progress and len(requests) - sum(len(v) for v in pending.values()):
        progress(len(requests) - sum(len(v) for v in pending.values()))
    order = list(pending)
    to_send = [requests[pending[key][0]] for key in order]

    def on_result(position: int, completion: Completion) -> None:
        key = order[position]
        store.append(key, model_label, stage, to_send[position], completion)
        for index in pending[key]:
            results[index] = completion
        if progress:
            progress(len(pending[key]))

    if to_send:
        generate(to_send, on_result)
    missing = [i for i, r in enumerate(results) if r is None]
    for index in missing:
        # A backend that forgot a request must not turn into a silent gap.
        results[index] = Completion.failure("backend returned no result for this request")
    return [r for r in results if r is not None], len(to_send)
