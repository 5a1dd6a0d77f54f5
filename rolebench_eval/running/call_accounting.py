"""What a run's model calls cost and how they went: the `calls` section of results.json.

Counted per role (the model under test, each judge, the examples model) and stage, for the calls
of this run: made, reused from the run directory, failed after their retries, empty answers of the
model under test, and the attempts that had to be repeated (HTTP 429/5xx/timeouts retried by a
backend, unusable replies retried by the runner) with why. A faulty endpoint stays visible even
when every call recovered in the end.

Also what they cost: prompt and completion tokens as the backend reported them (`Completion.usage`;
a call whose reply came without usage is counted in `usage_missing`, never as 0 tokens), wall time
from the first send to the last completion, throughput, and an estimated cost in USD for models
with a known price (scheduling/pricing.py; a model without one has cost None: "no price", not $0).
Tokens are those of each call's final attempt: an earlier attempt whose reply was unusable and
asked again is not in any completion's usage, so it is not counted (its count is in
`retried_attempts`).

`CallTally` is the scheduler's observer: `queued`, `started` and `finished` are its hooks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.requests import Completion
from rolebench_eval.scheduling.pricing import PRICES_AS_OF, Price, PriceBook, estimate_cost
from rolebench_eval.task_api import MODEL_ROLE as TASK_MODEL_ROLE

MODEL_ROLE = "model under test"
EMPTY_ANSWER = "empty answer"
NOT_SENT = "not sent: "  # prefix of a call a budget refused (scheduler contract)
# Reasons are counted by their text; a server's long error body must not make the section huge.
_REASON_CHARS = 200


def empty_answer_check(text: str) -> str | None:
    """The runner's check of the model under test's replies: "" or whitespace is unusable."""
    return EMPTY_ANSWER if not text.strip() else None


def role_name(role: str) -> str:
    """The role as reports show it: the scheduler's "model" is the model under test."""
    return MODEL_ROLE if role == TASK_MODEL_ROLE else role


def _short(reason: str) -> str:
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 1] + "…"


def _rate(amount: int, seconds: float | None) -> float | None:
    return round(amount / seconds, 3) if seconds and seconds > 0 else None


