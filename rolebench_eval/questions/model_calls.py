"""One model role's jobs through the machinery of `rbe run`: spec, endpoint identity, lane, the
Scheduler, the CallTally (calls, tokens, cost), an optional Budget and the progress display.

Used by question generation (the generator) and by the judge-based quality check; the call store,
the lock and what the jobs ask are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.models import ModelSpec
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.task_api import Job


def identified_spec(text: str, base_url: str | None, deviations: list[str]) -> ModelSpec:
    """A model spec as `--judge` parses it, with what its endpoint says it serves (its identity)."""
    from rolebench_eval.models import judge_spec, preflight
    from rolebench_eval.running.endpoint_identity import identify_endpoints

    spec = judge_spec(text, base_url)
    (identified,), error = identify_endpoints([spec], deviations, preflight)
    if error is not None:
        raise error
    assert identified is not None
    return identified


@dataclass
class RoleRun:
    values: list[Any]  # the jobs' return values, in order
    made: int
    reused: int
    calls: dict[str, Any]  # CallTally.section(): the `calls` summary of results.json
    stopped: str | None  # the budget's line when it refused calls


def run_role_jobs(
    role: str, spec: ModelSpec, identity: str, store: CallStore, jobs: Sequence[Job], *,
    options: BackendOptions, prices: Sequence[str] = (), budget_usd: float | None = None,
    max_calls: int | None = None, progress: bool | None = None, content_attempts: int = 1,
    log: Callable[[str], None] = lambda message: None,
) -> RoleRun:
    from rolebench_eval.models import build_backend
    from rolebench_eval.running.call_accounting import CallTally
    from rolebench_eval.running.runner import model_lane
    from rolebench_eval.scheduling.budget import Budget
    from rolebench_eval.scheduling.pricing import price_table
    from rolebench_eval.scheduling.progress import Observers, ProgressDisplay
    from rolebench_eval.scheduling.scheduler import RoleBinding, Scheduler

    book = price_table(list(prices))
    tally = CallTally(content_attempts, prices=book)
    tally.register(spec.label, spec.backend, spec.model)
    budget = Budget(max_calls, budget_usd, prices=book, warn=log) if max_calls is not None or budget_usd is not None else None
    if budget is not None:
        budget.register(spec.label, spec.backend, spec.model)

    def open_backend(model_spec: ModelSpec) -> Any:
        log(f"loading {model_spec.label} ({model_spec.backend})")
        return build_backend(model_spec, options)

    binding = RoleBinding(role, spec.label, identity, store, model_lane(spec, open_backend), "generation")
    display = ProgressDisplay(enabled=progress)
    scheduler = Scheduler({role: binding}, content_attempts=content_attempts,
                          observer=Observers([tally, display]), budget=budget)
    try:
        values = scheduler.run(jobs)
    finally:
        display.close()
    return RoleRun(values, sum(scheduler.counts.made.values()), sum(scheduler.counts.reused.values()),
                   tally.section(), budget.incomplete_line() if budget is not None else None)
