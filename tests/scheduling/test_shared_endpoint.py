"""Lanes of one run that send to the same endpoint (URL) share its concurrency controller.

The model under test and the judge on one server are two lanes; with a pool they are held to one
limit together, a Retry-After 429 heard by either pauses both, and a slot freed by one lets the
other go. In-process endpoints (no HTTP); assertions on counts, never on durations.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.requests import Completion, Usage
from rolebench_eval.scheduling.api_lane import OK, RETRY, ApiLane, ApiLaneSettings, AttemptOutcome, EndpointPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_api_lane import FakeEndpoint, no_jitter, request  # noqa: E402


def run_two(model: ApiLane, judge: ApiLane, n: int) -> tuple[list[Completion], dict, dict]:
    async def go() -> tuple[list[Completion], dict, dict]:
        try:
            done = await asyncio.gather(*(model.complete(request(f"m{i}")) for i in range(n)),
                                        *(judge.complete(request(f"j{i}")) for i in range(n)))
            return list(done), model.snapshot(), judge.snapshot()
        finally:
            await model.aclose()
            await judge.aclose()

    return asyncio.run(go())


def test_two_lanes_on_one_endpoint_share_its_pinned_limit() -> None:
    server = FakeEndpoint("http://127.0.0.1:1/v1", latency=0.01)  # one server, two models' lanes
    settings = ApiLaneSettings.from_options(BackendOptions(concurrency=4))
    pool = EndpointPool()
    done, model, judge = run_two(ApiLane("model", [server], settings, pool=pool),
                                 ApiLane("judge", [server], settings, pool=pool), 20)
    assert all(c.ok for c in done) and len(done) == 40
    assert server.max_in_flight == 4  # not 4 per lane (8)
    assert model["replicas"][0]["shared_by_lanes"] == 2 and judge["replicas"][0]["shared_by_lanes"] == 2
    assert model["replicas"][0]["completed"] == 20 and judge["replicas"][0]["completed"] == 20


def test_without_a_pool_each_lane_has_its_own_limit() -> None:
    server = FakeEndpoint("http://127.0.0.1:1/v1", latency=0.01)
    settings = ApiLaneSettings.from_options(BackendOptions(concurrency=4))
    done, model, _ = run_two(ApiLane("model", [server], settings), ApiLane("judge", [server], settings), 20)
    assert all(c.ok for c in done)
    assert server.max_in_flight == 8 and "shared_by_lanes" not in model["replicas"][0]


def test_retry_after_heard_by_one_lane_pauses_the_other() -> None:
    # The judge's first request gets 429 with Retry-After 0.3 s; every later attempt succeeds.
    # Sharing the controller, no model request may start during the pause.
    events: list[tuple[str, float]] = []
    loop_time = lambda: asyncio.get_running_loop().time()  # noqa: E731

    def reply(req, attempt: int) -> AttemptOutcome:
        text = req.messages[-1].content
        if text == "j0" and attempt == 1:
            events.append(("429", loop_time()))
            return AttemptOutcome(RETRY, failure="rate_limited", error="HTTP 429", retry_after_s=0.3)
        return AttemptOutcome(OK, completion=Completion(text=text, usage=Usage(1, 1)))

    server = FakeEndpoint("http://127.0.0.1:1/v1", reply, latency=0.005)
    settings = ApiLaneSettings(max_attempts=5, pinned=1)
    pool = EndpointPool()
    model = ApiLane("model", [server], settings, pool=pool, jitter=no_jitter)
    judge = ApiLane("judge", [server], settings, pool=pool, jitter=no_jitter)

    async def go() -> list[Completion]:
        async def judged() -> Completion:
            return await judge.complete(request("j0"))

        async def modelled(i: int) -> Completion:
            await asyncio.sleep(0.05)  # after the 429
            completion = await model.complete(request(f"m{i}"))
            events.append(("model done", loop_time()))
            return completion

        try:
            return list(await asyncio.gather(judged(), *(modelled(i) for i in range(3))))
        finally:
            await model.aclose()
            await judge.aclose()

    done = asyncio.run(go())
    assert all(c.ok for c in done)
    paused_at = next(t for kind, t in events if kind == "429")
    model_done = [t for kind, t in events if kind == "model done"]
    assert len(model_done) == 3 and min(model_done) >= paused_at + 0.3  # held by the judge's pause
    assert server.tries["j0"] == 2


def test_a_second_lane_on_a_shared_endpoint_widens_the_start_before_anything_is_measured() -> None:
    # Two lanes of their own each started at `initial`; sharing one controller they start at the
    # same total, so a short run does not spend its time ramping up from half of it.
    server = FakeEndpoint("http://127.0.0.1:1/v1")
    pool = EndpointPool()
    settings = ApiLaneSettings.from_options(BackendOptions(max_concurrency=256))
    model = ApiLane("model", [server], settings, pool=pool)
    assert model.snapshot()["limit"] == 32
    judge = ApiLane("judge", [server], settings, pool=pool)
    assert model.snapshot()["limit"] == judge.snapshot()["limit"] == 64
    pinned = ApiLaneSettings.from_options(BackendOptions(concurrency=8))
    pool = EndpointPool()
    ApiLane("model", [server], pinned, pool=pool)
    assert ApiLane("judge", [server], pinned, pool=pool).snapshot()["limit"] == 8  # a pin stays a pin
