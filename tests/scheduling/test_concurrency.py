"""The adaptive concurrency controller, driven by simulated endpoints on a simulated clock."""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

import pytest

from rolebench_eval.scheduling.concurrency import ConcurrencyController, ControllerSettings
from rolebench_eval.scheduling.slow_start import RoundStats, StartLog


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Trace:
    tokens: list[tuple[float, int]]  # (completion time, tokens)
    limits: list[tuple[float, int]]  # (time, limit)
    failures: int = 0
    requests: int = 0

    def throughput(self, start: float, end: float) -> float:
        return sum(n for t, n in self.tokens if start <= t < end) / (end - start)

    def mean_limit(self, start: float, end: float) -> float:
        values = [limit for t, limit in self.limits if start <= t < end]
        return sum(values) / len(values)


def run_batching_server(controller: ConcurrencyController, clock: Clock, *, slots: int, gain: float,
                        step_s: float, duration_s: float, seed: int = 0, demand: int | None = None) -> Trace:
    """A continuous-batching server with unlimited work offered (or at most `demand` requests
    at a time): `slots` sequences run, more queue; a step gives each running sequence a token and
    costs step_s * (1 + alpha (batch-1)). Throughput rises with the batch up to `slots` (the
    knee) and is flat beyond."""
    alpha = (slots / gain - 1) / (slots - 1)
    rng = random.Random(seed)
    waiting: deque[list[float]] = deque()
    running: list[list[float]] = []
    trace = Trace([], [])
    in_flight = 0
    while clock.t < duration_s:
        while controller.can_start(in_flight) and (demand is None or in_flight < demand):
            ticket = controller.on_start()
            tokens = rng.randint(20, 60)
            waiting.append([tokens, clock.t, tokens, ticket])
            in_flight += 1
            trace.requests += 1
        while waiting and len(running) < slots:
            running.append(waiting.popleft())
        trace.limits.append((clock.t, controller.limit))
        if not running:
            clock.t += step_s
            continue
        clock.t += step_s * (1 + alpha * (len(running) - 1))
        still = []
        for seq in running:
            seq[0] -= 1
            if seq[0] <= 0:
                in_flight -= 1
                controller.on_success(clock.t - seq[1], int(seq[2]), seq[3])
                trace.tokens.append((clock.t, int(seq[2])))
            else:
                still.append(seq)
        running = still
    return trace


def run_rate_limited_api(controller: ConcurrencyController, clock: Clock, *, rate: float, latency_s: float,
                         duration_s: float, tick_s: float = 0.01) -> Trace:
    """An API with a fixed latency and a requests-per-second limit (a token bucket with one second
    of burst): a request beyond it gets 429 at once, with Retry-After until the next token.
    A 429 is retried later (the work is not lost), so it is a failed attempt, not a failed call."""
    trace = Trace([], [])
    level = rate
    ends: list[tuple[float, int]] = []  # (reply time, ticket)
    while clock.t < duration_s:
        while ends and ends[0][0] <= clock.t:
            _, ticket = heapq.heappop(ends)
            controller.on_success(latency_s, 50, ticket)
            trace.tokens.append((clock.t, 50))
        level = min(rate, level + tick_s * rate)
        while controller.can_start(len(ends)):
            ticket = controller.on_start()
            trace.requests += 1
            if level >= 1.0:
                level -= 1.0
                heapq.heappush(ends, (clock.t + latency_s, ticket))
            else:
                trace.failures += 1
                controller.on_failure("rate_limited", retry_after_s=(1.0 - level) / rate)
        trace.limits.append((clock.t, controller.limit))
        clock.t += tick_s
    return trace


def test_finds_the_knee_of_a_batching_server() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=256), clock=clock)
    slots, gain, step_s = 32, 8.0, 0.005
    trace = run_batching_server(controller, clock, slots=slots, gain=gain, step_s=step_s, duration_s=120)
    peak = gain / step_s
    assert trace.limits[0][1] == 4  # started low
    assert trace.throughput(60, 120) >= 0.9 * peak
    # Not beyond the knee for long: past it requests only queue (latency rises, throughput flat).
    assert slots * 0.75 <= trace.mean_limit(60, 120) <= slots * 1.5
    assert controller.limit < 2 * slots


