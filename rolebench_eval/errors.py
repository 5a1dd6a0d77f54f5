"""User-facing errors: each names the problem (flag, file, line, field) and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


# One exit-code table for every `rbe` command (documented in the README, "Exit codes").
EXIT_OK = 0  # success
EXIT_REGRESSION = 1  # `rbe regress` only: a significant drop beyond the allowed delta
EXIT_USAGE = 2  # bad input or usage: a flag, a file, a line, a field (nothing was computed wrongly)
EXIT_INCOMPLETE = 3  # a run is incomplete: a call failed after its retries, or nothing could be
#                      scored; its files are written and a rerun resumes
EXIT_INTERNAL = 4  # a bug in rbe: the traceback goes to a log file, whose path is printed
EXIT_INTERRUPTED = 130  # Ctrl-C (the shell's convention); every finished call is saved


class RbeError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""

    exit_code = EXIT_USAGE


class UsageError(RbeError):
    """A bad flag or value on the command line."""


class DataError(RbeError):
    """A data file that is missing, unreadable or malformed."""


class BackendError(RbeError):
    """A model backend that cannot be used (missing path, endpoint down, missing API key...)."""


class RunDirectoryError(RbeError):
    """A run directory that is corrupted or belongs to a different configuration."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """Error for an unknown task/backend/judge/protocol/template name, with a suggestion."""
    known = sorted(choices)
    return UsageError(
        f"unknown {kind} {name!r}.{did_you_mean(name, known)} Known {kind}s: {', '.join(known)}."
    )
