"""One `rbe run` at a time per run directory: an flock lock file held for the whole run.

Two runs of the same command write the same run directory. Without a lock both would send every
call (each loads the calls file before the other has written to it) and interleave their lines.
The lock is an advisory `fcntl.flock` on `<run dir>/run.lock`: the kernel drops it when the
holding process ends, however it ends, so a killed run never leaves a stale lock behind. The file
keeps the holder's PID so the waiting run can say who it waits for.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running.run_dir import LOCK_NAME

POLL_S = 0.2  # how often a waiting run retries; the wait itself has no time limit


class RunLock:
    """Exclusive lock of one run directory; use as a context manager around the run."""

    def __init__(self, run_path: Path, *, wait: bool = True, log: Callable[[str], None] = lambda m: None):
        self.path = run_path / LOCK_NAME
        self.wait = wait
        self.log = log
        self._fd: int | None = None

    def holder(self) -> str:
        """The PID recorded by the process holding the lock ('unknown' when unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return "unknown"
        return text or "unknown"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if not self.wait:
                os.close(fd)
                raise RunDirectoryError(
                    f"{self.path.parent} is in use by another rbe run (PID {self.holder()}, lock "
                    f"{self.path}); wait for it to finish, or run without --no-wait to wait for it"
                )
            if not announced:
                self.log(f"waiting for another rbe run (PID {self.holder()}) that holds {self.path}")
                announced = True
            time.sleep(POLL_S)
        # Our PID replaces the last holder's; written after locking so it is never a stranger's.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        if announced:
            self.log(f"the other run finished; continuing with {self.path.parent.name}")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
