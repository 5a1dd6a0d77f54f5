"""What a run's model calls cost and how they went: the `calls` section of results.json.

Counted per role (the model under test, each judge, the examples model) and stage, for the calls
of this run: made, reused from the run directory, failed after their retries, empty answers of the
model under test, and the attempts that had to be repeated (HTTP 429/5xx/timeouts retried by a
backend, unusable replies retried by the runner) with why. A faulty endpoint stays visible even
when every call recovered in the end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.requests import Completion

MODEL_ROLE = "model under test"
EMPTY_ANSWER = "empty answer"
# Reasons are counted by their text; a server's long error body must not make the section huge.
_REASON_CHARS = 200


def empty_answer_check(text: str) -> str | None:
    """The runner's check of the model under test's replies: "" or whitespace is unusable."""
    return EMPTY_ANSWER if not text.strip() else None


def _short(reason: str) -> str:
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 1] + "…"


@dataclass
class _Count:
    made: int = 0
    reused: int = 0
    failed: int = 0
    empty_answers: int = 0
    retried_attempts: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    attempt_errors: Counter[str] = field(default_factory=Counter)

    def json(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "reused": self.reused,
            "failed": self.failed,
            "empty_answers": self.empty_answers,
            "retried_attempts": self.retried_attempts,
            "failure_reasons": dict(self.failure_reasons.most_common()),
            "attempt_errors": dict(self.attempt_errors.most_common()),
        }


@dataclass
class CallTally:
    """Counts of one run's calls, keyed by (role, model label, stage)."""

    content_attempts: int
    _counts: dict[tuple[str, str, str], _Count] = field(default_factory=dict)

    def add(self, role: str, model: str, stage: str, completion: Completion, *, made: bool,
            empty: bool = False) -> None:
        """One call as the runner got it (the stored completion, before any hand-over rewrite)."""
        count = self._counts.setdefault((role, model, stage), _Count())
        if not made:
            count.reused += 1
            return
        count.made += 1
        # Attempts made in this run only: a reused answer's history belongs to its own run.
        count.retried_attempts += max(0, completion.attempts - 1)
        count.attempt_errors.update(_short(e) for e in completion.attempt_errors)
        if empty:
            count.empty_answers += 1
        elif not completion.ok:
            count.failed += 1
            count.failure_reasons[_short(completion.error or "unknown")] += 1

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self._counts.values())

    def failure_lines(self) -> list[str]:
        """One line per role and stage with failed calls, for RunResult.incomplete."""
        lines = []
        for (role, model, stage), count in self._counts.items():
            if count.failed:
                reasons = "; ".join(f"{n}x {why}" for why, n in count.failure_reasons.most_common())
                lines.append(
                    f"{count.failed} {stage} call(s) of {role} ({model}) failed after their retries: {reasons}"
                )
        return lines

    def section(self) -> dict[str, Any]:
        total = _Count()
        rows = []
        for (role, model, stage), count in self._counts.items():
            rows.append({"role": role, "model": model, "stage": stage, **count.json()})
            for name in ("made", "reused", "failed", "empty_answers", "retried_attempts"):
                setattr(total, name, getattr(total, name) + getattr(count, name))
        totals = total.json()
        for name in ("failure_reasons", "attempt_errors"):
            totals.pop(name)
        return {"content_attempts": self.content_attempts, "total": totals, "by_role": rows}


def nothing_scored(task_results: dict[str, Any]) -> bool:
    """True when a task's results hold no computed metric at all (every mean is None)."""
    metrics = task_results.get("metrics") or {}
    return not any(isinstance(m, dict) and m.get("mean") is not None for m in metrics.values())
