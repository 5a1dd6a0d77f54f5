"""The task plugin interface.

A task turns its data into samples, says how the model under test is asked, and evaluates the
answers. Evaluation is a generator: it yields a list of model calls (for named model roles such as
"judge:gpt-4o" or "examples"), receives their completions in the same order, may yield again, and
finally returns its records and metrics. The runner drives all selected tasks in lockstep, so the
calls of one stage of every task reach each model as a single batch, and it caches every call in
the run directory; task code never sees backends, caching or retries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rolebench_eval.requests import ChatRequest, Completion

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One question put to the model under test."""

    sample_id: str  # unique within the task, stable across runs
    unit: str  # what statistics are computed over and paired on (a persona, an item)
    fields: Mapping[str, Any]  # task-specific metadata (persona, task, question, role...)


class FixedFields(Mapping[str, Any]):
    """`Sample.fields` for a task whose samples all have the same keys: a subclass names them in
    `__slots__`, and each sample's fields take a pointer per key (~100 bytes) instead of a dict
    (~270): a run holds every sample until it ends (issue 13). Read-only, like any Mapping."""

    __slots__ = ()
    _keys: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._keys = frozenset(cls.__slots__)  # a set: `fields[key]` is read for every call built

    def __init__(self, **values: Any):
        if values.keys() != self._keys:
            raise TypeError(f"{type(self).__name__} needs exactly the fields {', '.join(self.__slots__)}")
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__slots__)

    def __len__(self) -> int:
        return len(self.__slots__)

    def __repr__(self) -> str:
        return repr(dict(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # copy, deepcopy and pickle rebuild through __init__: the slots are read-only.
        return (_rebuild_fields, (type(self), dict(self)))


def _rebuild_fields(cls: type[FixedFields], values: dict[str, Any]) -> FixedFields:
    return cls(**values)


ReplyCheck = Callable[[str], "str | None"]
"""Says why a successful reply's text is unusable (e.g. "no '(N) Evaluation:' segment"), or None.

A reply that fails its check is a failed call with that reason: the runner retries it (bounded),
records every attempt, and a later run retries it again; it never reaches the task as a success.
"""


@dataclass(frozen=True)
class ModelCall:
    model: str  # a model role: "judge:<label>" or "examples"
    stage: str  # e.g. "score_examples", "rubric_grading", "pairwise_ranking"
    request: ChatRequest
    check: ReplyCheck | None = field(default=None, compare=False)  # content check of the reply


@dataclass(frozen=True)
class JudgeSpec:
    """A judge model as the task sees it: its label and its role name in ModelCall.model."""

    label: str
    smoke: bool = False  # the embedded model: plumbing only, its scores mean nothing

    @property
    def role(self) -> str:
        return f"judge:{self.label}"


@dataclass(frozen=True)
class BoundModel:
    """The model bound to a dialogue role (USER_ROLE, BASELINE_ROLE) as the task sees it."""

    role: str  # the role name in ModelCall.model
    label: str
    smoke: bool = False  # the embedded model: plumbing only


@dataclass(frozen=True)
class RunSettings:
    """The user's choices that tasks read (each task validates the ones that apply to it)."""

    protocol: str | None = None
    roleplay_template: str | None = None
    limit: int | None = None
    unscored_policy: str = "exclude"
    answer_max_tokens: int | None = None  # override of the protocol's generation max_tokens
    judge_max_tokens: int | None = None  # override of the protocol's judge max_tokens
    greedy_top_p: str = "zero"  # "zero": send top_p=0 as the protocol does; "one": send 1
    seed: int = 0
    judges: tuple[JudgeSpec, ...] = ()
    has_examples_model: bool = False
    options: Mapping[str, str] = field(default_factory=dict)  # --task-option key=value
    # --judge-output: the judging roles ("judge:<label>", "examples") whose replies are constrained
    # to the task's formats (ChatRequest.guided_regex); a task records what it guides in its
    # manifest (`judge_output`), which is where the choice enters the configuration hash.
    guided_roles: tuple[str, ...] = ()
    # Dialogue roles (running/dialogue_roles.py): None when no chosen task declares the role.
    user: BoundModel | None = None  # --user-model: plays the user (USER_ROLE)
    baseline: BoundModel | None = None  # --baseline-model: the pairwise baseline (BASELINE_ROLE)


@dataclass
class TaskOutcome:
    """What a task's evaluation returns: per-sample records and the task's results section."""

    records: list[dict[str, Any]]
    results: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


Evaluation = Generator[list[ModelCall], list[Completion], TaskOutcome]

# The model role of the model under test in a ModelCall (judges are "judge:<label>", the
# score-examples model "examples").
MODEL_ROLE = "model"
# Dialogue tasks: the model that plays the user (a simulated user, an interrogator) and the
# baseline model a pairwise judge compares the model under test against (--user-model,
# --baseline-model; the task declares which it needs).
USER_ROLE = "user"
BASELINE_ROLE = "baseline"

Job = Generator[list[ModelCall], list[Completion], Any]
"""One unit of work (a question, a judge batch, a dialogue): it yields the calls it needs next,
receives their completions in the same order, may yield again (any number of times: a dialogue
yields once per turn), and returns its partial result. The scheduler runs every job of every task
at once and sends each call as soon as its job asks for it: a job never waits for another job."""


class LazyJobs(Sequence[Job]):
    """A task's jobs, each built when it is taken (by index or in iteration), so that a run does
    not hold every unstarted job's frame at once (issue 13: PersonaGym's 2,000 batch jobs at 200
    personas were ~1.2 KB each before the first started). Taking one twice builds it twice:
    drive each job taken once."""

    def __init__(self, count: int, build: Callable[[int], Job]):
        self._count, self._build = count, build

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Job:  # type: ignore[override]  # no slices: one job at a time
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("job index out of range")
        return self._build(index)

    def __iter__(self) -> Iterator[Job]:
        return (self._build(index) for index in range(self._count))


class Task(ABC):
    """Base class of task plugins. Subclasses are built by a factory named in `tasks.toml`."""

    name: str
    version: str

    def __init__(self, name: str, version: str, settings: RunSettings):
        self.name = name
        self.version = version
        self.settings = settings

    @abstractmethod
    def samples(self) -> list[Sample]:
        """The samples of this run (honouring settings.limit)."""

    @abstractmethod
    def generation_request(self, sample: Sample) -> ChatRequest:
        """How the model under test is asked for this sample."""

    @abstractmethod
    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        """Judge and score the answers; yields model calls, returns the outcome."""

    @abstractmethod
    def manifest(self) -> dict[str, Any]:
        """Everything about the task that can change a result: versions, data and prompt hashes,
        templates, protocol and policies. Goes into the run's manifest and configuration hash."""

    def metric_kinds(self) -> dict[str, str]:
        """Metric name -> 'likert' | 'continuous' | 'verdict', for paired comparisons."""
        return {}

    # -- pipelined evaluation (optional) ---------------------------------------------------------
    # A task that implements `jobs` and `finish` is run without stage barriers: each job asks for
    # the model under test's answer itself (ModelCall(MODEL_ROLE, "generate", ...)) together with
    # whatever else it can ask for at once (score examples need no answer), then for its judgments.
    # A task that does not is run as one job: all answers, then `evaluate` stage by stage.

    def jobs(self, samples: list[Sample]) -> Sequence[Job] | None:
        """The task's jobs over `samples` (a list, or a `LazyJobs` that builds each when taken),
        or None to be run through `generation_request` and `evaluate` (the stage-by-stage
        interface)."""
        return None

    def finish(self, samples: list[Sample], results: list[Any]) -> TaskOutcome:
        """Records and results from the jobs' return values (in the order `jobs` gave them)."""
        stream = self.record_stream(samples)
        if stream is None:
            raise NotImplementedError(f"task {self.name} defines jobs() but neither finish() nor record_stream()")
        return finish_from_stream(stream, results)

    # -- streamed records (optional) -----------------------------------------------------------
    # A task with many samples builds its records job by job: the runner hands each job's value to
    # the stream the moment the job ends (jobs end in any order), writes the records it returns at
    # once (samples.jsonl lists them in job order) and keeps none of them; only what the stream
    # keeps for its results stays in memory.

    def record_stream(self, samples: list[Sample]) -> RecordStream | None:
        """A RecordStream over the values of `jobs(samples)`, or None (then `finish` gets them all)."""
        return None


class RecordStream(ABC):
    """A task's records and results, built from its jobs' values one job at a time."""

    @abstractmethod
    def add(self, index: int, value: Any) -> list[dict[str, Any]]:
        """The records of job `index` (its position in `Task.jobs`), from its value. Jobs end in
        any order, so what a job's records say must not depend on which jobs ended before it."""

    @abstractmethod
    def close(self) -> TaskOutcome:
        """The task's results from what `add` kept. Its `records` are what the run's reliability
        figures read (judge_reliability.py): the records' own fields; texts of calls may be dropped."""


def finish_from_stream(stream: RecordStream, values: list[Any]) -> TaskOutcome:
    """Every value through `stream`: the outcome with the full records (as `finish` returns them)."""
    records = [record for index, value in enumerate(values) for record in stream.add(index, value)]
    outcome = stream.close()
    return TaskOutcome(records, outcome.results, outcome.warnings)


def staged_job(task: Task, samples: list[Sample]) -> Job:
    """A task without `jobs`, as one job: every answer, then its `evaluate` generator."""
    answers = yield [ModelCall(MODEL_ROLE, "generate", task.generation_request(s)) for s in samples]
    outcome = yield from task.evaluate(samples, answers)
    return outcome
