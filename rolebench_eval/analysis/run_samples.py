"""The per-sample records of a run, as a reader sees them: every field resolved.

The one way anything outside the runner reads a run's samples (the Python API, reports, exports,
side-by-side comparisons): records are streamed one at a time, so a caller never has to hold a
whole run in memory, and whatever the run directory stores by reference (texts shared by a batch of
samples, kept once in the calls files) is resolved here, so a reader sees every prompt and reply of
a sample in one record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rolebench_eval.running import run_dir as rd


def iter_samples(run_path: Path) -> Iterator[dict[str, Any]]:
    """Each record of `run_path`'s samples.jsonl in file order, with every reference resolved.

    Raises FileNotFoundError when the run has no samples file; a line that is not a JSON object
    raises ValueError naming the file and line.
    """
    path = Path(run_path) / rd.SAMPLES
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            yield record
