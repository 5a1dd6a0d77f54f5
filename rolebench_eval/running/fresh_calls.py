"""`rbe run --fresh`: a run that makes every model call anew.

Answers stored before this run (in its own calls files or in other runs') are not answers for
it; the new ones are appended to the run's calls files as usual, and because a calls file's later
answer for a key wins when it is loaded, they are the ones later reruns use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.running.call_store import CallStore


class FreshCallStore(CallStore):
    """A CallStore that answers only with calls made since it was opened."""

    def __init__(self, path: Path, fallbacks: Sequence[Path] = (), **kwargs: Any):
        # Other runs' answers are never copied in: that would be reuse, which --fresh refuses.
        super().__init__(path, (), **kwargs)
        self._made_here: set[str] = set()

    def answer(self, key: str) -> Any:
        return super().answer(key) if key in self._made_here else None

    def append(self, key: str, *args: Any, **kwargs: Any) -> None:
        self._made_here.add(key)
        super().append(key, *args, **kwargs)
