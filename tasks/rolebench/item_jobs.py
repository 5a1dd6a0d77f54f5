"""RoleBench's per-item jobs: what one item's job returns, and a lockstep driver for `evaluate`.

Each item is one job (task_api.Job): the model's answer, then, as soon as it is back, every
judge's ranking calls for the item (both orders at once under `both-orders`). The job returns an
`ItemResult`; `RoleBenchTask.finish` turns those into records and metrics. `evaluate` (the
stage-by-stage interface, answers already given) drives the same judging generators through
`lockstep`, so both interfaces share one implementation and give identical outcomes.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from rolebench_eval.judges.pairwise_ranking import RankingRequest
from rolebench_eval.requests import Completion
from rolebench_eval.task_api import Job, ModelCall


@dataclass(frozen=True)
class ItemResult:
    """One item's calls and their completions, as `finish` needs them (ROUGE is computed there)."""

    sample_id: str
    answer: Completion
    # The item's ranking requests under the order policy (the same for every judge); None when it
    # was not judged: no judges, no baseline answer (`skipped`), or the answer failed.
    plan: tuple[RankingRequest, ...] | None
    skipped: str | None  # why the item has no RoleGPT baseline answer (only with judges)
    # One completion per (judge, request), judge-major in settings.judges order, then plan order.
    replies: tuple[Completion, ...] = ()


def _step(job: Job, value: list[Completion] | None, results: list[Any], index: int) -> list[ModelCall] | None:
    """Advance one job to its next non-empty batch of calls; None once it has returned."""
    while True:
        try:
            calls = job.send(value)  # type: ignore[arg-type]  # send(None) starts a generator
        except StopIteration as stop:
            results[index] = stop.value
            return None
        if calls:
            return list(calls)
        value = []  # a job yielding [] gets [] back at once (task_api contract)


def lockstep(jobs: list[Job]) -> Generator[list[ModelCall], list[Completion], list[Any]]:
    """Run jobs together: each round yields every running job's next calls as one batch (in job
    order), hands each job its share of the replies, and finally returns the jobs' results.

    Yields nothing when no job asks for a call, so a task without judge calls returns at once.
    """
    results: list[Any] = [None] * len(jobs)
    current: dict[int, list[ModelCall]] = {}
    for index, job in enumerate(jobs):
        calls = _step(job, None, results, index)
        if calls is not None:
            current[index] = calls
    while current:
        batch = [call for calls in current.values() for call in calls]
        replies = yield batch
        if len(replies) != len(batch):
            raise ValueError(f"lockstep: {len(replies)} completion(s) for {len(batch)} call(s)")
        following: dict[int, list[ModelCall]] = {}
        offset = 0
        for index, calls in current.items():
            share = list(replies[offset : offset + len(calls)])
            offset += len(calls)
            more = _step(jobs[index], share, results, index)
            if more is not None:
                following[index] = more
        current = following
    return results
