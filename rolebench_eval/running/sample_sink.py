"""samples.jsonl written as the records arrive, so a run never holds all of them (issue 13).

A task that streams its records (`Task.record_stream`) hands over each job's records the moment
that job ends; the sink encodes them at once (texts of calls become references, call_refs.py) and
appends them to the task's part file, remembering where each job's lines are, so what stays in
memory is one job's records and a position per job, not the run's records. Jobs end in any order
and tasks run at the same time, but samples.jsonl lists tasks one after another and each task's
records in job order: `commit` copies each job's lines in that order into samples.jsonl (one
rename: readers see the old file or the new one). A run killed before `commit` leaves its parts,
which the next run's sink removes: they are derived from the calls files, which hold everything.
"""

from __future__ import annotations

import json
import shutil
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running import run_dir as rd
from rolebench_eval.running.call_refs import RecordEncoder

PARTS_FOLDER = ".samples-parts"


class SampleSink:
    """The records of one run's tasks, encoded and written as they come."""

    def __init__(self, run_path: Path, task_names: Sequence[str], call_roles: Mapping[str, tuple[str, str]]):
        self.run_path = run_path
        self._roles = dict(call_roles)
        self._folder = run_path / PARTS_FOLDER
        shutil.rmtree(self._folder, ignore_errors=True)  # a killed run's parts
        self._names = list(task_names)
        self._parts = {name: self._folder / f"{number:03d}-{rd.slug(name)}.jsonl" for number, name in enumerate(self._names)}
        self._handles: dict[str, Any] = {}
        # Per task: job index, offset and length of each job's lines in its part file (machine
        # integers: a full PersonaGym has thousands of jobs, a tuple each would grow the run).
        self._spans = {name: (array("Q"), array("Q"), array("Q")) for name in self._names}
        self._ends = {name: 0 for name in self._names}

    def add(self, task: str, records: Iterable[dict[str, Any]], job: int = 0) -> None:
        """Encode and append the records of job `job` of `task` (in their order)."""
        handle = self._handles.get(task)
        if handle is None:
            try:
                self._folder.mkdir(parents=True, exist_ok=True)
                handle = self._handles[task] = self._parts[task].open("wb")
            except OSError as exc:
                raise RunDirectoryError(f"cannot write {self._parts[task]}: {exc.strerror or exc}") from exc
        # A fresh encoder per batch of records: it remembers the requests it computed keys for,
        # which the records of one job share; keeping them past the job would keep every prompt.
        encoder = RecordEncoder(self._roles)
        lines = [json.dumps(encoder.encode(r), ensure_ascii=False) + "\n" for r in records]
        data = "".join(lines).encode("utf-8")
        try:
            handle.write(data)
        except OSError as exc:  # a full disk: one line naming the file, never a traceback
            raise RunDirectoryError(f"cannot write {self._parts[task]}: {exc.strerror or exc}") from exc
        jobs, offsets, lengths = self._spans[task]
        jobs.append(job)
        offsets.append(self._ends[task])
        lengths.append(len(data))
        self._ends[task] += len(data)

    def commit(self) -> None:
        """Join the parts, task by task, into samples.jsonl (atomically) and remove them."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

        def chunks() -> Iterable[str]:
            for name in self._names:
                jobs, offsets, lengths = self._spans[name]
                if not jobs:
                    continue
                with self._parts[name].open("rb") as handle:
                    # Job order (lines of one job, were it added twice, in the order written).
                    for k in sorted(range(len(jobs)), key=lambda k: (jobs[k], offsets[k])):
                        handle.seek(offsets[k])
                        yield handle.read(lengths[k]).decode("utf-8")

        rd.write_text_atomic(self.run_path / rd.SAMPLES, chunks())
        shutil.rmtree(self._folder, ignore_errors=True)

    def discard(self) -> None:
        """Close and remove the parts (the run failed before its outputs were written)."""
        for handle in self._handles.values():
            try:
                handle.close()
            except OSError:
                pass
        self._handles.clear()
        shutil.rmtree(self._folder, ignore_errors=True)

