"""Every task's jobs through one scheduler, their records streamed to samples.jsonl as jobs end.

A task with `record_stream` gets each job's value the moment the job ends (jobs end in any order)
and its records go to the sample sink at once, which puts them in job order when samples.jsonl is
written. A task without it gets all its values in `finish` at the end; a task without jobs runs as
one staged job.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.running.sample_sink import SampleSink
from rolebench_eval.scheduling.scheduler import Scheduler
from rolebench_eval.task_api import Job, LazyJobs, RecordStream, Sample, Task, TaskOutcome, staged_job


@dataclass
class _TaskJobs:
    task: Task
    samples: list[Sample]
    start: int  # index of the task's first job among all jobs
    count: int
    staged: bool
    stream: RecordStream | None
    values: list[Any] = field(default_factory=list)  # without a stream: every value, for finish
    fed: int = 0  # with one: jobs whose values the stream has had


def run_task_jobs(tasks: Sequence[Task], scheduler: Scheduler, sink: SampleSink) -> dict[str, TaskOutcome]:
    """Run every task's jobs; each task's outcome (its records already in `sink`)."""
    spans: list[_TaskJobs] = []
    parts: list[Sequence[Job]] = []
    total = 0
    for task in tasks:
        samples = task.samples()
        task_jobs = task.jobs(samples)
        staged = task_jobs is None
        if task_jobs is None:
            task_jobs = [staged_job(task, samples)]
        stream = None if staged else task.record_stream(samples)
        spans.append(_TaskJobs(task, samples, total, len(task_jobs), staged, stream,
                               [None] * len(task_jobs) if stream is None else []))
        parts.append(task_jobs)
        total += len(task_jobs)
    starts = [span.start for span in spans]

    def locate(index: int) -> tuple[int, int]:
        """Which task a job index of the whole run is, and the job's index within that task."""
        part = bisect_right(starts, index) - 1
        return part, index - starts[part]

    def job_at(index: int) -> Job:
        part, local = locate(index)
        return parts[part][local]

    # Every task's jobs in one sequence, none copied: a task's LazyJobs builds each as it starts.
    jobs = LazyJobs(total, job_at)

    def on_done(index: int, value: Any) -> None:
        part, local = locate(index)
        span = spans[part]
        if span.stream is None:
            span.values[local] = value
            return
        sink.add(span.task.name, span.stream.add(local, value), local)
        span.fed += 1

    scheduler.run(jobs, on_done)
    parts.clear()  # finished generators: nothing of theirs is needed any more
    outcomes: dict[str, TaskOutcome] = {}
    for span in spans:
        name = span.task.name
        if span.stream is not None:
            if span.fed != span.count:  # a driver bug, not bad input
                raise RuntimeError(f"task {name}: {span.count - span.fed} job value(s) never reached its record stream")
            outcomes[name] = span.stream.close()
            continue
        outcome = span.values[0] if span.staged else span.task.finish(span.samples, span.values)
        sink.add(name, outcome.records)
        outcomes[name] = outcome
    return outcomes
