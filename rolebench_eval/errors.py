"""User-facing errors: each names the problem (flag, file, line, field) and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RbeError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""


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
