"""Fakes shared by the progress display tests: a clock the test moves, and a finished call."""

from __future__ import annotations

from rolebench_eval.requests import Completion, Usage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ok(tokens: int) -> Completion:
    return Completion(text="a", usage=Usage(10, tokens))
