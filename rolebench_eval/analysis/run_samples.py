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

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_index import CallIndex
from rolebench_eval.running.call_refs import CALL


def iter_samples(run_path: Path, *, resolve: bool = True) -> Iterator[dict[str, Any]]:
    """Each record of `run_path`'s samples.jsonl in file order, with every reference resolved.

    Records of schema 2 refer to their calls for the texts the calls files hold
    (`{"$call": key, ...}`, see running/call_refs.py); each is replaced by the prompt or reply it
    stands for, read from the run's calls files. Records of schema 1 (every text inline) are
    returned as they are. Raises FileNotFoundError when the run has no samples file; a line that
    is not a JSON object raises ValueError naming the file and line; a reference whose call is not
    in the calls files raises RunDirectoryError naming the file, line and field.

    With `resolve=False` the references are left as they are (`{"$call": ...}` dicts) and the calls
    files are never read: for a reader that shows only each sample's own fields (the HTML sample
    pages, html_pages.py), to which resolving would add a parse of every call of the run.
    """
    path = Path(run_path) / rd.SAMPLES
    index = CallIndex(Path(run_path))
    try:
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
                if resolve and CALL in line:
                    try:
                        record = _resolved(record, index, ())
                    except RunDirectoryError as error:
                        raise RunDirectoryError(f"{path}:{number}: {error}") from None
                yield record
    finally:
        index.close()


def _resolved(value: Any, index: CallIndex, where: tuple[str | int, ...]) -> Any:
    """`value` with every reference in it replaced by what it stands for."""
    if isinstance(value, dict):
        if CALL in value:
            try:
                return index.resolve(value)
            except RunDirectoryError as error:
                field = ".".join(str(step) for step in where)
                raise RunDirectoryError(f"field {field}: {error}") from None
        return {k: _resolved(v, index, (*where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, index, (*where, i)) for i, v in enumerate(value)]
    return value
