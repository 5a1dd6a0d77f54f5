"""`rbe compare`, `rbe regress`, `rbe table` and `rbe report`: commands that read finished runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the analysis subcommands on the `rbe` parser."""
