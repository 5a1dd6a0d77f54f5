"""Progress of a run, per role: done / known total, in flight, tokens per second, failures, ETA.

An observer of the scheduler like the call tally (`queued`, `started`, `finished`); `Observers`
hands each event to several. On a terminal it redraws a few lines on stderr in place (ANSI: cursor
up, clear line), at most `1 / min_interval_s` times a second, each cut to the terminal's width (a
wrapped line would break the redraw); a log line of the run (`log_above`) is printed above the
block, which is then drawn again below it. Elsewhere (a log file, CI, or `--no-progress`) it
prints nothing. Lines show role names and model labels only, redacted like
every log line: never a URL or key.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rolebench_eval.running.call_accounting import role_name

# The rate window's resolution: completions closer together than window_s / _BUCKETS are one
# entry, so the window holds at most about this many entries whatever the call rate.
_BUCKETS = 120
from rolebench_eval.requests import Completion
from rolebench_eval.secrets import redact


class Observers:
    """Fan-out: every hook of the scheduler goes to each observer that defines it."""

    def __init__(self, observers: Iterable[Any]):
        self.observers = [o for o in observers if o is not None]
        # The hooks, looked up once (the scheduler calls them several times per model call).
        self._hooks = {name: [h for h in (getattr(o, name, None) for o in self.observers) if h is not None]
                       for name in ("queued", "started", "finished")}

    def queued(self, role: str, model_label: str, stage: str) -> None:
        for hook in self._hooks["queued"]:
            hook(role, model_label, stage)

    def started(self, role: str, model_label: str, stage: str) -> None:
        for hook in self._hooks["started"]:
            hook(role, model_label, stage)

    def finished(self, role: str, model_label: str, stage: str, completion: Completion, made: bool,
                 latency_s: float | None = None, **extra: Any) -> None:
        # `extra`: what the scheduler adds (empty=...), passed on as given.
        for hook in self._hooks["finished"]:
            hook(role, model_label, stage, completion, made=made, latency_s=latency_s, **extra)


@dataclass
class _Role:
    queued: int = 0
    done: int = 0
    in_flight: int = 0
    failed: int = 0
    first_start: float | None = None
    # [time, calls, completion tokens] of recent completions, those within a bucket's width of
    # each other summed (at thousands of calls a second the window would hold one entry per
    # call): the rate and ETA follow the recent pace, not the run's average (a slow model load
    # at the start must not dominate).
    recent: deque[list[float]] = field(default_factory=deque)

    reused: int = 0

    @property
    def total(self) -> int:
        # Jobs ask for more calls as they go: the total known so far (sent + reused).
        return self.queued + self.reused


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressDisplay:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.25,
        window_s: float = 30.0,
        width: int | None = None,  # columns; None: the terminal's
    ):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.window_s = window_s
        self._roles: dict[tuple[str, str], _Role] = {}
        self._drawn = 0  # lines on screen from the last refresh
        self._last_refresh: float | None = None
        self._width = width

    def log_above(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log`, printing above the progress block: the block is erased, the message printed,
        and the block drawn again under it (otherwise the next redraw, moving the cursor up over
        the message, would leave a stale block and overwrite the message)."""
        if not self.enabled:
            return log

        def above(message: str) -> None:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # to the block's first line, clear below
                self.stream.flush()
                self._drawn = 0
            log(message)
            if self._roles:
                self.refresh(force=True)

        return above

    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        # A pseudo-terminal nobody sized (pty.spawn, some CI runners) says 0 columns: $COLUMNS,
        # else 80.
        return columns or shutil.get_terminal_size().columns

    def _role(self, role: str, model_label: str) -> _Role:
        return self._roles.setdefault((role_name(role), model_label), _Role())

    # -- observer hooks ------------------------------------------------------------------------

    # The scheduler calls `queued` once per call it sends (after the budget allowed it), `started`
    # once per attempt (an unusable reply is asked again), `finished` once per call; a stored
    # answer reused gets `finished` only. So a call is in flight from `queued` to `finished`
    # (waiting in its lane's queue included), and retries do not count twice.

    def queued(self, role: str, model_label: str, stage: str) -> None:
        state = self._role(role, model_label)
        state.queued += 1
        state.in_flight += 1
        self.refresh()

    def started(self, role: str, model_label: str, stage: str) -> None:
        state = self._role(role, model_label)
        if state.first_start is None:
            state.first_start = self.clock()
        self.refresh()

    def finished(self, role: str, model_label: str, stage: str, completion: Completion, made: bool,
                 latency_s: float | None = None, empty: bool = False) -> None:
        state = self._role(role, model_label)
        state.done += 1
        if not made:
            state.reused += 1
        elif state.in_flight:
            state.in_flight -= 1
        if not completion.ok:
            state.failed += 1
        if made:
            now = self.clock()
            tokens = completion.usage.completion_tokens or 0
            if state.recent and now - state.recent[-1][0] < self.window_s / _BUCKETS:
                state.recent[-1][1] += 1
                state.recent[-1][2] += tokens
            else:
                state.recent.append([now, 1, tokens])
            # Trimmed here too, not only when drawn: with no display nothing else would, and the
            # deque would hold every call of the run.
            while state.recent[0][0] < now - self.window_s:
                state.recent.popleft()
        self.refresh()

    # -- rendering -----------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """One line per role and model, as shown (also what tests read)."""
        now = self.clock()
        out = []
        for (role, label), state in self._roles.items():
            while state.recent and state.recent[0][0] < now - self.window_s:
                state.recent.popleft()
            elapsed = min(self.window_s, now - state.first_start) if state.first_start is not None else 0.0
            parts = [f"{role} ({label})", f"{state.done}/{state.total} done", f"{state.in_flight} in flight"]
            if elapsed > 0 and state.recent:
                tokens = sum(t for _, _, t in state.recent)
                parts.append(f"{tokens / elapsed:,.1f} tok/s")
            else:
                parts.append("- tok/s")
            parts.append(f"{state.failed} failed")
            remaining = state.total - state.done
            if remaining == 0:
                parts.append("ETA done" if state.done else "ETA -")
            elif elapsed > 0 and state.recent:
                calls = sum(n for _, n, _ in state.recent)
                parts.append(f"ETA {_duration(remaining / (calls / elapsed))}")
            else:
                parts.append("ETA ?")
            out.append(redact("  ".join(parts)))
        return out

    def refresh(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and self._last_refresh is not None and now - self._last_refresh < self.min_interval_s:
            return
        self._last_refresh = now
        # One column short of the width: a line filling the last column wraps on some terminals.
        columns = max(20, self._columns() - 1)
        lines = [line[:columns] for line in self.lines()]
        # Back to the first line drawn last time, then each line cleared and rewritten.
        text = f"\x1b[{self._drawn}F" if self._drawn else ""
        text += "".join(f"\x1b[2K{line}\n" for line in lines)
        self.stream.write(text)
        self.stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        """The final state, drawn once more (the last events may have been throttled)."""
        self.refresh(force=True)
