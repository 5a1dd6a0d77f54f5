"""Adaptive concurrency per endpoint: how many requests to keep in flight.

Pure logic (no I/O, an injectable clock), driven by the caller: `on_start()` when a request
goes out (it returns the start's ticket), `on_success(latency_s, tokens, ticket)` or
`on_failure(kind, retry_after_s)` when it ends, and `can_start(in_flight)` before sending the next
one. Without the ticket a reply is matched to its start by time (less exact within one dispatch).

How the limit moves (a hill climb on measured throughput, with AIMD on failures):

- Throughput is measured in windows: Little's law over the window's replies (in flight when
  each was sent x its tokens, over the sum of latencies; slow_start.RoundStats; tokens per second
  of the clock when no latency was measured), a window lasting at least
  `window_s` and two mean latencies and at least 2 x `limit` completions, and starting (after a
  change of the limit) when the first request sent after the change comes back: earlier
  completions carry tokens made at the old limit. A window in which the caller never filled the limit ("app-limited")
  teaches nothing about the endpoint and moves nothing.
- Slow start (scheduling/slow_start.py): from `initial`, double while each doubling raises
  throughput by at least `min_gain`, measured in short rounds rather than windows: a round
  closes after the quickest eighth of its replies (at least 8), throughput estimated by Little's
  law from the number in flight each reply was sent with, so a doubling takes about one mean
  latency instead of ~3 (a warm-up and a window of two). A batching server's throughput
  rises with the batch until its slots are full, then stays flat while latency grows (requests
  queue): the doubling that gains nothing marks the knee, and slow start ends at the limit
  before it (then the probe below). Windows after slow start use the same estimate.
- Then probe: raise by `probe_step` (a fraction of the limit) when a window gains at least
  `min_gain` (or climbs back to within `min_gain` of the best lately measured); a raise that
  gains nothing is rising latency without throughput, so the limit goes back to where it was,
  holds for `hold_windows` windows, and then walks down by the same steps while throughput stays
  within `min_gain` of the best lately measured (the same throughput with fewer requests
  queued), back up one step when it falls. The limit thus circles the knee
  instead of drifting up on noisy windows.
- A 429, a 5xx, a timeout or a connection error multiplies the limit by `backoff` (once per
  mean latency: the requests already in flight fail together and are one signal), remembers the
  limit that failed as a ceiling (probes stay below it; it rises one step every
  `ceiling_windows` windows; this is what keeps a rate-limited API near its limit without a
  sawtooth of failures) and honours
  `Retry-After` by pausing every start until then.
- A 429 *with* `Retry-After` is the server metering a rate, not a sign of too many requests in
  flight: cutting the limit for it left a rate-limited endpoint under-used (bench/README.md: 84-89%
  of the allowed rate), because requests of very different lengths need many in flight to keep a
  rate. Instead the starts are paced: the pause until Retry-After, then one start per
  `1 / rate`, the rate being the starts the endpoint accepted (starts less 429s) per second over
  the last `rate_window_s` when the 429 came, held for `pace_hold_s`, then the interval
  shrinking by `pace_decay` per success, so the rate probes upwards until the next 429 measures
  it again. The limit itself is
  left to the throughput windows.
- The limit never leaves [`min_concurrency`, `max_concurrency`]. Pinned mode (`--concurrency
  N`) fixes the limit; only `Retry-After` pauses still apply.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rolebench_eval.scheduling.slow_start import RoundStats, SlowStart, StartLog

FAILURE_KINDS = ("rate_limited", "server_error", "timeout", "connection")


@dataclass(frozen=True)
class ControllerSettings:
    # Where it starts: a short run spends much of its time ramping up (bench/README.md: from 4, a
    # 64-slot server ran at 71% of its peak over a 32-persona run; from 32, 95%); a rate limit
    # below it costs a few 429s, and the first back-off brings it down.
    initial: int = 32
    max_concurrency: int = 256
    min_concurrency: int = 1
    window_s: float = 0.5  # shortest measuring window (seconds of the clock)
    # Relative throughput gain that counts as "rising": above the noise of a window (tokens
    # arrive in lumps of one request's length), below the gain of a doubling under the knee.
    min_gain: float = 0.05
    probe_step: float = 0.25  # probe, as a fraction of the limit (at least 1)
    backoff: float = 0.7  # multiplicative decrease on a failure
    hold_windows: int = 3  # windows to hold the best limit after a probe that gained nothing
    ceiling_windows: int = 60  # windows before the ceiling left by a failure rises one step
    rate_window_s: float = 2.0  # successes over this long measure an allowed rate (pacing)
    pace_decay: float = 0.995  # per success while paced: the start interval shrinks (rate probes up)
    pace_hold_s: float = 3.0  # after a paced 429, hold the measured rate this long before probing

    def __post_init__(self) -> None:
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError(
                f"need 1 <= min_concurrency ({self.min_concurrency}) <= max_concurrency "
                f"({self.max_concurrency})"
            )
        if not self.min_concurrency <= self.initial <= self.max_concurrency:
            raise ValueError(
                f"initial concurrency {self.initial} outside [{self.min_concurrency}, "
                f"{self.max_concurrency}]"
            )
        if not 0.0 < self.backoff < 1.0:
            raise ValueError(f"backoff must lie in (0, 1), got {self.backoff}")
        if self.window_s <= 0 or self.min_gain < 0 or self.probe_step <= 0:
            raise ValueError("window_s and probe_step must be > 0, min_gain >= 0")


class ConcurrencyController:
    def __init__(
        self,
        settings: ControllerSettings | None = None,
        *,
        pinned: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings or ControllerSettings()
        if pinned is not None and pinned < 1:
            raise ValueError(f"pinned concurrency must be >= 1, got {pinned}")
        self.pinned = pinned
        self._clock = clock
        self._limit = pinned if pinned is not None else self.settings.initial
        self._pause_until = -math.inf
        self._in_flight = 0
        self._previous: tuple[float, int] | None = None  # last window's (throughput, limit)
        self._hold = 0
        self._down_next = False  # a probe up gained nothing: try fewer in flight next
        self._walking_down = False
        # The best throughput measured lately (decaying by 0.2% a window): a walk down stops when it
        # falls below it, not below where the walk started, which let each walk ratchet the
        # limit one step further down the knee (each starting from the last walk's loss).
        self._best = 0.0
        self._ceiling: int | None = None
        self._ceiling_left = 0
        self._latency: float | None = None  # moving mean of request latency
        # Times of recent starts and of recent 429s with Retry-After: starts minus refusals over
        # the last `rate_window_s` is the rate the endpoint accepted (a 429 comes back at once,
        # a success only after its latency, so successes would lag the rate).
        self._starts: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._pace_s = 0.0  # seconds between two starts while paced; 0: not paced
        self._next_start = -math.inf
        self._pace_hold_until = -math.inf
        self._last_pace_cut = -math.inf
        self._started_at = self._clock()
        self.paced_429s = 0
        self._last_decrease = -math.inf
        self.decreases = 0
        self.failures: dict[str, int] = {kind: 0 for kind in FAILURE_KINDS}
        self._sent = StartLog()  # when requests went out, with how many in flight
        self._new_window(self._clock())
        # Slow start (scheduling/slow_start.py) until it finds the knee or a failure ends it.
        self._slow: SlowStart | None = None
        if pinned is None:
            s = self.settings
            self._slow = SlowStart(self._limit, self._sent.issued, min_gain=s.min_gain, probe_step=s.probe_step,
                                   min_limit=s.min_concurrency)

    # -- public API ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def pause_until(self) -> float:
        """Clock time before which no request may start (Retry-After, or the pace between two
        starts after one); -inf when none."""
        return max(self._pause_until, self._next_start)

    def widen_start(self) -> None:
        """Another lane (model) now shares this endpoint: before anything was measured, start
        `initial` higher, as two lanes of their own would have (a short run spends much of its
        time ramping up: bench/README.md, 8 personas on a 64-slot server, 69% at 32 shared)."""
        if self._slow is not None and self._slow.rounds == 0 and not self.decreases:
            now = self._clock()
            self._set_limit(self._limit + self.settings.initial, now)
            self._slow.begin(self._limit, self._sent.issued, self._in_flight, first=self._in_flight == 0)

    def can_start(self, in_flight: int) -> bool:
        return in_flight < self._limit and self._clock() >= self.pause_until

    def on_start(self) -> int:
        """A request goes out; returns its ticket, for `on_success` (slow start counts a reply
        at the number in flight it was sent with, and knows which start it answers)."""
        self._in_flight += 1
        self._window_peak = max(self._window_peak, self._in_flight)
        now = self._clock()
        self._starts.append(now)
        self._trim(self._starts, now)
        if self._pace_s > 0:
            self._next_start = max(now, self._next_start) + self._pace_s
        ticket = self._sent.record(now, self._in_flight)
        if self._slow is not None:
            self._slow.on_start(self._in_flight)
        return ticket

    def on_success(self, latency_s: float, tokens: int, ticket: int | None = None) -> None:
        in_flight = self._in_flight
        self._in_flight = max(0, self._in_flight - 1)
        self._sent.reply()
        self._latency = latency_s if self._latency is None else 0.8 * self._latency + 0.2 * latency_s
        now = self._clock()
        if self._pace_s > 0 and now >= self._pace_hold_until:
            self._pace_s *= self.settings.pace_decay
        # Counted at the number in flight when it was sent (scheduling/slow_start.py).
        if ticket is None:  # a caller that does not pass tickets back: find the start by time
            ticket = self._sent.ticket_at(now - latency_s)
        sent_with = self._sent.sent_with(ticket) or in_flight
        self._sent.forget_before(now - max(8 * self._latency, 20 * self.settings.window_s))
        if self._slow is not None:
            verdict = self._slow.on_success(ticket, latency_s, tokens, sent_with, in_flight,
                                            self._sent.issued, self._cap())
            if not verdict.ended:
                self._limit = verdict.limit
                return
            # The knee lies between where it ended and twice that: probe up from there.
            self._end_slow_start()
            self._hold = self.settings.hold_windows
            self._set_limit(verdict.limit, now)
            return
        if self._window_start is None:
            # Warm-up: completions of requests sent before the limit changed carry tokens made
            # at the old limit. Measure from the first request sent after the change.
            if now - latency_s >= self._changed_at:
                self._window_start = now
                self._window_peak = self._in_flight + 1
            return
        self._window_tokens += max(0, tokens)
        self._window_done += 1
        self._window_stats.add(sent_with, tokens, latency_s)
        elapsed = now - self._window_start
        long_enough = elapsed >= max(self.settings.window_s, 2 * (self._latency or 0.0))
        if long_enough and self._window_done >= 2 * self._limit:
            # Little's law over the window's replies (slow_start.RoundStats): tokens per second
            # of the clock swung by +-15% between windows at one limit (requests of very different
            # lengths end in lumps), enough to walk the limit down below the knee.
            estimate = self._window_stats.throughput()
            self._close_window(estimate if estimate > 0 else self._window_tokens / elapsed, now)

    def _cap(self) -> int:
        return min(self.settings.max_concurrency, self._ceiling or self.settings.max_concurrency)

    def on_failure(self, kind: str, retry_after_s: float | None = None) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; known: {', '.join(FAILURE_KINDS)}")
        self._in_flight = max(0, self._in_flight - 1)
        self._sent.reply()
        self.failures[kind] += 1
        now = self._clock()
        if retry_after_s is not None and retry_after_s > 0:
            self._pause_until = max(self._pause_until, now + retry_after_s)
        if kind == "rate_limited" and retry_after_s is not None:
            # Metered, not overloaded: pace the starts at the rate the endpoint just accepted.
            self.paced_429s += 1
            self._refusals.append(now)
            self._trim(self._refusals, now)
            self._trim(self._starts, now)
            # Requests in flight together are refused together: one signal per mean latency.
            if now - self._last_pace_cut >= (self._latency or self.settings.window_s):
                self._last_pace_cut = now
                observed = min(self.settings.rate_window_s, now - self._started_at)
                accepted = len(self._starts) - len(self._refusals)
                if accepted > 0 and observed > 0:
                    # A little under the measured rate (at exactly the rate every jitter is a
                    # 429), and at least 5% slower than the pace that drew this 429: the window
                    # still holds the starts of the probe that overshot.
                    self._pace_s = max(1.05 * observed / accepted, self._pace_s / 0.95)
            self._pace_hold_until = now + self.settings.pace_hold_s
            return
        if self.pinned is not None:
            return
        # Requests in flight together fail together: one decrease per mean latency.
        if now - self._last_decrease < (self._latency or self.settings.window_s):
            return
        self._last_decrease = now
        self.decreases += 1
        self._ceiling = max(self.settings.min_concurrency, self._limit - 1)
        self._ceiling_left = self.settings.ceiling_windows
        self._end_slow_start()
        self._previous = None  # measured before the failure: it overstated the endpoint
        self._set_limit(math.floor(self._limit * self.settings.backoff), now)

    def _end_slow_start(self) -> None:
        self._slow = None

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] < now - self.settings.rate_window_s:
            times.popleft()

    def snapshot(self) -> dict[str, Any]:
        """State for progress lines and the run record."""
        return {
            "limit": self._limit,
            "pinned": self.pinned is not None,
            "in_flight": self._in_flight,
            "paused": self._clock() < self._pause_until,
            "mean_latency_s": self._latency,
            "decreases": self.decreases,
            "failures": dict(self.failures),
            "pace_s": self._pace_s or None,
        }

    # -- windows -------------------------------------------------------------------------------

    def _new_window(self, now: float, *, warm_up: bool = False) -> None:
        self._changed_at = now
        self._window_start: float | None = None if warm_up else now
        self._window_tokens = 0
        self._window_done = 0
        self._window_peak = self._in_flight
        self._window_stats = RoundStats()

    def _set_limit(self, value: int, now: float) -> None:
        s = self.settings
        new = max(s.min_concurrency, min(s.max_concurrency, value))
        changed = new != self._limit
        self._limit = new
        self._new_window(now, warm_up=changed)
        if self._slow is not None:
            self._slow.begin(new, self._sent.issued, self._in_flight)

    def _close_window(self, throughput: float, now: float) -> None:
        if self.pinned is not None:
            self._new_window(now)
            return
        if self._ceiling is not None:
            self._ceiling_left -= 1
            if self._ceiling_left <= 0:
                # Probe above the failed limit again, one step at a time: the endpoint may have
                # recovered, and one step costs at most one more failure.
                self._ceiling += max(1, round(self._ceiling * self.settings.probe_step))
                self._ceiling_left = self.settings.ceiling_windows
        if self._window_peak < self._limit:
            self._new_window(now)  # app-limited: the endpoint was not what limited throughput
            return
        previous, self._previous = self._previous, (throughput, self._limit)
        self._best = max(0.998 * self._best, throughput)
        step = max(1, round(self._limit * self.settings.probe_step))
        if self._walking_down and previous is not None and self._limit < previous[1]:
            if throughput < self._best * (1.0 - self.settings.min_gain):
                # Fewer in flight lost throughput: the knee is above. Back up, then probe up.
                self._walking_down = False
                self._hold = self.settings.hold_windows
                self._previous = None
                self._set_limit(previous[1], now)
                return
        elif previous is not None and self._limit > previous[1]:
            # A raise from below the best is kept when it climbs back towards the best: just
            # under the knee a step buys less than `min_gain`, and the limit stayed below it.
            climbing = previous[0] < self._best * (1.0 - self.settings.min_gain) <= throughput
            if throughput < previous[0] * (1.0 + self.settings.min_gain) and not climbing:
                # More in flight bought no throughput: latency rose instead. Back to where it
                # was, hold, then try fewer: without this the limit drifts up on noisy windows.
                self._end_slow_start()
                self._down_next = True
                self._hold = self.settings.hold_windows
                self._previous = None
                self._set_limit(previous[1], now)
                return
        if self._hold > 0:
            self._hold -= 1
            self._new_window(now)
            return
        if self._down_next or self._walking_down:
            if not self._walking_down:
                self._walking_down, self._down_next = True, False
            target = self._limit - step
        else:
            target = self._limit + step
        if self._ceiling is not None:
            target = min(target, self._ceiling)
        if target == self._limit or target < self.settings.min_concurrency:
            self._walking_down = False
        self._set_limit(target, now)
