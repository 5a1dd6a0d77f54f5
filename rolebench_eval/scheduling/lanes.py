"""Lanes: where the calls to one model go. The scheduler owns one lane per model identity.

A lane answers one request at a time from the scheduler's point of view (`complete`), and decides
itself how requests reach its backend: a local engine (transformers, vLLM, lm-eval) takes
everything that is ready as one batch, an endpoint keeps as many requests in flight as it serves
well. Transport faults (429, 5xx, timeouts, dropped connections) are the lane's to retry; what a
reply *says* (empty, unusable) is the scheduler's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from rolebench_eval.backends.base import Backend
from rolebench_eval.requests import ChatRequest, Completion


Sink = Callable[[Completion], None]


class Lane(ABC):
    """The calls of one model identity (it may serve several roles: judge and examples model)."""

    def __init__(self, label: str):
        self.label = label

    @abstractmethod
    async def complete(self, request: ChatRequest, priority: int = 0, sink: Sink | None = None) -> Completion:
        """The final completion of `request` after the lane's transport retries, with
        `attempts`/`attempt_errors` recorded. A failure of this request is returned as
        `Completion.failure(...)`; only a failure of the whole backend raises (BackendError).
        Lower `priority` values go first (the scheduler passes minus the job's depth, so a job
        close to its end is finished before new jobs start). `sink`, when given, is called with
        the final completion, synchronously in the event loop, the moment it arrives and before
        the caller resumes: the scheduler records it there, so a run interrupted (Ctrl-C cancels
        every waiting caller) keeps every call that finished."""

    def snapshot(self) -> dict[str, Any]:
        """What the lane is doing now (for progress): queued, in flight, limit."""
        return {}

    async def aclose(self) -> None:
        """Release the backend (model memory, HTTP clients)."""


class LazyLane(Lane):
    """A lane built on its first call: a run whose calls are all stored opens no backend (no
    model load, no connection)."""

    def __init__(self, label: str, make: Callable[[], Lane]):
        super().__init__(label)
        self._make = make
        self._lane: Lane | None = None
        self._building: asyncio.Lock | None = None

    async def complete(self, request: ChatRequest, priority: int = 0, sink: Sink | None = None) -> Completion:
        if self._lane is None:
            self._building = self._building or asyncio.Lock()
            async with self._building:
                if self._lane is None:
                    self._lane = await asyncio.to_thread(self._make)
        return await self._lane.complete(request, priority, sink)

    def snapshot(self) -> dict[str, Any]:
        return self._lane.snapshot() if self._lane is not None else {}

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()


class DeviceToken:
    """One local engine at a time (GPU memory), as when the generator was closed before the judges
    started: a local lane holds the token while it works; a lane that needs it waits until the
    holder is idle (nothing queued, nothing running), then the holder's engine is closed and the
    token changes hands. With a single local lane it is never contended and the engine stays up."""

    def __init__(self) -> None:
        self._holder: BatchLane | None = None
        self._waiting = 0
        self._changed = asyncio.Condition()

    async def acquire(self, lane: BatchLane) -> None:
        async with self._changed:
            self._waiting += 1
            try:
                while self._holder is not None and self._holder is not lane:
                    holder = self._holder
                    if holder.idle:
                        await holder.aclose()
                        self._holder = None
                        break
                    await self._changed.wait()
            finally:
                self._waiting -= 1
            self._holder = lane

    @property
    def contended(self) -> bool:
        return self._waiting > 0

    async def notify(self) -> None:
        """A lane went idle: waiters may take the token."""
        async with self._changed:
            self._changed.notify_all()


class BatchLane(Lane):
    """A local engine: every request that is ready goes to `backend.generate` as one batch (vLLM
    and transformers schedule it themselves); requests arriving meanwhile form the next batch.
    The backend is built on first use (`open_backend`) and run in a worker thread, so endpoints
    and other lanes keep going while it computes."""

    def __init__(
        self,
        label: str,
        open_backend: Callable[[], Backend],
        device: DeviceToken | None = None,
        max_batch: int | None = None,
    ):
        super().__init__(label)
        self._open_backend = open_backend
        self._backend: Backend | None = None
        self._device = device
        self._max_batch = max_batch
        self._queue: list[tuple[int, int, ChatRequest, asyncio.Future[Completion], Sink | None]] = []
        self._order = itertools.count()
        self._worker: asyncio.Task[None] | None = None
        self._running = 0
        self._batches = self._largest = self._requests = 0

    async def complete(self, request: ChatRequest, priority: int = 0, sink: Sink | None = None) -> Completion:
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._order), request, future, sink))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    def snapshot(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "in_flight": self._running, "engine_batches": self._batches,
                "largest_batch": self._largest, "requests": self._requests}

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._device is not None:
                await self._device.acquire(self)
            # Everything ready now is one batch: the engine batches better than we can.
            size = len(self._queue) if self._max_batch is None else min(self._max_batch, len(self._queue))
            batch = [heapq.heappop(self._queue) for _ in range(size)]
            requests = [item[2] for item in batch]
            futures = [item[3] for item in batch]
            sinks = [item[4] for item in batch]

            def on_result(index: int, completion: Completion, futures: Sequence[asyncio.Future[Completion]] = futures,
                          sinks: Sequence[Sink | None] = sinks) -> None:
                loop.call_soon_threadsafe(resolve, futures[index], completion, sinks[index])

            self._running = len(batch)
            self._batches += 1
            self._largest = max(self._largest, len(batch))
            self._requests += len(batch)
            try:
                backend = self._backend or await asyncio.to_thread(self._open_backend)
                self._backend = backend
                await asyncio.to_thread(backend.generate, requests, on_result)
            except BaseException as exc:  # a failure of the whole backend: every waiter hears it
                for _, _, _, waiting, _ in [*batch, *self._queue]:
                    if not waiting.done():
                        waiting.set_exception(exc)
                self._queue.clear()
                return
            finally:
                self._running = 0
            await asyncio.sleep(0)  # let the callbacks posted by the worker thread run
            for future, sink in zip(futures, sinks):
                if not future.done():  # a backend that forgot a request must not hang the run
                    resolve(future, Completion.failure("backend returned no result for this request"), sink)
        if self._device is not None and self._device.contended:
            await self._device.notify()

    @property
    def idle(self) -> bool:
        return not self._queue and self._running == 0

    async def aclose(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await asyncio.to_thread(backend.close)


def resolve(future: asyncio.Future[Completion], completion: Completion, sink: Sink | None) -> None:
    """Hand a final completion to its sink (recorded even if the caller was cancelled), then to
    the waiting caller."""
    if sink is not None:
        try:
            sink(completion)
        except BaseException as exc:  # e.g. the disk is full: the caller must hear it, not hang
            if not future.done():
                future.set_exception(exc)
            return
    if not future.done():
        future.set_result(completion)
