"""Progress per role from scheduler events on a fake clock: the rendered text is asserted."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rolebench_eval.running.call_accounting import CallTally
from rolebench_eval.requests import Completion
from rolebench_eval.scheduling.progress import Observers, ProgressDisplay


sys.path.insert(0, str(Path(__file__).parent))
from progress_fakes import Clock, ok  # noqa: E402


def test_lines_show_done_total_in_flight_rate_failures_and_eta() -> None:
    clock = Clock()
    progress = ProgressDisplay(io.StringIO(), enabled=False, clock=clock, window_s=30.0)
    progress.finished("model", "qwen", "generate", ok(99), False, None)  # a stored answer reused
    for _ in range(9):
        progress.queued("model", "qwen", "generate")
        progress.started("model", "qwen", "generate")
    progress.started("model", "qwen", "generate")  # an unusable reply asked again: still one call
    progress.queued("judge:gpt", "gpt", "rubric_grading")
    clock.now = 2.0
    progress.finished("model", "qwen", "generate", ok(50), True, 2.0)
    clock.now = 4.0
    progress.finished("model", "qwen", "generate", ok(30), True, 4.0)
    progress.finished("model", "qwen", "generate", Completion.failure("HTTP 400"), True, 4.0)
    # 3 made in 4 s -> 0.75 calls/s, 6 left -> 8 s; 80 tokens / 4 s (the reused answer cost nothing)
    assert progress.lines() == [
        "model under test (qwen)  4/10 done  6 in flight  20.0 tok/s  1 failed  ETA 8s",
        "judge:gpt (gpt)  0/1 done  1 in flight  - tok/s  0 failed  ETA ?",
    ]


def test_rate_and_eta_follow_the_recent_window() -> None:
    clock = Clock()
    progress = ProgressDisplay(io.StringIO(), enabled=False, clock=clock, window_s=10.0)
    for _ in range(199):
        progress.queued("examples", "gpt", "score_examples")
    progress.queued("examples", "gpt", "score_examples")
    progress.started("examples", "gpt", "score_examples")
    clock.now = 1.0
    progress.finished("examples", "gpt", "score_examples", ok(1000), True, 1.0)
    # 100 s later, 10 calls in the last 10 s: the early burst no longer counts.
    for i in range(10):
        clock.now = 101.0 + i
        progress.started("examples", "gpt", "score_examples")
        progress.finished("examples", "gpt", "score_examples", ok(10), True, 1.0)
    clock.now = 110.5
    # 189 left at 1 call/s
    assert progress.lines() == ["examples (gpt)  11/200 done  189 in flight  10.0 tok/s  0 failed  ETA 3m09s"]


def test_the_rate_window_holds_buckets_not_one_entry_per_call() -> None:
    # 30,000 calls in 30 s at 1 ms apart: the window keeps at most its buckets, and the rate is
    # the same as one entry per call would give.
    clock = Clock()
    progress = ProgressDisplay(io.StringIO(), enabled=False, clock=clock, window_s=60.0)
    for i in range(30_000):
        clock.now = i / 1000
        progress.queued("judge:gpt", "gpt", "rubric_grading")
        progress.started("judge:gpt", "gpt", "rubric_grading")
        progress.finished("judge:gpt", "gpt", "rubric_grading", ok(2), True, 0.001)
    state = progress._roles[("judge:gpt", "gpt")]
    assert len(state.recent) <= 61
    assert sum(n for _, n, _ in state.recent) == 30_000
    clock.now = 30.0
    assert progress.lines() == ["judge:gpt (gpt)  30000/30000 done  0 in flight  2,000.0 tok/s  0 failed  ETA done"]


def test_terminal_redraw_is_throttled_and_rewrites_in_place() -> None:
    clock = Clock()
    stream = io.StringIO()
    progress = ProgressDisplay(stream, enabled=True, clock=clock, min_interval_s=0.25)
    progress.queued("model", "m", "generate")  # drawn at once
    progress.queued("model", "m", "generate")  # throttled: same instant
    clock.now = 0.3
    progress.started("model", "m", "generate")  # drawn: cursor back 1 line, line cleared
    progress.started("model", "m", "generate")  # throttled
    clock.now = 0.31
    progress.finished("model", "m", "generate", ok(5), True, 0.01)  # throttled
    progress.close()  # the final state is always drawn
    assert stream.getvalue() == (
        "\x1b[2Kmodel under test (m)  0/1 done  1 in flight  - tok/s  0 failed  ETA ?\n"
        "\x1b[1F\x1b[2Kmodel under test (m)  0/2 done  2 in flight  - tok/s  0 failed  ETA ?\n"
        "\x1b[1F\x1b[2Kmodel under test (m)  1/2 done  1 in flight  500.0 tok/s  0 failed  ETA 0s\n"
    )


def test_off_when_not_a_terminal_and_never_shows_a_secret() -> None:
    stream = io.StringIO()  # isatty() is False
    progress = ProgressDisplay(stream)
    progress.queued("judge:x", "key=sk-abcdefghijk", "rubric_grading")
    progress.close()
    assert stream.getvalue() == ""
    assert "sk-abcdefghijk" not in progress.lines()[0]


def test_observers_fan_out_to_tally_and_progress() -> None:
    clock = Clock()
    tally = CallTally(3, clock=clock)
    progress = ProgressDisplay(io.StringIO(), enabled=False, clock=clock)

    class OnlyFinished:
        seen: list[str] = []

        def finished(self, role: str, label: str, stage: str, completion: Completion, made: bool,
                     latency_s: float | None, **extra: object) -> None:
            self.seen.append(f"{stage} {extra}")

    partial = OnlyFinished()
    observers = Observers([tally, progress, partial, None])
    observers.queued("model", "m", "generate")
    observers.started("model", "m", "generate")
    clock.now = 2.0
    observers.finished("model", "m", "generate", ok(8), made=True, latency_s=2.0, empty=False)  # as the scheduler calls it
    assert tally.section()["by_role"][0]["wall_s"] == 2.0
    assert progress.lines()[0].startswith("model under test (m)  1/1 done  0 in flight  4.0 tok/s")
    assert partial.seen == ["generate {'empty': False}"]
