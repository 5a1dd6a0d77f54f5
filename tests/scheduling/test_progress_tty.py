"""ProgressDisplay on a real terminal (a pseudo-terminal): what reaches the screen, byte for byte.

The display writes to the pty's slave end, as to stderr on a terminal; the test reads the master
end. It checks the redraw sequences, that lines are cut to the terminal's width (a wrapped line
would break the cursor-up redraw), that a log line goes above the block and the block is drawn
again under it, the final state, and that a stream that is not a terminal gets nothing.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import sys
import termios
from pathlib import Path

import pytest

from rolebench_eval.scheduling.progress import ProgressDisplay

sys.path.insert(0, str(Path(__file__).parent))
from progress_fakes import Clock, ok  # noqa: E402


@pytest.fixture
def terminal():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))  # 60 columns
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # no \n -> \r\n translation: the bytes read back are those written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    stream = os.fdopen(slave, "w", encoding="utf-8")
    yield stream, master
    stream.close()
    os.close(master)


def read_all(master: int) -> str:
    chunks = []
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def test_redraws_in_place_cut_to_width_with_log_lines_above(terminal) -> None:
    stream, master = terminal
    clock = Clock()
    progress = ProgressDisplay(stream, clock=clock, min_interval_s=0.25)
    assert progress.enabled  # a real terminal
    logged: list[str] = []
    log = progress.log_above(lambda m: (stream.write(m + "\n"), stream.flush(), logged.append(m)))
    progress.queued("model", "qwen", "generate")
    progress.started("model", "qwen", "generate")  # throttled from here: same instant
    progress.queued("model", "qwen", "generate")
    progress.started("model", "qwen", "generate")
    clock.now = 1.0
    progress.queued("judge:gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18", "rubric_grading")
    clock.now = 2.0
    log("loading gpt (openai)")
    clock.now = 4.0
    progress.finished("model", "qwen", "generate", ok(40), True, 1.0)
    progress.finished("model", "qwen", "generate", ok(40), True, 1.0)  # throttled
    progress.close()
    model_0 = "model under test (qwen)  0/1 done  1 in flight  - tok/s  0 failed  ETA ?"[:59]
    model_2 = "model under test (qwen)  0/2 done  2 in flight  - tok/s  0 failed  ETA ?"[:59]
    judge = "judge:gpt-4o-mini-2024-07-18 (gpt-4o-mini-2024-07-18)  0/1 done  1 in flight  - tok/s  0 failed  ETA ?"[:59]
    model_1 = "model under test (qwen)  1/2 done  1 in flight  10.0 tok/s  0 failed  ETA 4s"[:59]
    model_done = "model under test (qwen)  2/2 done  0 in flight  20.0 tok/s  0 failed  ETA done"[:59]
    assert read_all(master) == (
        f"\x1b[2K{model_0}\n"  # first draw
        f"\x1b[1F\x1b[2K{model_2}\n\x1b[2K{judge}\n"  # 1 s later: up one line, both lines
        "\x1b[2F\x1b[J" "loading gpt (openai)\n"  # the log line replaces the block...
        f"\x1b[2K{model_2}\n\x1b[2K{judge}\n"  # ...which is drawn again under it
        f"\x1b[2F\x1b[2K{model_1}\n\x1b[2K{judge}\n"  # 2 s later
        f"\x1b[2F\x1b[2K{model_done}\n\x1b[2K{judge}\n"  # close(): the final state
    )
    assert len(model_0) == 59 and "ETA" not in judge  # cut to 60 columns less one
    assert logged == ["loading gpt (openai)"]


def test_not_a_terminal_prints_nothing_and_logs_pass_through() -> None:
    stream = io.StringIO()
    progress = ProgressDisplay(stream)
    assert not progress.enabled
    seen: list[str] = []
    log = progress.log_above(seen.append)
    progress.queued("model", "qwen", "generate")
    log("run directory: x")
    progress.finished("model", "qwen", "generate", ok(4), True, 1.0)
    progress.close()
    assert stream.getvalue() == "" and seen == ["run directory: x"]