def test_finds_a_bigger_server_from_the_same_start() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=512), clock=clock)
    trace = run_batching_server(controller, clock, slots=128, gain=40.0, step_s=0.002, duration_s=120)
    assert trace.throughput(60, 120) >= 0.9 * 40.0 / 0.002
    assert trace.mean_limit(60, 120) <= 128 * 1.5


def test_slow_start_doubles_per_short_round_not_per_long_window() -> None:
    # From 4 to a 128-slot server's knee is five doublings. The earlier slow start doubled once
    # per window of two mean latencies after a warm-up of one (~3 latencies per doubling): it
    # reached 128 after 2.85 s here and made 37% of the peak over the first 3 s. Rounds that end
    # after the quickest eighth of their replies (slow_start.py) take about one.
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=512), clock=clock)
    trace = run_batching_server(controller, clock, slots=128, gain=40.0, step_s=0.002, duration_s=20)
    reached = next(t for t, limit in trace.limits if limit >= 128)
    latency_at_knee = 40 * 0.002 * (1 + (128 / 40 - 1) / 127 * 127)  # mean tokens x step at 128
    assert reached <= 1.5 and reached <= 6 * latency_at_knee, reached
    assert trace.throughput(0, 3) >= 0.7 * 40.0 / 0.002
    assert max(limit for _, limit in trace.limits) <= 256  # one doubling past the knee at most


def test_slow_start_from_above_the_knee_comes_back_to_it() -> None:
    # Started above the knee (64 on 32 slots), the first doubling buys nothing: slow start ends
    # at where it started, and the probe settles near the knee instead of queueing at the cap.
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=64, max_concurrency=256), clock=clock)
    trace = run_batching_server(controller, clock, slots=32, gain=8.0, step_s=0.005, duration_s=120)
    assert max(limit for _, limit in trace.limits) == 128
    assert trace.mean_limit(60, 120) <= 1.5 * 32
    assert trace.throughput(60, 120) >= 0.9 * 8.0 / 0.005


def test_slow_start_does_not_double_what_the_caller_does_not_use() -> None:
    # At most 10 requests offered at a time: a doubling past what the caller fills is taken back,
    # so the limit never runs far ahead of the use (when more work comes, it has not measured it).
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=256), clock=clock)
    trace = run_batching_server(controller, clock, slots=256, gain=62.0, step_s=0.001, duration_s=20,
                                demand=10)
    assert max(limit for _, limit in trace.limits) <= 20
    assert 8 <= controller.limit <= 20


def test_a_failure_in_slow_start_cuts_the_limit_and_ends_the_doubling() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=32, max_concurrency=256), clock=clock)
    for _ in range(32):
        controller.on_start()
    controller.on_success(0.1, 50)
    controller.on_failure("server_error")  # no Retry-After: too much load
    assert controller.limit == 22 and controller.decreases == 1
    # Then a fast server below its knee: no more doubling; the limit stays under the ceiling the
    # failure left (31) until that ceiling rises (`ceiling_windows` windows later).
    trace = run_batching_server(controller, clock, slots=256, gain=62.0, step_s=0.001, duration_s=5)
    assert max(limit for _, limit in trace.limits) <= 31


def test_doubling_stops_at_the_cap_even_between_powers_of_two() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=48), clock=clock)
    trace = run_batching_server(controller, clock, slots=256, gain=62.0, step_s=0.001, duration_s=20)
    assert sorted({limit for _, limit in trace.limits}) == [4, 8, 16, 32, 48]
    assert controller.limit == 48


