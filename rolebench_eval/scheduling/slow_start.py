"""The concurrency controller's slow start (scheduling/concurrency.py): how fast the limit rises
from its start, and where it stops.

Rounds: measure the limit, then double it, until a doubling buys no throughput.

1. Measure: a round counts only replies to requests sent after the doubling's burst (the starts
   the new limit allowed at once: the first of those to reach a full server are served first and
   look as if nothing queued), each at the number in flight when it was sent (a burst sent in one
   dispatch counts as the whole burst). The first round, before anything was sent, counts the
   first burst too (an idle server has no queue). A round closes after its first eighth of
   replies (at least `_REPLIES`). Throughput is estimated by Little's law over them:

       throughput ~= sum(in_flight_when_sent * tokens) / sum(latency)

   which needs no clock window: with a steady number in flight it is exact (in flight = request
   rate x mean latency), and below a batching server's knee every request runs at the step time
   of its batch whatever its length, so the first (short) replies already give it. Past the knee
   a request sent with more in flight waits longer in the server's queue and the estimate stays
   flat. Tokens per second of the clock, which the earlier slow start used, needs windows of
   several latencies: requests of very different lengths end in lumps.
2. Compare with the last round: throughput rising by at least `min_gain`, double (up to the
   cap); not rising, slow start ends at what the last round's requests were sent with (the limit
   that still gained), unless that is within a probe step of the limit (at the cap already:
   nothing to undo). A round in which the caller did not fill the limit says nothing about the
   endpoint: a doubling it did not use is taken back and the round starts again.

The earlier slow start doubled once per window of two mean latencies after a warm-up of one:
about 3 latencies per doubling, and from 64 in flight a 256-slot server was full only 2.3 s into
a 10 s run (bench/README.md, 89% of its peak). A round here lasts about the time the quickest
eighth of its requests take, so the same server is full 0.75-1 s in.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

# Fewest replies that measure a round. Few suffice: below the knee every request runs at its
# batch's step time, so each reply gives the same estimate; past it the first replies back are
# the shortest, whose wait in the queue weighs most, so the estimate errs low, towards ending.
# The share (an eighth) keeps the same quantile of reply lengths from round to round.
_REPLIES = 8


@dataclass
class RoundStats:
    done: int = 0  # replies counted
    tokens: int = 0
    latency_s: float = 0.0  # sum of their latencies
    in_flight_tokens: float = 0.0  # sum of in_flight_when_sent x tokens
    in_flight_sum: int = 0  # sum of in_flight_when_sent (for the mean when no tokens came)

    def add(self, in_flight_when_sent: int, tokens: int, latency_s: float) -> None:
        tokens = max(0, tokens)
        self.done += 1
        self.tokens += tokens
        self.latency_s += max(0.0, latency_s)
        self.in_flight_tokens += in_flight_when_sent * tokens
        self.in_flight_sum += in_flight_when_sent

    def throughput(self) -> float:
        """Tokens per second the endpoint made for these requests (Little's law)."""
        return self.in_flight_tokens / self.latency_s if self.latency_s > 0 else 0.0

    def in_flight(self) -> float:
        """How many were in flight when these requests were sent (token-weighted)."""
        if self.tokens:
            return self.in_flight_tokens / self.tokens
        return self.in_flight_sum / self.done if self.done else 0.0


@dataclass
class StartLog:
    """Every start, numbered (its ticket), with its time, kept a few latencies, so that a reply is
    counted at the number in flight it was sent with: what was in flight once its dispatch (the
    run of starts with no reply between them) was done, so a burst counts as the whole burst.
    By ticket when the caller passes it back; else by time (the last start at or before the
    reply's send time)."""

    first: int = 0  # ticket of the oldest entry kept
    times: list[float] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # per entry: its run (the run's first ticket)
    run_in_flight: dict[int, int] = field(default_factory=dict)  # per run: in flight at its end
    open_run: int | None = None

    @property
    def issued(self) -> int:
        """Tickets issued so far (the next start's ticket)."""
        return self.first + len(self.times)

    def record(self, now: float, in_flight: int) -> int:
        ticket = self.issued
        if self.open_run is None:
            self.open_run = ticket
        self.times.append(now)
        self.runs.append(self.open_run)
        self.run_in_flight[self.open_run] = in_flight
        return ticket

    def reply(self) -> None:
        """A reply came back: the next start begins a new run."""
        self.open_run = None

    def ticket_at(self, sent_at: float) -> int | None:
        i = bisect.bisect_right(self.times, sent_at)
        return self.first + i - 1 if i else None

    def sent_with(self, ticket: int | None) -> int | None:
        if ticket is None or not self.first <= ticket < self.issued:
            return None
        return self.run_in_flight[self.runs[ticket - self.first]]

    def forget_before(self, t: float) -> None:
        i = bisect.bisect_left(self.times, t)
        if i > len(self.times) // 2:  # in halves: amortised O(1) per start
            del self.times[:i], self.runs[:i]
            self.first += i
            oldest = self.runs[0] if self.runs else self.issued
            for run in [r for r in self.run_in_flight if r < oldest]:
                del self.run_in_flight[run]


@dataclass(frozen=True)
class Verdict:
    limit: int
    ended: bool = False  # slow start is over; `limit` is where it ended


class SlowStart:
    def __init__(self, limit: int, issued: int, *, min_gain: float, probe_step: float, min_limit: int = 1):
        self.min_gain = min_gain
        self.probe_step = probe_step
        self.min_limit = min_limit
        self.rounds = 0  # rounds measured
        self._previous: tuple[float, float] | None = None  # last round's (throughput, sent with)
        self.begin(limit, issued, 0, first=True)  # the first round measures the start itself

    def begin(self, limit: int, issued: int, in_flight: int, *, before: int | None = None,
              first: bool = False) -> None:
        """A round measuring `limit` from now (also after the caller moved the limit itself);
        `before`: the limit it doubled from (taken back to when the caller does not use it);
        `first`: nothing was sent yet, so the first burst is measured too (an idle server has no
        queue for its first-served to skip; if it has fewer slots than the burst, the estimate
        errs high and the next round, measured without that error, ends slow start). `issued`:
        tickets of starts so far (StartLog); replies count by ticket."""
        self.limit = limit
        self.before = limit if before is None else before
        # The starts the new limit allows at once (a burst) are not measured: the first of them
        # to reach a full server's queue are served first and look as if nothing queued. The
        # requests sent after them, each as a reply frees a slot, queue behind everything.
        burst = 0 if first else max(0, limit - in_flight)
        self.from_ticket = issued + burst  # replies to starts from this one on count
        self.peak = in_flight
        self.stats = RoundStats()

    def on_start(self, in_flight: int) -> None:
        self.peak = max(self.peak, in_flight)

    def on_success(self, ticket: int | None, latency_s: float, tokens: int, sent_with: int,
                   in_flight: int, issued: int, cap: int) -> Verdict:
        """A reply to start `ticket`, sent with `sent_with` in flight; `in_flight` (now) counts
        it. Returns the limit from now on."""
        if ticket is None or ticket < self.from_ticket:
            return Verdict(self.limit)  # sent before the round began, or in its burst
        self.stats.add(sent_with, tokens, latency_s)
        # The first eighth of the replies (the quickest) of the requests the round sent.
        if self.stats.done < min(self.limit, max(_REPLIES, self.limit // 8)):
            return Verdict(self.limit)
        return self._close(issued, cap, in_flight - 1)

    def _close(self, issued: int, cap: int, in_flight: int) -> Verdict:
        if self.peak < self.limit:
            # App-limited: the caller did not fill the limit; that says nothing about the
            # endpoint, and a doubling it did not use is taken back.
            self.begin(max(self.before, self.peak), issued, in_flight)
            return Verdict(self.limit)
        self.rounds += 1
        throughput, sent_with = self.stats.throughput(), self.stats.in_flight()
        previous, self._previous = self._previous, (throughput, sent_with)
        if previous is not None and throughput < previous[0] * (1.0 + self.min_gain):
            ended_at = max(self.min_limit, math.ceil(previous[1]))
            if ended_at < self.limit * (1.0 - self.probe_step):
                return Verdict(ended_at, ended=True)
        self.begin(min(2 * self.limit, cap), issued, in_flight, before=self.limit)
        return Verdict(self.limit)
