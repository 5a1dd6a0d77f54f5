"""`rbe run`: generate -> judge -> aggregate -> report, resumable at every call.

Every model call goes through a CallStore in the run directory, so a rerun of the same command
makes no call already made, an interrupted run resumes where it stopped, and a run with another
judge reuses the answers of an earlier run of the same model. Final numbers are computed only from
the recorded calls.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rolebench_eval.running import run_dir as rd
from rolebench_eval.backends.base import Backend, BackendOptions
from rolebench_eval.running.call_accounting import CallTally
from rolebench_eval.running.call_store import CallStore
from rolebench_eval.running import dialogue_roles, judge_output
from rolebench_eval.embedded import SMOKE_JUDGE_WARNING
from rolebench_eval.running.endpoint_identity import FRESH_NOTE, finished_run_by_name, identify_endpoints
from rolebench_eval.errors import RbeError, UsageError
from rolebench_eval.running.fresh_calls import FreshCallStore
from rolebench_eval.models import (
    ModelSpec,
    build_backend,
    judge_spec,
    model_under_test,
    preflight,
    spec_identity,
)
from rolebench_eval.running.run_lock import RunLock
from rolebench_eval.running.run_manifest import run_identity
from rolebench_eval.running.run_outputs import current_results, write_outputs, write_stamp
from rolebench_eval.running.sample_sink import SampleSink
from rolebench_eval.running.task_jobs import run_task_jobs
from rolebench_eval.scheduling.endpoints import EndpointPool
from rolebench_eval.scheduling.budget import Budget
from rolebench_eval.scheduling.lanes import BatchLane, DeviceToken, Lane, LazyLane
from rolebench_eval.scheduling.pricing import price_table
from rolebench_eval.scheduling.progress import Observers, ProgressDisplay
from rolebench_eval.scheduling.scheduler import RoleBinding, Scheduler, rare_collections
from rolebench_eval.running.sibling_runs import record_reuse, sibling_calls
from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, RunSettings, Task, TaskOutcome
from rolebench_eval.task_registry import TaskSpec, build_task, canonical_setting, check_task_options, discover

# The embedded model is a 135M plumbing model on 2 CPU cores: protocol limits of 3000 tokens
# would take minutes per answer. Used only when the user sets no limit, and recorded.
SMOKE_ANSWER_MAX_TOKENS = 128
SMOKE_JUDGE_MAX_TOKENS = 128
# Attempts per call when a 200 reply is unusable (empty, no parseable verdict): the first and 2
# more; each attempt may itself be retried by the backend (429, 5xx, timeouts).
CONTENT_ATTEMPTS = 3


@dataclass
class RunConfig:
    tasks: list[str]
    model: str | None = None
    backend: str | None = None
    base_url: str | None = None
    model_args: str | None = None
    judges: list[str] = field(default_factory=list)
    judge_base_url: str | None = None
    examples_model: str | None = None
    protocol: str | None = None
    roleplay_template: str | None = None
    limit: int | None = None
    unscored_policy: str = "exclude"
    max_tokens: int | None = None
    judge_max_tokens: int | None = None
    greedy_top_p: str = "zero"
    # --judge-output free|guided; None: guided for the embedded smoke judge only (judge_output.py)
    judge_output: str | None = None
    seed: int = 0
    results_dir: Path = Path("results")
    include_paths: list[str] = field(default_factory=list)
    task_options: dict[str, str] = field(default_factory=dict)
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool | None = None  # None: only when stderr is a terminal
    write_leaderboard: bool = True
    wait_for_lock: bool = True  # another run holds the run directory: wait (True) or refuse (False)
    model_revision: str | None = None  # --model-revision: recorded, part of the model's identity
    fresh: bool = False  # --fresh: no stored answer is reused; every call of this run is made anew
    prices: list[str] = field(default_factory=list)  # --price MODEL=IN,OUT overrides (pricing.price_table)
    budget_usd: float | None = None  # --budget-usd: stop before the estimated cost would exceed it
    max_calls: int | None = None  # --max-calls: at most this many calls sent by this run
    user_model: str | None = None  # --user-model: the simulated user of dialogue tasks (dialogue_roles)
    baseline_model: str | None = None  # --baseline-model: the pairwise baseline of dialogue tasks
    # The command recorded in the manifest (None: this process's argv); the Python API records
    # the equivalent `rbe run` line.
    command: list[str] | None = None


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    calls_made: dict[str, int]
    calls_reused: dict[str, int]
    # Why the run is incomplete (a call failed after its retries, nothing could be scored), one
    # line each; empty when complete. The CLI exits EXIT_INCOMPLETE when it is not empty.
    incomplete: list[str] = field(default_factory=list)


class Runner:
    def __init__(self, config: RunConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.calls_made: dict[str, int] = {}
        self.calls_reused: dict[str, int] = {}
        self.failed_calls = 0
        self._lock: RunLock | None = None
        prices = price_table(config.prices)
        self.tally = CallTally(CONTENT_ATTEMPTS, prices=prices)
        self.lane_snapshots: dict[str, Any] = {}
        self.progress = ProgressDisplay(enabled=config.progress)
        self.log = self.progress.log_above(self.log)  # log lines above the progress block
        self.budget = (
            Budget(config.max_calls, config.budget_usd, prices=prices, warn=self.log)
            if config.max_calls is not None or config.budget_usd is not None
            else None
        )

    # -- configuration -------------------------------------------------------------------------

    def _resolve(self) -> tuple[ModelSpec, list[ModelSpec], ModelSpec | None, list[TaskSpec], list[str]]:
        c = self.config
        registry = discover(c.include_paths)
        task_specs = registry.resolve(c.tasks)
        check_task_options(task_specs, c.task_options)
        # --protocol / --roleplay-template in any case ('_' for '-'): the tasks' own spelling from here on.
        c = self.config = replace(
            c, protocol=canonical_setting(task_specs, "protocols", c.protocol),
            roleplay_template=canonical_setting(task_specs, "roleplay_templates", c.roleplay_template),
        )
        model = model_under_test(c.model, c.backend, c.base_url, c.model_args, c.model_revision)
        if model.backend == "vllm":
            model = replace(model, backend_kwargs=dict(c.vllm_kwargs))
        judges = [judge_spec(text, c.judge_base_url) for text in c.judges]
        deviations: list[str] = []
        needs_judge = any(s.config.get("requires_judge", True) for s in task_specs)
        if needs_judge and not judges:
            judges = [judge_spec("embedded", None)]
            deviations.append(
                "no --judge given: the embedded model judges (smoke test; scores carry no meaning)"
            )
        labels = [j.label for j in judges]
        if len(set(labels)) != len(labels):
            raise UsageError(
                f"--judge: two judges share the label {labels}; add ,label=NAME to tell them apart"
            )
        examples = judge_spec(c.examples_model, c.judge_base_url) if c.examples_model else None
        return model, judges, examples, task_specs, deviations

    def _settings(
        self, model: ModelSpec, judges: list[ModelSpec], examples: ModelSpec | None, deviations: list[str]
    ) -> RunSettings:
        c = self.config
        answer_max = c.max_tokens
        if answer_max is None and model.smoke:
            answer_max = SMOKE_ANSWER_MAX_TOKENS
            deviations.append(
                f"answers limited to {answer_max} new tokens (embedded model's smoke-test limit; "
                "protocol: see roleplay_template.answer_params); set --max-tokens to change"
            )
        judge_max = c.judge_max_tokens
        judge_models = [*judges, *([examples] if examples else [])]
        if judge_max is None and any(j.smoke for j in judge_models):
            judge_max = SMOKE_JUDGE_MAX_TOKENS
            deviations.append(
                f"judge replies limited to {judge_max} tokens (embedded judge's smoke-test limit; "
                "protocol: 3000); set --judge-max-tokens to change"
            )
        if c.limit is not None and c.limit < 1:
            raise UsageError("--limit must be a positive number of personas/items")
        return RunSettings(
            protocol=c.protocol,
            roleplay_template=c.roleplay_template,
            limit=c.limit,
            unscored_policy=c.unscored_policy,
            answer_max_tokens=answer_max,
            judge_max_tokens=judge_max,
            greedy_top_p=c.greedy_top_p,
            seed=c.seed,
            judges=tuple(JudgeSpec(j.label, smoke=j.smoke) for j in judges),
            has_examples_model=examples is not None,
            options=dict(c.task_options),
            guided_roles=judge_output.guided_roles(
                c.judge_output, [(JudgeSpec(j.label).role, j) for j in judges],
                examples or (judges[0] if judges else None), deviations,
            ),
        )

    # -- models and their lanes -----------------------------------------------------------------

    def _open_backend(self, spec: ModelSpec) -> Backend:
        self.log(f"loading {spec.label} ({spec.backend})")
        return build_backend(spec, self.config.backend_options)

    def _bindings(
        self,
        model: ModelSpec,
        judges: Sequence[ModelSpec],
        settings: RunSettings,
        examples: ModelSpec | None,
        generation_store: CallStore,
        judging_store: CallStore,
        dialogue: dialogue_roles.DialogueModels = dialogue_roles.DialogueModels(),
    ) -> dict[str, RoleBinding]:
        """Each model role of the tasks bound to its model's store and lane (one lane per model
        identity, whatever roles it plays: the judge often writes the score examples too)."""
        options = self.config.backend_options
        roles: list[tuple[str, ModelSpec, CallStore, str]] = [(MODEL_ROLE, model, generation_store, "generation")]
        roles += [(j.role, spec, judging_store, "judging") for j, spec in zip(settings.judges, judges)]
        if examples is not None:
            roles.append(("examples", examples, judging_store, "judging"))
        # The simulated user and the baseline: judging-side calls (see dialogue_roles).
        roles += [(role, spec, judging_store, "judging") for role, spec in dialogue.pairs()]
        identities = {role: spec_identity(spec, options) for role, spec, _, _ in roles}
        local = {identities[role] for role, spec, _, _ in roles if spec.backend != "openai"}
        # Two local engines never share the device (GPU memory): one runs, then the other.
        device = DeviceToken() if len(local) > 1 else None
        # Lanes whose models one endpoint (URL) serves share its concurrency controller.
        self._endpoints = EndpointPool()
        lanes: dict[str, Lane] = {}
        bindings = {}
        for role, spec, store, kind in roles:
            identity = identities[role]
            if identity not in lanes:
                lanes[identity] = self._lane(spec, device if identity in local else None)
            bindings[role] = RoleBinding(role, spec.label, identity, store, lanes[identity], kind)
        return bindings

    def _lane(self, spec: ModelSpec, device: DeviceToken | None) -> Lane:
        return model_lane(spec, self._open_backend, device, getattr(self, "_endpoints", None))

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            with rare_collections():  # the calls, and the records and reports made from them
                return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _run(self) -> RunResult:
        c = self.config
        model, judges, examples, task_specs, deviations = self._resolve()
        dialogue = dialogue_roles.resolve_dialogue_models(
            task_specs, c.user_model, c.baseline_model, any(j.smoke for j in judges), c.judge_base_url, deviations
        )
        # What each endpoint serves is part of its identity (a metadata request, no model call).
        (model, examples, *judges), endpoint_error = identify_endpoints([model, examples, *judges], deviations, preflight)  # type: ignore[assignment]
        if c.fresh:
            deviations.append(FRESH_NOTE)
        dialogue, dialogue_error = dialogue_roles.identify(dialogue, deviations, preflight)
        endpoint_error = endpoint_error or dialogue_error
        settings = replace(self._settings(model, judges, examples, deviations), **dialogue_roles.bound_models(dialogue))
        settings = dialogue_roles.smoke_limits(dialogue, settings, SMOKE_ANSWER_MAX_TOKENS, SMOKE_JUDGE_MAX_TOKENS, deviations)
        tasks = [build_task(spec, settings) for spec in task_specs]
        options = c.backend_options
        examples_spec = examples or (judges[0] if judges else None)
        task_manifests = {t.name: t.manifest() for t in tasks}
        judged = [s.name for s in task_specs if s.config.get("requires_judge", True)]
        judge_output.check_tasks(c.judge_output, settings.guided_roles, task_manifests, judged, deviations)
        identity = run_identity(model, judges, examples_spec, dialogue, settings, task_manifests, options,
                                deviations, c.command)
        config_hash, name_hash, smoke, manifest = identity.config_hash, identity.name_hash, identity.smoke, identity.manifest
        model_identity = spec_identity(model, options)
        run_path = c.results_dir / rd.RUNS_FOLDER / rd.run_dir_name(model.label, [t.name for t in tasks], config_hash)
        if endpoint_error is not None:
            # Endpoints, keys and model names are checked before anything is written; a finished
            # run is printed from its files even when its endpoints are gone.
            return self._finished_without_endpoint(name_hash, endpoint_error)
        # One run per run directory: a second `rbe run` of the same command waits here, then
        # finds every call made by the first in the calls files (loaded below, after the lock).
        self._lock = RunLock(run_path, wait=c.wait_for_lock, log=self.log)
        self._lock.acquire()
        rd.open_run_dir(run_path, manifest)
        self.log(f"run directory: {run_path}")
        if smoke:
            self.log(f"WARNING: {SMOKE_JUDGE_WARNING}")
        for deviation in deviations:
            self.log(f"note: {deviation}")

        cached = None if c.fresh else self._derived_if_current(run_path, config_hash)
        if cached is not None:
            if c.write_leaderboard:
                from rolebench_eval.analysis.leaderboard import write_leaderboard

                write_leaderboard(c.results_dir)
            return cached
        calls_store = FreshCallStore if c.fresh else CallStore  # --fresh: no stored answer counts
        generation_store = calls_store(
            run_path / rd.GENERATION_CALLS,
            sibling_calls(c.results_dir, run_path, {model_identity}, rd.GENERATION_CALLS),
        )
        judge_identities_all = {spec_identity(s, options) for s in [*judges, *([examples_spec] if examples_spec else []), *dialogue.specs()]}
        judging_store = calls_store(
            run_path / rd.JUDGING_CALLS,
            sibling_calls(c.results_dir, run_path, judge_identities_all, rd.JUDGING_CALLS),
        )
        bindings = self._bindings(model, judges, settings, examples_spec, generation_store, judging_store, dialogue)
        for spec in {s.label: s for s in [model, *judges, *([examples_spec] if examples_spec else []), *dialogue.specs()]}.values():
            self.tally.register(spec.label, spec.backend, spec.model)  # prices by model name
            if self.budget is not None:
                self.budget.register(spec.label, spec.backend, spec.model)
        # samples.jsonl refers to each call by its key (call_refs.py): role -> identity, file
        sink = SampleSink(run_path, [t.name for t in tasks], {role: (b.identity, b.kind) for role, b in bindings.items()})
        try:
            outcomes = self._evaluate(tasks, bindings, sink)
        except BaseException:
            sink.discard()
            raise
        record_reuse(run_path, generation_store, judging_store, self.log)
        stopped = self.budget.incomplete_line() if self.budget is not None else None
        results = write_outputs(
            run_path, manifest, tasks, outcomes, model, judges, {**self.tally.section(), "lanes": self.lane_snapshots},
            sink,
            failure_lines=[
                *(f"{line} (a rerun retries them)" for line in self.tally.failure_lines()),
                *([stopped] if stopped else []),
            ],
            warnings=self.budget.warnings if self.budget is not None else (),
        )
        used = {k: self.calls_made.get(k, 0) + self.calls_reused.get(k, 0) for k in ("generation", "judging")}
        write_stamp(run_path, config_hash, used, self.failed_calls)
        if c.write_leaderboard:
            from rolebench_eval.analysis.leaderboard import write_leaderboard

            write_leaderboard(c.results_dir)
        return RunResult(
            run_path, results, dict(self.calls_made), dict(self.calls_reused), list(results["incomplete"])
        )

    def _evaluate(self, tasks: Sequence[Task], bindings: dict[str, RoleBinding], sink: SampleSink) -> dict[str, TaskOutcome]:
        """Every task's jobs through one scheduler (running/task_jobs.py); records go to `sink`."""
        scheduler = Scheduler(bindings, content_attempts=CONTENT_ATTEMPTS,
                              observer=Observers([self.tally, self.progress]), budget=self.budget)
        try:
            return run_task_jobs(tasks, scheduler, sink)
        finally:
            self.progress.close()
            self.calls_made, self.calls_reused = scheduler.counts.made, scheduler.counts.reused
            self.failed_calls = scheduler.counts.stored_failures + scheduler.counts.not_sent
            self.lane_snapshots = scheduler.lane_snapshots

    def _finished_without_endpoint(self, name_hash: str, error: RbeError) -> RunResult:
        """The finished run of this command, printed from its files while an endpoint is down."""
        found = finished_run_by_name(self.config.results_dir, name_hash)
        cached = self._derived_if_current(*found) if found else None
        if found is None or cached is None:
            raise error
        self.log(f"note: {error}; showing the finished run {found[0].name} from its files "
                 "(the checkpoint it was made with is in its manifest)")
        return cached

    def _derived_if_current(self, run_path: Path, config_hash: str) -> RunResult | None:
        found = current_results(run_path, config_hash)
        if found is None:
            return None
        results, used = found
        return RunResult(run_path, results, {kind: 0 for kind in used}, used, list(results.get("incomplete") or []))


def model_lane(spec: ModelSpec, open_backend: Callable[[ModelSpec], Backend], device: DeviceToken | None = None,
               endpoints: EndpointPool | None = None) -> Lane:
    """The lane of one model (shared with `rbe questions generate`); the backend opens lazily."""
    if spec.backend == "openai":
        # An endpoint keeps as many requests in flight as it serves well (adaptive, per
        # replica): its backend brings its own lane. Anything else takes batches.
        def make() -> Lane:
            backend = open_backend(spec)
            make_lane = getattr(backend, "lane", None)
            if not callable(make_lane):
                return BatchLane(spec.label, lambda: backend)
            return make_lane(spec.label, endpoints) if endpoints is not None else make_lane(spec.label)

        return LazyLane(spec.label, make)
    return BatchLane(spec.label, lambda: open_backend(spec), device=device)