@dataclass
class _Span:
    """First send and last completion (clock seconds), for wall time and throughput."""

    first: float | None = None
    last: float | None = None

    def start(self, now: float) -> None:
        if self.first is None or now < self.first:
            self.first = now

    def end(self, now: float) -> None:
        if self.last is None or now > self.last:
            self.last = now

    @property
    def seconds(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return round(max(0.0, self.last - self.first), 3)


@dataclass
class _Count:
    made: int = 0
    reused: int = 0
    failed: int = 0
    not_sent: int = 0
    empty_answers: int = 0
    retried_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_missing: int = 0  # replies received without token counts
    latency_s: float = 0.0  # summed latency of the made calls the scheduler timed
    timed: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    attempt_errors: Counter[str] = field(default_factory=Counter)
    span: _Span = field(default_factory=_Span)

    def json(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "reused": self.reused,
            "failed": self.failed,
            "not_sent": self.not_sent,
            "empty_answers": self.empty_answers,
            "retried_attempts": self.retried_attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "usage_missing": self.usage_missing,
            "failure_reasons": dict(self.failure_reasons.most_common()),
            "attempt_errors": dict(self.attempt_errors.most_common()),
        }

    def throughput(self) -> dict[str, Any]:
        seconds = self.span.seconds
        return {
            "wall_s": seconds,
            "mean_latency_s": round(self.latency_s / self.timed, 3) if self.timed else None,
            "completion_tokens_per_s": _rate(self.completion_tokens, seconds),
            "calls_per_s": _rate(self.made, seconds),
        }


_SUMMED = ("made", "reused", "failed", "not_sent", "empty_answers", "retried_attempts",
           "prompt_tokens", "completion_tokens", "usage_missing")


@dataclass
class CallTally:
    """Counts of one run's calls, keyed by (role, model label, stage)."""

    content_attempts: int
    prices: Mapping[str, Price] | None = None  # None: the default table (pricing.DEFAULT_PRICES)
    clock: Callable[[], float] = time.monotonic
    _counts: dict[tuple[str, str, str], _Count] = field(default_factory=dict)
    _role_spans: dict[tuple[str, str], _Span] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._book = PriceBook(self.prices)

    def register(self, label: str, backend: str, model: str) -> None:
        """Say which model a label stands for (`ModelSpec.backend`, `ModelSpec.model`): its price."""
        self._book.register(label, backend, model)

    def price_of(self, label: str) -> tuple[str, Price] | None:
        """(model name, price) of a label, or None: a local or unregistered model has no price."""
        return self._book.price_of(label)

    # -- the scheduler's observer hooks ------------------------------------------------------

    def queued(self, role: str, model_label: str, stage: str) -> None:
        """A call is known (the progress display counts these; the tally needs nothing)."""

    def started(self, role: str, model_label: str, stage: str) -> None:
        """A call was sent: the first send of a role starts its wall time."""
        now = self.clock()
        role = role_name(role)
        self._count(role, model_label, stage).span.start(now)
        self._span(role, model_label).start(now)

    def finished(self, role: str, model_label: str, stage: str, completion: Completion, made: bool,
                 latency_s: float | None = None, *, empty: bool | None = None) -> None:
        """A call's final completion (as stored). `empty` None: read from the completion (the
        scheduler stores an empty answer of the model under test as "unusable reply: empty answer")."""
        role = role_name(role)
        if empty is None:
            empty = role == MODEL_ROLE and f"unusable reply: {EMPTY_ANSWER}" in (completion.error or "")
        self.add(role, model_label, stage, completion, made=made, empty=empty)
        if made and not (completion.error or "").startswith(NOT_SENT):
            now = self.clock()
            count = self._count(role, model_label, stage)
            count.span.end(now)
            self._span(role, model_label).end(now)
            if latency_s is not None:
                count.latency_s += latency_s
                count.timed += 1

    def add(self, role: str, model: str, stage: str, completion: Completion, *, made: bool,
            empty: bool = False) -> None:
        """One call as the runner got it (the stored completion, before any hand-over rewrite)."""
        count = self._count(role_name(role), model, stage)
        if (completion.error or "").startswith(NOT_SENT):
            # Refused by the budget: not a failure of the endpoint; the budget's line says why.
            count.not_sent += 1
            return
        if not made:
            count.reused += 1
            return
        count.made += 1
        # Attempts made in this run only: a reused answer's history belongs to its own run.
        count.retried_attempts += max(0, completion.attempts - 1)
        count.attempt_errors.update(_short(e) for e in completion.attempt_errors)
        if completion.text is not None:
            usage = completion.usage
            if usage.prompt_tokens is None or usage.completion_tokens is None:
                count.usage_missing += 1
            else:
                count.prompt_tokens += usage.prompt_tokens
                count.completion_tokens += usage.completion_tokens
        if empty:
            count.empty_answers += 1
        elif not completion.ok:
            count.failed += 1
            count.failure_reasons[_short(completion.error or "unknown")] += 1

    def _count(self, role: str, model: str, stage: str) -> _Count:
        # get before create: a _Count (two Counters) built per event only to be dropped was a
        # visible share of the client's CPU per call (bench_scheduler_overhead.py --profile).
        key = (role, model, stage)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = _Count()
        return count

    def _span(self, role: str, model: str) -> _Span:
        span = self._role_spans.get((role, model))
        if span is None:
            span = self._role_spans[(role, model)] = _Span()
        return span

    # -- what the run reports ----------------------------------------------------------------

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

    def _cost(self, label: str, count: _Count) -> dict[str, Any]:
        priced = self.price_of(label)
        if priced is None:
            return {"cost_usd": None, "priced_as": None}
        model, price = priced
        cost = estimate_cost(model, count.prompt_tokens, count.completion_tokens, {model: price})
        return {
            # Over the calls that reported usage; usage_missing says how many did not.
            "cost_usd": round(cost, 6) if cost is not None else None,
            "priced_as": {"model": model, "input_per_million": price.input_per_million,
                          "output_per_million": price.output_per_million, "source": price.source},
        }

    def section(self) -> dict[str, Any]:
        total = _Count()
        rows = []
        roles: dict[tuple[str, str], _Count] = {}
        for (role, model, stage), count in self._counts.items():
            rows.append({"role": role, "model": model, "stage": stage, **count.json(),
                         **count.throughput(), **self._cost(model, count)})
            role_count = roles.setdefault((role, model), _Count())
            for target in (total, role_count):
                for name in _SUMMED:
                    setattr(target, name, getattr(target, name) + getattr(count, name))
                target.latency_s += count.latency_s
                target.timed += count.timed
        by_model_role = []
        for (role, model), count in roles.items():
            count.span = self._role_spans.get((role, model), _Span())
            summary = {k: v for k, v in count.json().items() if k not in ("failure_reasons", "attempt_errors")}
            by_model_role.append({"role": role, "model": model, **summary, **count.throughput(),
                                  **self._cost(model, count)})
        totals = {k: v for k, v in total.json().items() if k not in ("failure_reasons", "attempt_errors")}
        costs = [r["cost_usd"] for r in by_model_role if r["cost_usd"] is not None]
        no_price = sorted({r["model"] for r in by_model_role if r["priced_as"] is None and r["made"]})
        totals["cost_usd"] = round(sum(costs), 6) if costs else None
        # The total is an estimate of the priced models only: say which models it leaves out.
        totals["no_price"] = no_price
        return {"content_attempts": self.content_attempts, "prices_as_of": PRICES_AS_OF,
                "total": totals, "by_role": rows, "roles": by_model_role}


def nothing_scored(task_results: dict[str, Any]) -> bool:
    """True when a task's results hold no computed metric at all (every mean is None)."""
    metrics = task_results.get("metrics") or {}
    return not any(isinstance(m, dict) and m.get("mean") is not None for m in metrics.values())
