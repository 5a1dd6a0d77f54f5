"""How `rbe` ends: every exception becomes one line on stderr and one exit code of errors.py.

- RbeError: the user's input or environment; its message, its exit_code (2 unless it says).
- OSError of the environment (a full disk, a read-only or missing folder, a path that is a file):
  exit 2 with the file and the reason; what was written before stays (calls are appended and
  flushed one by one, derived files are replaced atomically), so a rerun resumes.
- KeyboardInterrupt: 130.
- anything else is a bug in rbe: exit 4, the traceback goes to a log file whose path is printed
  (never to the terminal, where it reads like a user error).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rolebench_eval.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, RbeError
from rolebench_eval.secrets import redact

# errno values that describe the machine or the user's paths, not a bug.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
    errno.EISDIR, errno.EEXIST, errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG, errno.EIO,
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; every call already recorded is kept: free some space and rerun the same command to resume"
    return f"cannot read or write{where}: {what}{hint}"


def _crash_log_folder(args: argparse.Namespace) -> Path:
    results_dir = getattr(args, "results_dir", None)
    if isinstance(results_dir, Path) and results_dir.is_dir() and os.access(results_dir, os.W_OK):
        return results_dir
    return Path(tempfile.gettempdir())


def write_crash_log(args: argparse.Namespace, exc: BaseException) -> Path | None:
    """Write the traceback (secrets redacted) next to the results, else in the temp folder."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    header = f"rbe {' '.join(redact(a) for a in sys.argv[1:])}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
    name = f"rbe-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (_crash_log_folder(args), Path(tempfile.gettempdir())):
        try:
            path = folder / name
            path.write_text(header + redact(text), encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one subcommand and turn whatever it raises into a message and an exit code."""
    try:
        return command(args)
    except RbeError as exc:
        print(f"rbe: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rbe: interrupted; every finished call is saved, rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal(args, exc)
        print(f"rbe: error: {redact(_one_line(describe_os_error(exc)))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, logged
        return _internal(args, exc)


def _internal(args: argparse.Namespace, exc: BaseException) -> int:
    path = write_crash_log(args, exc)
    where = f"traceback in {path}" if path else "no log could be written"
    summary = redact(_one_line(f"{type(exc).__name__}: {exc}"))[:300]
    print(f"rbe: internal error ({summary}); {where}. This is a bug in rbe: please report it with that file.",
          file=sys.stderr)
    return EXIT_INTERNAL
