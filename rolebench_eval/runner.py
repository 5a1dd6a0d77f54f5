"""`rbe run`: generate -> judge -> aggregate -> report, resumable at every call.

Every model call goes through a CallStore in the run directory, so a rerun of the same command
makes no call already made, an interrupted run resumes where it stopped, and a run with another
judge reuses the answers of an earlier run of the same model. Final numbers are computed only from
the recorded calls.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rolebench_eval import run_dir as rd
from rolebench_eval.backends.base import Backend, BackendOptions
from rolebench_eval.call_accounting import EMPTY_ANSWER, MODEL_ROLE, CallTally, empty_answer_check, nothing_scored
from rolebench_eval.call_store import CallResult, CallStore, run_calls
from rolebench_eval.embedded import SMOKE_JUDGE_WARNING
from rolebench_eval.endpoint_identity import FRESH_NOTE, finished_run_by_name, identify_endpoints, name_only_config
from rolebench_eval.fresh_calls import FreshCallStore
from rolebench_eval.errors import RbeError, UsageError
from rolebench_eval.models import (
    ModelSpec,
    build_backend,
    judge_spec,
    model_under_test,
    preflight,
    spec_identity,
)
from rolebench_eval.provenance import git_revision, machine, package_versions
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.secrets import redact
from rolebench_eval.task_api import Evaluation, JudgeSpec, ModelCall, ReplyCheck, RunSettings, Task, TaskOutcome
from rolebench_eval.run_lock import RunLock
from rolebench_eval.task_registry import TaskSpec, build_task, check_task_options, discover

# The embedded model is a 135M plumbing model on 2 CPU cores: protocol limits of 3000 tokens
# would take minutes per answer. Used only when the user sets no limit, and recorded.
SMOKE_ANSWER_MAX_TOKENS = 128
SMOKE_JUDGE_MAX_TOKENS = 128
RESULTS_SCHEMA = "rolebench-eval/results/v1"
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


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    calls_made: dict[str, int]
    calls_reused: dict[str, int]
    # Why the run is incomplete (a call failed after its retries, nothing could be scored), one
    # line each; empty when complete. The CLI exits EXIT_INCOMPLETE when it is not empty.
    incomplete: list[str] = field(default_factory=list)


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def bar(self, total: int, description: str) -> Callable[[int], None] | None:
        if not self.enabled or total == 0:
            return None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=description, unit="call", leave=True, file=sys.stderr)

        def advance(n: int) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()

        return advance


def _canonical_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Runner:
    def __init__(self, config: RunConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.progress = _Progress(sys.stderr.isatty() if config.progress is None else config.progress)
        self._backends: dict[str, Backend] = {}
        self.calls_made: dict[str, int] = {}
        self.calls_reused: dict[str, int] = {}
        self.failed_calls = 0
        self._lock: RunLock | None = None
        self.tally = CallTally(CONTENT_ATTEMPTS)

    # -- configuration -------------------------------------------------------------------------

    def _resolve(self) -> tuple[ModelSpec, list[ModelSpec], ModelSpec | None, list[TaskSpec], list[str]]:
        c = self.config
        registry = discover(c.include_paths)
        task_specs = registry.resolve(c.tasks)
        check_task_options(task_specs, c.task_options)
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
        )

    # -- backends ------------------------------------------------------------------------------

    def _backend(self, spec: ModelSpec) -> Backend:
        identity = spec_identity(spec, self.config.backend_options)
        if identity not in self._backends:
            self.log(f"loading {spec.label} ({spec.backend})")
            self._backends[identity] = build_backend(spec, self.config.backend_options)
        return self._backends[identity]

    def _release(self, keep: Sequence[ModelSpec]) -> None:
        """Free local models not needed next (the generator's GPU memory before the judges)."""
        wanted = {spec_identity(s, self.config.backend_options) for s in keep}
        for identity in list(self._backends):
            if identity not in wanted:
                self._backends.pop(identity).close()

    def _call(
        self,
        store: CallStore,
        spec: ModelSpec,
        stage: str,
        requests: list[ChatRequest],
        kind: str,
        checks: Sequence[ReplyCheck | None] | None = None,
    ) -> list[CallResult]:
        identity = spec_identity(spec, self.config.backend_options)
        advance = self.progress.bar(len(requests), f"{stage} [{spec.label}]")

        def generate(batch: Sequence[ChatRequest], on_result: Callable[[int, Completion], None]) -> None:
            self._backend(spec).generate(batch, on_result)

        results = run_calls(
            store, identity, spec.label, stage, requests, generate, advance,
            checks=checks, content_attempts=CONTENT_ATTEMPTS,
        )
        made = sum(1 for r in results if r.made)
        # Stored failures (empty answers included) make the next run re-derive and retry them.
        self.failed_calls += sum(1 for r in results if not r.completion.ok)
        self.calls_made[kind] = self.calls_made.get(kind, 0) + made
        self.calls_reused[kind] = self.calls_reused.get(kind, 0) + len(requests) - made
        return results

    def _generate_answers(self, store: CallStore, model: ModelSpec, requests: list[ChatRequest]) -> list[Completion]:
        """The model under test's answers, as the tasks receive them.

        An answer still empty after its retries is stored as a failed call (the next run asks
        again) but handed over as the model's answer, with a note: the task judges it and flags it.
        """
        results = self._call(
            store, model, "generate", requests, "generation", [empty_answer_check] * len(requests)
        )
        answers = []
        for result in results:
            completion = result.completion
            empty = result.unusable == EMPTY_ANSWER
            self.tally.add(MODEL_ROLE, model.label, "generate", completion, made=result.made, empty=empty)
            if empty:
                completion = replace(
                    completion,
                    error=None,
                    notes=(*completion.notes, f"empty answer after {completion.attempts} attempt(s)"),
                )
            answers.append(completion)
        return answers

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _run(self) -> RunResult:
        c = self.config
        model, judges, examples, task_specs, deviations = self._resolve()
        # What each endpoint serves is part of its identity (a metadata request, no model call).
        (model, examples, *judges), endpoint_error = identify_endpoints([model, examples, *judges], deviations, preflight)  # type: ignore[assignment]
        if c.fresh:
            deviations.append(FRESH_NOTE)
        settings = self._settings(model, judges, examples, deviations)
        tasks = [build_task(spec, settings) for spec in task_specs]
        options = c.backend_options
        model_identity = spec_identity(model, options)
        judge_identities = {j.label: spec_identity(j, options) for j in judges}
        examples_spec = examples or (judges[0] if judges else None)
        task_manifests = {t.name: t.manifest() for t in tasks}
        config_core = {
            "model": {**model.describe(), "identity": model_identity},
            "judges": [{**j.describe(), "identity": judge_identities[j.label]} for j in judges],
            "examples_model": (
                {**examples_spec.describe(), "identity": spec_identity(examples_spec, options)}
                if examples_spec
                else None
            ),
            "settings": {k: v for k, v in asdict(settings).items() if k != "judges"},
            "backend_options": {
                "system_prompt_policy": options.system_prompt_policy,
                "overlength_policy": options.overlength_policy,
                "chat_template": options.chat_template,
                "dtype": options.dtype,
            },
            "tasks": task_manifests,
        }
        config_hash = _canonical_hash(config_core)
        name_hash = _canonical_hash(name_only_config(config_core, [model, *judges, *([examples_spec] if examples_spec else [])], options))
        generation_hash = _canonical_hash(
            {"model": model_identity, "tasks": {name: m.get("data") for name, m in task_manifests.items()},
             "settings": [settings.roleplay_template, settings.answer_max_tokens, settings.seed, settings.limit]}
        )
        run_path = c.results_dir / rd.RUNS_FOLDER / rd.run_dir_name(model.label, [t.name for t in tasks], config_hash)
        smoke = any(j.smoke for j in judges) or bool(examples_spec and examples_spec.smoke)
        manifest = {
            "schema": "rolebench-eval/manifest/v1",
            "config_hash": config_hash,
            "name_hash": name_hash,  # the configuration without the servers' facts (endpoint_identity)
            "generation_hash": generation_hash,
            **config_core,
            "smoke_judge": smoke,
            "deviations": deviations,
            "packages": package_versions(),
            "git_revision": git_revision(),
            "machine": machine(),
            "command": _sanitized_argv(),
        }
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
                from rolebench_eval.leaderboard import write_leaderboard

                write_leaderboard(c.results_dir)
            return cached
        calls_store = FreshCallStore if c.fresh else CallStore  # --fresh: no stored answer counts
        generation_store = calls_store(
            run_path / rd.GENERATION_CALLS,
            self._sibling_calls(c.results_dir, run_path, {model_identity}, rd.GENERATION_CALLS),
        )
        judge_identities_all = {spec_identity(s, options) for s in [*judges, *([examples_spec] if examples_spec else [])]}
        judging_store = calls_store(
            run_path / rd.JUDGING_CALLS,
            self._sibling_calls(c.results_dir, run_path, judge_identities_all, rd.JUDGING_CALLS),
        )
        samples = {t.name: t.samples() for t in tasks}
        requests = [t.generation_request(s) for t in tasks for s in samples[t.name]]
        answers = self._generate_answers(generation_store, model, requests)
        judge_models = [*judges, *([examples] if examples else [])]
        self._release(keep=judge_models)

        roles = {j.role: spec for j, spec in zip(settings.judges, judges)}
        if examples_spec is not None:
            roles["examples"] = examples_spec
        offset = 0
        evaluations: dict[str, Evaluation] = {}
        for task in tasks:
            n = len(samples[task.name])
            evaluations[task.name] = task.evaluate(samples[task.name], answers[offset : offset + n])
            offset += n
        outcomes = self._drive(evaluations, roles, judging_store)
        self._release(keep=[])
        self._record_reuse(run_path, generation_store, judging_store)
        results = self._write(run_path, manifest, tasks, outcomes, judges, model, smoke)
        self._write_stamp(run_path, config_hash)
        if c.write_leaderboard:
            from rolebench_eval.leaderboard import write_leaderboard

            write_leaderboard(c.results_dir)
        return RunResult(
            run_path, results, dict(self.calls_made), dict(self.calls_reused), list(results["incomplete"])
        )

    def _finished_without_endpoint(self, name_hash: str, error: RbeError) -> RunResult:
        """The finished run of this command, printed from its files while an endpoint is down."""
        found = finished_run_by_name(self.config.results_dir, name_hash)
        cached = self._derived_if_current(*found) if found else None
        if found is None or cached is None:
            raise error
        self.log(f"note: {error}; showing the finished run {found[0].name} from its files "
                 "(the checkpoint it was made with is in its manifest)")
        return cached

    def _sibling_calls(
        self, root: Path, run_path: Path, identities: set[str], calls_file: str
    ) -> list[Path]:
        """The same calls file of other runs that used one of these model identities."""
        found = []
        for other in rd.find_runs(root):
            if other == run_path or not (other / calls_file).exists():
                continue
            try:
                manifest = json.loads((other / rd.MANIFEST).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            used = {manifest.get("model", {}).get("identity")} if calls_file == rd.GENERATION_CALLS else {
                j.get("identity") for j in [*manifest.get("judges", []), manifest.get("examples_model") or {}]
            }
            if used & identities:
                found.append(other / calls_file)
        return found

    # The derived files (samples.jsonl, results.json, report.md) are a pure function of the
    # configuration and the calls files. A stamp of those inputs lets an unchanged rerun print its
    # results without re-reading every call; any new call, or a failed call to retry, re-derives.
    def _stamp(self, run_path: Path, config_hash: str) -> dict[str, Any]:
        files = {}
        for name in (rd.GENERATION_CALLS, rd.JUDGING_CALLS):
            path = run_path / name
            stat = path.stat() if path.exists() else None
            files[name] = [stat.st_size, stat.st_mtime_ns] if stat else None
        from rolebench_eval import __version__

        return {"config_hash": config_hash, "rbe_version": __version__, "calls_files": files}

    def _write_stamp(self, run_path: Path, config_hash: str) -> None:
        stamp = {
            **self._stamp(run_path, config_hash),
            "calls_used": {k: self.calls_made.get(k, 0) + self.calls_reused.get(k, 0) for k in ("generation", "judging")},
            "failed_calls": self.failed_calls,
        }
        rd.write_json_atomic(run_path / rd.DERIVED_STAMP, stamp)

    def _derived_if_current(self, run_path: Path, config_hash: str) -> RunResult | None:
        try:
            stamp = json.loads((run_path / rd.DERIVED_STAMP).read_text(encoding="utf-8"))
            results = json.loads((run_path / rd.RESULTS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        current = self._stamp(run_path, config_hash)
        if stamp.get("failed_calls", 1) or any(stamp.get(k) != v for k, v in current.items()):
            return None
        if results.get("config_hash") != config_hash:
            return None
        used = dict(stamp.get("calls_used", {}))
        return RunResult(run_path, results, {kind: 0 for kind in used}, used, list(results.get("incomplete") or []))

    def _record_reuse(self, run_path: Path, generation: CallStore, judging: CallStore) -> None:
        if not (generation.reused_from or judging.reused_from):
            return
        for name, store in [("answers_reused_from", generation), ("judgments_reused_from", judging)]:
            if store.reused_from:
                self.log(f"{name.replace('_', ' ')}: {', '.join(sorted(store.reused_from))}")
        manifest_path = run_path / rd.MANIFEST
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for name, store in [("answers_reused_from", generation), ("judgments_reused_from", judging)]:
            if store.reused_from:
                manifest[name] = sorted(set(manifest.get(name, [])) | store.reused_from)
        rd.write_json_atomic(manifest_path, manifest)

    def _drive(
        self, evaluations: dict[str, Evaluation], roles: dict[str, ModelSpec], store: CallStore
    ) -> dict[str, TaskOutcome]:
        """Advance all tasks stage by stage; each model gets one batch per stage for all tasks."""
        outcomes: dict[str, TaskOutcome] = {}
        pending: dict[str, list[ModelCall]] = {}
        for name, evaluation in evaluations.items():
            try:
                pending[name] = next(evaluation)
            except StopIteration as stop:
                outcomes[name] = stop.value
        while pending:
            # Grouped by model, not by role: the examples model is often the judge itself, and a
            # model gets one batch per stage however many roles it plays.
            by_model: dict[str, list[tuple[str, int]]] = {}
            specs: dict[str, ModelSpec] = {}
            for name, calls in pending.items():
                for index, call in enumerate(calls):
                    if call.model not in roles:
                        raise UsageError(f"task {name} asked for model role {call.model!r}, which this run has no model for")
                    identity = spec_identity(roles[call.model], self.config.backend_options)
                    specs[identity] = roles[call.model]
                    by_model.setdefault(identity, []).append((name, index))
            replies: dict[str, list[Completion | None]] = {n: [None] * len(c) for n, c in pending.items()}
            for identity, refs in by_model.items():
                calls = [pending[n][i] for n, i in refs]
                stage = "+".join(sorted({call.stage for call in calls}))
                results = self._call(
                    store, specs[identity], stage, [call.request for call in calls], "judging",
                    [call.check for call in calls],
                )
                for (name, index), call, result in zip(refs, calls, results):
                    # Counted by role and the call's own stage, not the batch's joined stage.
                    self.tally.add(call.model, specs[identity].label, call.stage, result.completion, made=result.made)
                    replies[name][index] = result.completion
            advanced: dict[str, list[ModelCall]] = {}
            for name in pending:
                try:
                    advanced[name] = evaluations[name].send(replies[name])  # type: ignore[arg-type]
                except StopIteration as stop:
                    outcomes[name] = stop.value
            pending = advanced
        return outcomes

    def _write(
        self,
        run_path: Path,
        manifest: dict[str, Any],
        tasks: list[Task],
        outcomes: dict[str, TaskOutcome],
        judges: list[ModelSpec],
        model: ModelSpec,
        smoke: bool,
    ) -> dict[str, Any]:
        records = [r for t in tasks for r in outcomes[t.name].records]
        rd.write_jsonl_atomic(run_path / rd.SAMPLES, records)
        task_results = {}
        for task in tasks:
            outcome = outcomes[task.name]
            task_manifest = manifest["tasks"][task.name]
            task_results[task.name] = {
                "task": task.name,
                "version": task.version,
                "protocol": (task_manifest.get("protocol") or {}).get("name"),
                "roleplay_template": (task_manifest.get("roleplay_template") or {}).get("name"),
                "unscored_policy": task_manifest.get("unscored_policy"),
                "judges": [j.label for j in judges] if task_manifest.get("uses_judges", True) else [],
                "metric_kinds": task.metric_kinds(),
                **outcome.results,
                "warnings": outcome.warnings,
            }
        results = {
            "schema": RESULTS_SCHEMA,
            "run_id": run_path.name,
            "config_hash": manifest["config_hash"],
            "model": {"label": model.label, "backend": model.backend, "identity": manifest["model"]["identity"]},
            "judges": [{"label": j.label, "backend": j.backend, "model": j.model if not j.smoke else "embedded", "smoke": j.smoke} for j in judges],
            "examples_model": (manifest.get("examples_model") or {}).get("label"),
            "smoke_judge": smoke,
            "smoke_warning": SMOKE_JUDGE_WARNING if smoke else None,
            "deviations": manifest["deviations"],
            "tasks": task_results,
            "calls": self.tally.section(),
            "incomplete": self._incomplete(task_results),
        }
        rd.write_json_atomic(run_path / rd.RESULTS, results)
        from rolebench_eval.html_report import write_run_html
        from rolebench_eval.report import render_run_report

        rd.write_text_atomic(run_path / rd.REPORT, render_run_report(results))
        write_run_html(run_path)
        return results

    def _incomplete(self, task_results: dict[str, Any]) -> list[str]:
        """Why this run's numbers are not final: failed calls (a rerun retries them), empty tasks."""
        reasons = [f"{line} (a rerun retries them)" for line in self.tally.failure_lines()]
        for name, task in task_results.items():
            if nothing_scored(task):
                why = (task.get("items") or {}).get("unscored_reasons") or {}
                detail = "; ".join(f"{n}x {reason}" for reason, n in list(why.items())[:3])
                reasons.append(f"{name}: nothing could be scored" + (f" ({detail})" if detail else ""))
        return reasons


def _sanitized_argv() -> list[str]:
    # Keys are read from the environment, never from flags; a key inside --model-args or a URL
    # must still not reach the manifest.
    return [redact(argument) for argument in sys.argv]
