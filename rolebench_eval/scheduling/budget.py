"""`--max-calls` and `--budget-usd`: a run stops cleanly BEFORE it would exceed them.

The scheduler asks `refuse(role, model_label, request)` before it sends a call and tells
`spent(role, model_label, completion)` after. A refused call is not sent and not stored: the run
ends incomplete (exit 3) with `incomplete_line()`, and a rerun of the same command reuses every
stored call and continues, with the same limits again (they count what one invocation sends).

The cost check is conservative: what was spent, plus a high estimate of every call in flight, plus
a high estimate of this request (prompt tokens from its text length, completion tokens = its
max_tokens) must stay within the budget. Calls to models without a price (local engines, names not
in the table) are not limited by `--budget-usd`; a warning says so once per model.
Once the budget refuses a call it refuses every later priced call too: the run stops, rather than
squeezing in whatever small calls still fit, so what was left undone is one clear line.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping

from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.scheduling.pricing import PRICED_BACKENDS, Price, PriceBook, estimate_cost, estimate_prompt_tokens


class Budget:
    def __init__(
        self,
        max_calls: int | None = None,
        budget_usd: float | None = None,
        prices: Mapping[str, Price] | None = None,
        warn: Callable[[str], None] | None = None,
    ):
        self.max_calls = max_calls
        self.budget_usd = budget_usd
        self.prices = prices
        self.warnings: list[str] = []
        self._warn = warn
        self._book = PriceBook(prices)
        self.sent = 0  # calls allowed to go out
        self.spent_usd = 0.0  # estimated cost of the completed calls of priced models
        # Estimates reserved for calls in flight, per label (a min-heap: see `spent`).
        self._reserved: dict[str, list[float]] = {}
        self.refused_calls = 0
        self.stopped_by: str | None = None  # "--max-calls" or "--budget-usd", the first to refuse
        self._warned: set[str] = set()
        self._last_estimate: dict[str, float] = {}

    def register(self, label: str, backend: str, model: str) -> None:
        """Which model a label stands for (`ModelSpec.backend`, `ModelSpec.model`): its price."""
        self._book.register(label, backend, model)

    def _price(self, label: str) -> tuple[str, Price] | None:
        return self._book.price_of(label)

    def estimate(self, model_label: str, request: ChatRequest) -> float | None:
        """A high estimate of what `request` can cost, or None when its model has no price."""
        priced = self._price(model_label)
        if priced is None:
            return None
        model, price = priced
        return estimate_cost(model, estimate_prompt_tokens(request), request.params.max_tokens, {model: price})

    @property
    def reserved_usd(self) -> float:
        return sum(sum(v) for v in self._reserved.values())

    def refuse(self, role: str, model_label: str, request: ChatRequest) -> str | None:
        """Why this call must not be sent, or None (then it counts as sent and its estimate is
        reserved until `spent`)."""
        if self.max_calls is not None and self.sent + 1 > self.max_calls:
            return self._refused("--max-calls", f"--max-calls {self.max_calls} reached")
        cost = None
        if self.budget_usd is not None:
            cost = self.estimate(model_label, request)
            if cost is None:
                self._note_unpriced(model_label)
            elif self.stopped_by == "--budget-usd" or self.spent_usd + self.reserved_usd + cost > self.budget_usd:
                return self._refused(
                    "--budget-usd",
                    f"--budget-usd {self.budget_usd:.2f} would be exceeded (spent ~${self.spent_usd:.4f}, "
                    f"in flight up to ${self.reserved_usd:.4f}, this call up to ${cost:.4f})",
                )
        self.sent += 1
        if cost is not None:
            self._last_estimate[model_label] = cost
            heapq.heappush(self._reserved.setdefault(model_label, []), cost)
        return None

    def spent(self, role: str, model_label: str, completion: Completion) -> None:
        """A sent call completed: its reservation becomes its cost (from the reported usage; the
        reservation itself when the server reported none, so unknown is never counted as $0)."""
        reserved = self._reserved.get(model_label)
        # The completion does not say which request it answers: releasing the SMALLEST
        # reservation keeps the rest at least as high as the calls still in flight can cost.
        # A retry of an unusable reply is spent again without a new reservation: it is charged at
        # the last estimate of this label when its usage is unknown.
        estimate = heapq.heappop(reserved) if reserved else self._last_estimate.get(model_label)
        priced = self._price(model_label)
        if priced is None:
            return
        model, price = priced
        usage = completion.usage
        cost = estimate_cost(model, usage.prompt_tokens, usage.completion_tokens, {model: price})
        if cost is None:
            cost = estimate if estimate is not None else 0.0
        self.spent_usd += cost

    def _refused(self, flag: str, reason: str) -> str:
        self.refused_calls += 1
        if self.stopped_by is None:
            self.stopped_by = flag
        return reason

    def _note_unpriced(self, label: str) -> None:
        if label in self._warned:
            return
        self._warned.add(label)
        backend, model = self._book.model_of(label, ("?", label))
        if backend in PRICED_BACKENDS:
            why = f"no price is known for it; give one with --price {model}=IN,OUT to count it"
        else:
            why = "a local engine has no per-token price"
        message = f"--budget-usd does not limit calls to {label} ({backend} {model}): {why}"
        self.warnings.append(message)
        if self._warn is not None:
            self._warn(message)

    def incomplete_line(self) -> str | None:
        """The RunResult.incomplete line when calls were refused, else None."""
        if not self.refused_calls:
            return None
        n = self.refused_calls
        if self.stopped_by == "--max-calls":
            return (f"stopped at --max-calls {self.max_calls}: {n} call(s) refused; rerun to continue "
                    f"(stored calls are reused; each run makes at most {self.max_calls} new calls)")
        return (f"stopped before exceeding --budget-usd {self.budget_usd:.2f} (spent ~${self.spent_usd:.2f} "
                f"estimated): {n} call(s) refused; rerun with a higher budget to continue "
                "(stored calls are reused)")
