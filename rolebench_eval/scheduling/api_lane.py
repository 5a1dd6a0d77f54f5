"""The lane of an OpenAI-compatible model: one or several endpoints (replicas) serving it.

A request waits in a priority heap until some replica may take it: the replica is not cooling
down, its controller (scheduling/concurrency.py) allows another request in flight and no
Retry-After pause holds it. Among those, the one with the most free capacity (limit - in flight)
gets it, which spreads the load by what each replica serves well. Lanes built with the same
`EndpointPool` (one per run) share the controller and in-flight count of an endpoint URL they
both send to: the model under test and a judge on one server are held to one limit together. One HTTP attempt is made at a
time per request; the endpoint only classifies its outcome (`AttemptOutcome`), the retry policy
is this module's, the same for every endpoint:

- ok: the completion, with every earlier attempt's error on its record;
- retry (429, 5xx, timeout, connection error, malformed reply): the replica's controller hears
  it, and the request is queued again after a backoff (Retry-After when given, else full jitter
  over 2**attempt seconds), bounded by `max_attempts` and `max_retry_time_s`; then it is a
  failed call naming the last error and the number of attempts;
- final (400 and friends): this request is wrong, a failed call at once;
- fatal (key rejected, model unknown): every request would fail, so the lane raises
  BackendError to every waiter.

A replica whose transport keeps failing (`failure_streak` connection errors, 5xx or timeouts in a
row, 429 excepted: a rate-limited server is alive) is taken out for a cool-down that doubles each
time, then tried again; its requests, as they fail, go back to the heap and on to another replica.
With a single endpoint there is nowhere else to go and the per-request backoff alone spaces the
retries.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.scheduling.concurrency import ConcurrencyController, ControllerSettings
from rolebench_eval.scheduling.endpoints import EndpointPool, EndpointState
from rolebench_eval.scheduling.lanes import Lane, Sink, resolve

OK, RETRY, FINAL, FATAL = "ok", "retry", "final", "fatal"
# Transport failures that say the replica itself is unwell (a 429 says it is alive but busy).
_UNWELL = ("server_error", "timeout", "connection")


@dataclass(frozen=True)
class AttemptOutcome:
    """What one HTTP attempt came to, as the endpoint classifies it."""

    kind: str  # OK | RETRY | FINAL | FATAL
    completion: Completion | None = None  # OK: the reply; FINAL: the failure
    failure: str | None = None  # RETRY: one of concurrency.FAILURE_KINDS
    error: str = ""  # RETRY: why, as recorded in attempt_errors
    retry_after_s: float | None = None  # RETRY: the server's Retry-After, when it said one
    exception: BackendError | None = None  # FATAL


class Endpoint(Protocol):
    """One replica: OpenAIBackend is one."""

    @property
    def name(self) -> str:
        """The endpoint for messages and snapshots (its URL, credentials redacted)."""

    def open_client(self) -> Any:
        """An HTTP client; called inside the running event loop."""

    async def close_client(self, client: Any) -> None: ...

    async def attempt(self, client: Any, request: ChatRequest) -> AttemptOutcome: ...


@dataclass(frozen=True)
class ApiLaneSettings:
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    pinned: int | None = None  # --concurrency N: N in flight per replica, not adapted
    max_attempts: int = 6
    max_retry_time_s: float = 600.0
    backoff_cap_s: float = 60.0  # longest jittered backoff between two attempts
    failure_streak: int = 3  # unwell failures in a row that take a replica out (>= 2 replicas)
    cooldown_s: float = 5.0  # first cool-down; doubles each time the replica is taken out again
    max_cooldown_s: float = 120.0

    @staticmethod
    def from_options(options: BackendOptions) -> ApiLaneSettings:
        cap = options.max_concurrency
        controller = ControllerSettings(initial=min(ControllerSettings().initial, cap), max_concurrency=cap)
        return ApiLaneSettings(
            controller=controller,
            pinned=options.concurrency,
            max_attempts=max(1, options.max_attempts),
            max_retry_time_s=options.max_retry_time_s,
        )

    def describe(self) -> dict[str, Any]:
        """The concurrency settings as recorded with a run."""
        if self.pinned is not None:
            return {"mode": "pinned", "concurrency": self.pinned}
        return {"mode": "adaptive", "initial": self.controller.initial,
                "max_concurrency": self.controller.max_concurrency}


@dataclass(order=True)
class _Item:
    priority: int
    order: int
    request: ChatRequest = field(compare=False)
    future: asyncio.Future[Completion] = field(compare=False)
    deadline: float = field(compare=False)
    attempts: int = field(default=0, compare=False)
    errors: list[str] = field(default_factory=list, compare=False)
    not_before: float = field(default=-math.inf, compare=False)
    failed_on: _Replica | None = field(default=None, compare=False)  # where the last attempt failed
    sink: Sink | None = field(default=None, compare=False)  # records the final completion at once
    # 429s that said when to come back (Retry-After): pacing by the server, not a fault of this
    # request, so they do not use up its attempts (the retry deadline still bounds them).
    paced: int = field(default=0, compare=False)


class _Replica:
    def __init__(self, endpoint: Endpoint, settings: ApiLaneSettings, clock: Callable[[], float],
                 pool: EndpointPool | None = None):
        self.endpoint = endpoint
        make = lambda: ConcurrencyController(settings.controller, pinned=settings.pinned, clock=clock)  # noqa: E731
        self.shared = pool.state(endpoint.name, make) if pool is not None else EndpointState(make())
        self.controller = self.shared.controller
        self.client: Any = None
        self.mine = 0  # in flight from this lane (the endpoint's total is shared.in_flight)
        self.streak = 0
        self.out_until = -math.inf
        self.taken_out = 0
        self.attempts = 0
        self.completed = 0

    # At the endpoint, from every lane that shares it.
    in_flight = property(lambda self: self.shared.in_flight)
    peak_in_flight = property(lambda self: self.shared.peak_in_flight)
    peak_limit = property(lambda self: self.shared.peak_limit)

    def free(self, now: float) -> int:
        """Requests it may start now (0 while cooling down or paused by Retry-After)."""
        if now < self.out_until or not self.controller.can_start(self.shared.in_flight):
            return 0
        return self.controller.limit - self.shared.in_flight

    def available_at(self) -> float:
        return max(self.out_until, self.controller.pause_until)


class ApiLane(Lane):
    def __init__(
        self,
        label: str,
        replicas: Sequence[Endpoint],
        settings: ApiLaneSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] | None = None,
        pool: EndpointPool | None = None,
    ):
        super().__init__(label)
        if not replicas:
            raise ValueError("an API lane needs at least one endpoint")
        self.settings = settings or ApiLaneSettings()
        self._clock = clock
        self._jitter = jitter or random.uniform
        self._replicas = [_Replica(r, self.settings, clock, pool) for r in replicas]
        for replica in self._replicas:
            if replica.shared.lanes:
                replica.controller.widen_start()
            replica.shared.lanes.append(self)
        self._ready: list[_Item] = []  # heap by (priority, order)
        self._delayed: list[tuple[float, int, _Item]] = []  # heap by not_before
        self._order = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._fatal: BackendError | None = None
        self._retried_attempts = 0

    # -- Lane API ------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest, priority: int = 0, sink: Sink | None = None) -> Completion:
        if self._fatal is not None:
            raise self._fatal
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        deadline = self._clock() + self.settings.max_retry_time_s
        heapq.heappush(self._ready, _Item(priority, next(self._order), request, future, deadline, sink=sink))
        self._poke()
        return await future

    def snapshot(self) -> dict[str, Any]:
        replicas = [
            {
                "endpoint": r.endpoint.name,
                "limit": r.controller.limit,
                "peak_limit": r.peak_limit,
                "in_flight": r.mine,
                "peak_in_flight": r.peak_in_flight,
                "attempts": r.attempts,
                "completed": r.completed,
                "out": self._clock() < r.out_until,
                "taken_out": r.taken_out,
                "limit_decreases": r.controller.decreases,
                "failures": dict(r.controller.failures),
                "paced": r.controller.snapshot()["pace_s"] is not None,  # by Retry-After 429s
                **({"shared_by_lanes": len(r.shared.lanes)} if len(r.shared.lanes) > 1 else {}),
            }
            for r in self._replicas
        ]
        return {
            "queued": len(self._ready) + len(self._delayed),
            "in_flight": sum(r.mine for r in self._replicas),
            "limit": sum(r.controller.limit for r in self._replicas),
            "concurrency": self.settings.describe(),
            "retried_attempts": self._retried_attempts,
            "replicas": replicas,
        }

    async def aclose(self) -> None:
        for task in [*self._tasks, *([self._dispatcher] if self._dispatcher else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._dispatcher] if self._dispatcher else []),
                             return_exceptions=True)
        self._fail_waiting(BackendError(f"{self.label}: lane closed with requests pending"))
        for replica in self._replicas:
            if replica.client is not None:
                client, replica.client = replica.client, None
                await replica.endpoint.close_client(client)

    # -- dispatching ---------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while self._ready or self._delayed or self._tasks:
            self._wake.clear()
            now = self._clock()
            while self._delayed and self._delayed[0][0] <= now:
                heapq.heappush(self._ready, heapq.heappop(self._delayed)[2])
            skipped: list[_Item] = []
            while self._ready and any(r.free(now) > 0 for r in self._replicas):
                item = heapq.heappop(self._ready)
                candidates = self._candidates(item, now)
                replica = max(candidates, key=lambda r: r.free(now))  # the most free capacity
                if replica.free(now) > 0:
                    self._start(replica, item)
                else:
                    skipped.append(item)  # waits for room where it may go; others go on
            for item in skipped:
                heapq.heappush(self._ready, item)
            wake_at = [t for t, _, _ in self._delayed[:1]]
            if self._ready:  # waiting for a pause or a cool-down to end, or for a free slot
                wake_at += [r.available_at() for r in self._replicas if r.available_at() > now]
            timeout = max(0.0, min(wake_at) - now) if wake_at else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _candidates(self, item: _Item, now: float) -> list[_Replica]:
        """Where `item` may go: a retry goes to another replica than the one that just failed
        it, unless every other replica is cooling down."""
        others = [r for r in self._replicas if r is not item.failed_on and now >= r.out_until]
        return others if item.failed_on is not None and others else self._replicas

    def _start(self, replica: _Replica, item: _Item) -> None:
        if replica.client is None:
            replica.client = replica.endpoint.open_client()  # inside the running loop
        item.attempts += 1
        replica.attempts += 1
        shared = replica.shared
        shared.in_flight += 1
        replica.mine += 1
        shared.peak_in_flight = max(shared.peak_in_flight, shared.in_flight)
        ticket = replica.controller.on_start()
        task = asyncio.create_task(self._attempt(replica, item, ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, replica: _Replica, item: _Item, ticket: int) -> None:
        started = self._clock()
        try:
            outcome = await replica.endpoint.attempt(replica.client, item.request)
        except Exception as exc:  # an endpoint bug must not hang its waiters
            outcome = AttemptOutcome(RETRY, failure="connection", error=f"unexpected error: {exc!r}")
        finally:
            replica.shared.in_flight -= 1
            replica.mine -= 1
        now = self._clock()
        try:
            self._settle(replica, item, outcome, now - started, now, ticket)
        finally:
            shared = replica.shared
            shared.peak_limit = max(shared.peak_limit, replica.controller.limit)
            # Leave the set before waking the dispatcher: it stops when nothing is in flight.
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._poke()
            for other in shared.lanes:  # a slot freed at a shared endpoint: its other lanes may go
                if other is not self and (other._ready or other._delayed):
                    other._poke()

    def _settle(self, replica: _Replica, item: _Item, outcome: AttemptOutcome, latency: float, now: float,
                ticket: int | None = None) -> None:
        if outcome.kind == FATAL and self._fatal is None:
            replica.controller.on_success(latency, 0, ticket)  # the server answered; nothing to adapt
            self._fatal = outcome.exception or BackendError(f"{self.label}: {outcome.error}")
            self._fail_waiting(self._fatal)
        if self._fatal is not None:  # this one or an earlier attempt found the backend unusable
            if not item.future.done():
                item.future.set_exception(self._fatal)
            return
        if outcome.kind in (OK, FINAL):
            completion = outcome.completion or Completion.failure(outcome.error or "no reply")
            tokens = (completion.usage.completion_tokens or 0) if outcome.kind == OK else 0
            # A 400 is an answer of a healthy server: it frees the slot like a success.
            replica.controller.on_success(latency, tokens, ticket)
            replica.streak = 0
            replica.completed += 1
            self._resolve(item, replace(completion, attempts=item.attempts, attempt_errors=tuple(item.errors)))
            return
        failure = outcome.failure or "connection"
        replica.controller.on_failure(failure, outcome.retry_after_s)
        self._note_unwell(replica, failure, now)
        if item.future.done():
            return
        if failure == "rate_limited" and outcome.retry_after_s is not None:
            item.paced += 1
        give_up = item.attempts - item.paced >= self.settings.max_attempts
        if not give_up:
            if outcome.retry_after_s is not None:
                # The replica's controller holds its starts until then; another replica may
                # take the request sooner.
                item.not_before = now
            else:
                item.not_before = now + self._jitter(0, min(self.settings.backoff_cap_s, 2.0**item.attempts))
            earliest = max(item.not_before, min(r.available_at() for r in self._replicas))
            give_up = earliest > item.deadline
        if give_up:
            failed = Completion.failure(f"{outcome.error} (gave up after {item.attempts} attempt(s))")
            self._resolve(item, replace(failed, attempts=item.attempts, attempt_errors=tuple(item.errors)))
            return
        item.errors.append(outcome.error)
        item.failed_on = replica
        self._retried_attempts += 1
        heapq.heappush(self._delayed, (item.not_before, item.order, item))

    def _note_unwell(self, replica: _Replica, failure: str, now: float) -> None:
        if failure not in _UNWELL:
            return
        replica.streak += 1
        if len(self._replicas) < 2 or replica.streak < self.settings.failure_streak:
            return
        cooldown = min(self.settings.max_cooldown_s, self.settings.cooldown_s * 2.0**replica.taken_out)
        replica.out_until = now + cooldown
        replica.taken_out += 1
        replica.streak = 0  # after the cool-down it gets a fresh streak: one probe may bring it back

    def _resolve(self, item: _Item, completion: Completion) -> None:
        resolve(item.future, completion, item.sink)

    def _fail_waiting(self, exc: BaseException) -> None:
        for item in [*self._ready, *(entry[2] for entry in self._delayed)]:
            if not item.future.done():
                item.future.set_exception(exc)
        self._ready.clear()
        self._delayed.clear()
