"""The one scheduler of every model call of a run: which call is in flight, for every model and role.

Every job of every task runs at once (an asyncio task each). A job yields the calls it needs next;
each call is answered from the run's call store when it was made before, joined to an identical
call already in flight, or sent to its model's lane, which keeps the model busy (a local engine gets
everything that is ready as one batch, an endpoint as many requests as it serves well). So score
examples go out with the answers, a judgment as soon as its answer and examples are back, and a
dialogue's next turn as soon as the last one is: no stage waits for the slowest call of another job.

The scheduler owns what a reply means for the record: the task's content check (and the
empty-answer rule for the model under test), bounded retries of unusable replies, the append-only
store, and what is reported to the observer (call counts, tokens, progress) and the budget.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from rolebench_eval.running.call_accounting import EMPTY_ANSWER, empty_answer_check
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.errors import UsageError
from rolebench_eval.requests import Completion
from rolebench_eval.scheduling.lanes import Lane
from rolebench_eval.task_api import MODEL_ROLE, Job, ModelCall, ReplyCheck

NOT_SENT = "not sent: "
# Jobs running at once, and calls waiting for replies before another job may start. Every job
# started holds its prompts until it ends, and its calls wait in their lanes; starting all of a big
# run's jobs at once made the scheduler's memory grow with the samples (full PersonaGym: 20,000
# requests queued at the start). 512 jobs keep at least 512 calls ready (a PersonaGym-Light job
# asks 2 at once, then 1; a full PersonaGym one up to 10), twice the most slots an endpoint is
# given (256), and 2,048 calls bound what jobs of a large fan-out queue; a local engine gets them
# as its batch. What the live jobs hold is then bounded whatever the number of samples (full
# PersonaGym: ~380 live jobs from 100 personas on; bench/bench_scheduler_overhead.py). A job that
# ends, or calls that come back, let the next job start.
MAX_LIVE_JOBS = 512
MAX_QUEUED_CALLS = 2048
GC_THRESHOLD = 50_000  # allocations between two young-generation collections during a run


@contextmanager
def rare_collections() -> Iterator[None]:
    """The cyclic collector every GC_THRESHOLD allocations instead of 700, the old setting after.

    It ran every 700 allocations over a heap of live jobs, futures and completions: a fifth of
    the client's CPU per call (bench_scheduler_overhead.py), and a tenth of a re-derive's records
    and reports (bench_cached_rerun.py). Cycles are still collected, less often."""
    previous = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@dataclass(frozen=True)
class RoleBinding:
    """What a model role of the tasks ("model", "judge:<label>", "examples") is bound to."""

    role: str
    label: str  # the model's label (tables, the calls section)
    identity: str  # part of every cache key
    store: CallStore
    lane: Lane
    kind: str  # "generation" (the model under test) or "judging": the totals the CLI prints


@dataclass
class CallCounts:
    """Per kind ("generation", "judging"): calls made in this run and reused from the stores."""

    made: dict[str, int]
    reused: dict[str, int]
    stored_failures: int = 0  # failed calls written to a store: the next run retries them
    not_sent: int = 0  # calls the budget refused: not stored, the next run makes them


class Scheduler:
    def __init__(
        self,
        roles: Mapping[str, RoleBinding],
        *,
        content_attempts: int,
        observer: Any = None,
        budget: Any = None,
        max_live_jobs: int = MAX_LIVE_JOBS,
        max_queued_calls: int = MAX_QUEUED_CALLS,
    ):
        self._roles = dict(roles)
        self._max_live_jobs = max(1, max_live_jobs)
        self._max_queued_calls = max(1, max_queued_calls)
        self._queued_calls = 0  # calls of running jobs waiting for their replies (not from the store)
        self._room: asyncio.Event | None = None  # set while another job may start
        self._content_attempts = max(1, content_attempts)
        self._observer = observer
        # Looked up once: they are called for every call and attempt.
        self._hooks = {event: getattr(observer, event) for event in ("queued", "started")
                       if getattr(observer, event, None) is not None}
        self._budget = budget
        self._in_flight: dict[str, asyncio.Future[Completion]] = {}
        kinds = {binding.kind: 0 for binding in self._roles.values()}
        self.counts = CallCounts(made=dict(kinds), reused=dict(kinds))
        self.not_sent_reasons: dict[str, int] = {}
        self.lane_snapshots: dict[str, dict[str, Any]] = {}

    # -- running jobs --------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job], on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Run every job to its end; their return values, in order.

        With `on_done`, each job's value is handed to `on_done(index, value)` the moment the job
        ends (in the order jobs end) and is not kept: the returned list is then all None. Jobs
        start in their order, at most `max_live_jobs` run at once, and none starts while
        `max_queued_calls` calls wait for replies."""
        with rare_collections():
            return asyncio.run(self._run_all(jobs, on_done))

    async def _run_all(self, jobs: Sequence[Job], on_done: Callable[[int, Any], None] | None) -> list[Any]:
        values: list[Any] = [None] * len(jobs)
        queue = iter(enumerate(jobs))
        room = self._room = asyncio.Event()
        room.set()

        async def worker() -> None:
            # Workers share one iterator: jobs start in their order, at most one per worker, and
            # only a running job holds an asyncio task (a whole run's jobs are never all live).
            while True:
                while not room.is_set():
                    await room.wait()
                taken = next(queue, None)
                if taken is None:
                    return
                index, job = taken
                value = await self._drive(job)
                if on_done is None:
                    values[index] = value
                else:
                    on_done(index, value)
                # Not kept while the next job waits and runs: a worker holding its last job's
                # value (PersonaGym: the batch's prompts) made 512 of them outlive their jobs.
                del taken, job, value

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._max_live_jobs, len(jobs))):
                    group.create_task(worker())
        except BaseExceptionGroup as failure:
            # A whole backend failed, or a task raised: the first cause, as a plain exception,
            # so the CLI's error table applies (every finished call is already in the store).
            raise _first_cause(failure) from None
        finally:
            for lane in {id(b.lane): b.lane for b in self._roles.values()}.values():
                # What each lane did (concurrency limits, replicas, retries), for the run record.
                snapshot = lane.snapshot()
                if snapshot:
                    self.lane_snapshots[lane.label] = snapshot
                await lane.aclose()
        return values

    async def _drive(self, job: Job) -> Any:
        depth = 0
        try:
            calls = next(job)
            while True:
                # Calls all answered by the store are handed back at once, without a trip through
                # the event loop: a fully stored job (a re-derive, a resumed run's finished part)
                # runs to its end in one go, holding its prompts only while it runs.
                found = [self._lookup(c) for c in calls]
                if all(stored is not None for _, _, _, stored in found):
                    replies = [self._reused(binding, call, stored) for binding, call, _, stored in found]
                else:
                    self._queue_calls(len(found))
                    try:
                        replies = list(await asyncio.gather(*(self._call(f, depth) for f in found)))
                    finally:
                        self._queue_calls(-len(found))
                depth += 1
                calls = job.send(replies)
        except StopIteration as stop:
            return stop.value

    def _queue_calls(self, change: int) -> None:
        self._queued_calls += change
        if self._room is not None:
            if self._queued_calls < self._max_queued_calls:
                self._room.set()
            else:
                self._room.clear()

    # -- one call ------------------------------------------------------------------------------

    def _lookup(self, call: ModelCall) -> tuple[RoleBinding, ModelCall, str, Completion | None]:
        """The call's binding and key, and its stored answer (None: none that passes its check)."""
        binding = self._roles.get(call.model)
        if binding is None:
            raise UsageError(f"a task asked for model role {call.model!r}, which this run has no model for")
        key = call.request.cache_key(binding.identity)
        stored = binding.store.answer(key)
        # An answer stored before this check existed (or by another version) is not trusted.
        if stored is not None:
            check = _check_of(call)
            if check is not None and check(stored.text or "") is not None:
                stored = None
        return binding, call, key, stored

    def _reused(self, binding: RoleBinding, call: ModelCall, completion: Completion) -> Completion:
        self._count(binding, made=False)
        self._finished(binding, call, completion, made=False, latency=None)
        return completion

    async def _call(self, found: tuple[RoleBinding, ModelCall, str, Completion | None], depth: int) -> Completion:
        binding, call, key, stored = found
        if stored is not None:
            return self._reused(binding, call, stored)
        joined = self._in_flight.get(key)
        if joined is not None:  # the same request of another job: sent once, answered twice
            return self._reused(binding, call, await asyncio.shield(joined))
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            completion = await self._send(binding, call, key, _check_of(call), depth)
            future.set_result(completion)
            return completion
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joined calls re-raise it, nobody else must log it
            raise
        finally:
            del self._in_flight[key]

    async def _send(self, binding: RoleBinding, call: ModelCall, key: str, check: ReplyCheck | None, depth: int) -> Completion:
        refused = self._budget.refuse(binding.role, binding.label, call.request) if self._budget else None
        if refused:
            self.counts.not_sent += 1
            self.not_sent_reasons[refused] = self.not_sent_reasons.get(refused, 0) + 1
            refusal = Completion.failure(NOT_SENT + refused)
            self._finished(binding, call, refusal, made=False, latency=None)
            return refusal
        self._notify("queued", binding, call)
        attempt = _Attempt(started=time.monotonic())
        for number in range(1, self._content_attempts + 1):
            self._notify("started", binding, call)

            def sink(completion: Completion, last: bool = number == self._content_attempts) -> None:
                # Runs the moment the reply arrives: a final reply is recorded at once.
                attempt.add(completion, check)
                if attempt.reason is None or last:
                    self._settle(binding, call, key, attempt)

            await binding.lane.complete(call.request, priority=-depth, sink=sink)
            if attempt.handed is not None:
                return attempt.handed
            attempt.errors.append(f"unusable reply: {attempt.reason}")
        raise AssertionError("unreachable: the last attempt always settles")

    def _settle(self, binding: RoleBinding, call: ModelCall, key: str, attempt: _Attempt) -> None:
        """Record a call's final reply; what the task receives is `attempt.handed`."""
        assert attempt.last is not None
        completion, reason = attempt.last, attempt.reason
        if self._budget is not None:
            self._budget.spent(binding.role, binding.label, completion)
        stored = replace(completion, attempts=attempt.attempts, attempt_errors=tuple(attempt.errors))
        if reason is not None:
            # Kept with its text for the record, but a failed call: the next run asks again.
            stored = replace(stored, error=f"unusable reply: {reason} (after {attempt.attempts} attempt(s))")
        binding.store.append(key, binding.label, call.stage, call.request, stored)
        self._count(binding, made=True)
        if not stored.ok:
            self.counts.stored_failures += 1
        handed = stored
        if call.model == MODEL_ROLE and reason == EMPTY_ANSWER:
            # Stored as failed (retried by the next run) but judged as the model's answer, flagged.
            handed = replace(
                completion, attempts=attempt.attempts, attempt_errors=tuple(attempt.errors),
                notes=(*completion.notes, f"empty answer after {attempt.attempts} attempt(s)"),
            )
        attempt.handed = handed
        self._finished(binding, call, handed, made=True, latency=time.monotonic() - attempt.started,
                       empty=handed is not stored)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _count(self, binding: RoleBinding, *, made: bool) -> None:
        totals = self.counts.made if made else self.counts.reused
        totals[binding.kind] = totals.get(binding.kind, 0) + 1

    def _notify(self, event: str, binding: RoleBinding, call: ModelCall) -> None:
        method = self._hooks.get(event)
        if method is not None:
            method(binding.role, binding.label, call.stage)

    def _finished(self, binding: RoleBinding, call: ModelCall, completion: Completion, *, made: bool,
                  latency: float | None, empty: bool = False) -> None:
        if self._observer is not None:
            self._observer.finished(binding.role, binding.label, call.stage, completion,
                                    made=made, latency_s=latency, empty=empty)


@dataclass
class _Attempt:
    """The attempts of one call so far (transport retries of the lane included)."""

    started: float
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    last: Completion | None = None
    reason: str | None = None  # why the last reply is unusable
    handed: Completion | None = None  # set when the call is settled

    def add(self, completion: Completion, check: ReplyCheck | None) -> None:
        self.attempts += completion.attempts
        self.errors += completion.attempt_errors
        self.last = completion
        self.reason = check(completion.text or "") if check is not None and completion.ok else None


def _check_of(call: ModelCall) -> ReplyCheck | None:
    """The content check of a call: the task's, and for the model under test an empty reply."""
    if call.model != MODEL_ROLE:
        return call.check
    task_check = call.check
    if task_check is None:
        return empty_answer_check

    def both(text: str) -> str | None:
        return empty_answer_check(text) or task_check(text)

    return both


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