def test_a_reply_counts_at_the_number_in_flight_when_it_was_sent() -> None:
    # A burst of five in one dispatch (no reply between the starts) counts as five for each of
    # them, by ticket or, for a caller that passes no ticket, by send time.
    log = StartLog()
    tickets = [log.record(0.0, n) for n in range(1, 6)]
    log.reply()
    refill = log.record(0.5, 5)  # a reply freed a slot: a start of its own, at 5 in flight
    assert tickets == [0, 1, 2, 3, 4] and refill == 5 and log.issued == 6
    assert [log.sent_with(t) for t in tickets] == [5] * 5 and log.sent_with(refill) == 5
    assert log.ticket_at(0.2) == 4 and log.ticket_at(0.7) == 5 and log.ticket_at(-1.0) is None
    assert log.sent_with(None) is None and log.sent_with(6) is None
    stats = RoundStats()
    stats.add(8, 100, 0.5)  # 8 in flight, 100 tokens in 0.5 s: 1,600 tokens/s for all 8
    stats.add(8, 50, 0.25)
    assert stats.throughput() == pytest.approx(1600.0) and stats.in_flight() == pytest.approx(8.0)


def test_stays_at_the_cap_below_the_knee() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4, max_concurrency=16), clock=clock)
    run_batching_server(controller, clock, slots=64, gain=13.6, step_s=0.002, duration_s=60)
    assert controller.limit == 16


def test_converges_near_a_rate_limit_with_few_rejections() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=4), clock=clock)
    rate, latency = 23.0, 0.5  # the limit allows 11.5 requests in flight
    trace = run_rate_limited_api(controller, clock, rate=rate, latency_s=latency, duration_s=300)
    assert trace.throughput(150, 300) >= 0.9 * rate * 50
    assert trace.failures <= 0.02 * trace.requests  # 429s answered (and retried): few
    # A 429 with Retry-After paces the starts at the rate the API allowed (about 1 / 23 s apart)
    # instead of cutting the limit: requests in flight follow from the pace (rate x latency, 11.5),
    # and the limit leaves room for them.
    pace = controller.snapshot()["pace_s"]
    assert pace is not None and 0.6 / rate <= pace <= 1.2 / rate, pace  # measured, or probing below
    assert trace.mean_limit(150, 300) >= rate * latency


def test_backs_off_once_per_burst_of_failures_and_honours_retry_after() -> None:
    clock = Clock()
    controller = ConcurrencyController(ControllerSettings(initial=20, backoff=0.5), clock=clock)
    for _ in range(20):
        controller.on_start()
    controller.on_success(2.0, 10)
    for kind in ("server_error", "timeout", "connection"):
        controller.on_failure(kind)  # the in-flight requests failing together: one signal
    assert controller.limit == 10
    assert controller.decreases == 1
    clock.t = 2.5  # one mean latency later a new failure counts again
    controller.on_failure("rate_limited")  # a 429 without Retry-After: too much load, cut
    assert controller.limit == 5
    clock.t = 5.0
    controller.on_failure("rate_limited", retry_after_s=0.5)  # metered: a pause, not a cut
    assert controller.limit == 5 and controller.decreases == 2
    assert controller.pause_until == pytest.approx(5.5)
    assert not controller.can_start(0)
    clock.t = 5.5
    assert controller.can_start(4) and not controller.can_start(5)
    assert controller.snapshot()["failures"] == {
        "rate_limited": 2, "server_error": 1, "timeout": 1, "connection": 1}


def test_pinned_limit_never_moves_but_pauses() -> None:
    clock = Clock()
    controller = ConcurrencyController(pinned=64, clock=clock)
    trace = run_batching_server(controller, clock, slots=8, gain=4.0, step_s=0.002, duration_s=10)
    assert {limit for _, limit in trace.limits} == {64}
    controller.on_failure("rate_limited", retry_after_s=1.0)
    assert controller.limit == 64 and not controller.can_start(0)
    clock.t += 1.0
    assert controller.can_start(63)


def test_bad_settings_and_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial concurrency 300"):
        ControllerSettings(initial=300, max_concurrency=256)
    with pytest.raises(ValueError, match="backoff"):
        ControllerSettings(backoff=1.5)
    with pytest.raises(ValueError, match="unknown failure kind"):
        ConcurrencyController().on_failure("oops")
