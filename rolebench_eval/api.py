"""The Python API: run evaluations and analyse finished runs as pandas DataFrames.

    import rolebench_eval as rbe
    run = rbe.run(tasks="personagym-light", model="path/to/ckpt", judges=["gpt-4o-2024-08-06"], limit=20)
    run.metrics                      # one row per task x metric [x judge]
    run.samples                      # one row per sample
    rbe.compare("base-run", run)     # the paired table `rbe compare` prints

`run()` is `rbe run`: its keyword options are parsed by the same argument parser and mapped to the
same RunConfig by `cli.run_config`, so the API and the command line write the same run directory,
reuse the same calls and resume the same way. Everything else reads finished runs through the
modules the commands use (compare_runs, paired_stats, frames, run_samples).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rolebench_eval.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from rolebench_eval.analysis.loaded_runs import LoadedRun

# RunConfig field names that differ from the flag they come from (the rest are the same words).
_CONFIG_NAMES = {"judges": "judge", "include_paths": "include_path", "task_options": "task_option", "prices": "price"}
# RunConfig booleans that are the negation of a flag.
_NEGATED = {"write_leaderboard": "no_leaderboard", "wait_for_lock": "no_wait"}
# RunConfig fields set through the backend flags' own names.
_BY_FLAG_NAMES = {"backend_options": "batch_size=, device=, dtype=, concurrency=, request_timeout=, ...",
                  "vllm_kwargs": "tensor_parallel_size=, enforce_eager=, max_model_len=, ..."}


class _RaisingParser(argparse.ArgumentParser):
    """argparse reports a bad value by exiting; the API raises UsageError instead."""

    def error(self, message: str) -> Any:  # argparse's signature: never returns
        # Name the keyword the caller wrote: "argument --max-tokens: ..." -> "option max_tokens: ...".
        text = re.sub(r"(?:argument )?--([a-z0-9-]+)", lambda m: "option " + m.group(1).replace("-", "_"), message)
        raise UsageError(f"rolebench_eval.run(): {text}")


def _run_parser() -> argparse.ArgumentParser:
    from rolebench_eval.cli import _add_run_parser

    top = _RaisingParser(prog="rbe")
    _add_run_parser(top.add_subparsers(dest="command"))  # subparsers inherit _RaisingParser
    return top


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    return {action.dest: action for action in run._actions if action.option_strings and action.dest != "help"}


def _as_list(name: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [f"{key}={item}" for key, item in value.items()]
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, Sequence):
        return [str(item) for item in value]
    raise UsageError(f"rolebench_eval.run(): {name}= must be a string or a list of strings, not {type(value).__name__}")


def run_argv(tasks: str | Sequence[str], options: Mapping[str, Any]) -> list[str]:
    """The `rbe run` command line equivalent to `run(tasks, **options)` (None: the default).

    Option names are RunConfig fields (judges, include_paths, task_options, prices, write_leaderboard,
    wait_for_lock, ...) or the flags' own names with underscores (judge, batch_size, no_progress,
    request_timeout, ...); an unknown name is a UsageError naming it.
    """
    flags = _flags(_run_parser())
    argv = ["run", "--tasks", tasks if isinstance(tasks, str) else ",".join(tasks)]
    for name, value in options.items():
        if name in _BY_FLAG_NAMES:
            raise UsageError(f"rolebench_eval.run(): give {name} by the flags' names: {_BY_FLAG_NAMES[name]}")
        if name in _NEGATED:
            if value is not None and not isinstance(value, bool):
                raise UsageError(f"rolebench_eval.run(): {name}= must be True or False, not {value!r}")
            name, value = _NEGATED[name], (None if value is None else not value)
        dest = _CONFIG_NAMES.get(name, name)
        if dest not in flags or dest == "tasks":
            known = sorted({*flags, *_CONFIG_NAMES, *_NEGATED} - {"tasks"})
            raise UsageError(f"rolebench_eval.run(): unknown option {name!r}.{did_you_mean(name, known)} "
                             f"Options: {', '.join(known)}, progress.")
        if value is None:
            continue
        action, flag = flags[dest], flags[dest].option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise UsageError(f"rolebench_eval.run(): {name}= must be True or False, not {value!r}")
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            # FLAG=VALUE: a value that starts with '-' is still a value.
            argv += [f"{flag}={item}" for item in _as_list(name, value)]
        else:
            argv.append(f"{flag}={value}")
    return argv


@dataclass
class Run:
    """A finished run (or a baseline file): its files, and DataFrames built from them on first use."""

    path: Path | None  # the run directory; None for a baseline file
    run_id: str
    results: dict[str, Any]
    manifest: dict[str, Any]
    # Set by run(): why the run is incomplete (`rbe run` exits 3), and the calls made and reused.
    incomplete: list[str] = field(default_factory=list)
    calls_made: dict[str, int] = field(default_factory=dict)
    calls_reused: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per task x metric [x judge]: task, metric, name, kind, judge, value, std, n,
        unscored, ci_low, ci_high, reason (value None when nothing was scored)."""
        from rolebench_eval.analysis.frames import metrics_frame

        return metrics_frame(self.results)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per sample (README "Python API" for the columns; judge[LABEL].reply etc. per judge)."""
        from rolebench_eval.analysis.frames import samples_frame

        return samples_frame(self._run_dir("samples"), self.results)

    @cached_property
    def judgments(self) -> pd.DataFrame:
        """One row per judge reply to a sample (sample x judge x order)."""
        from rolebench_eval.analysis.frames import judgments_frame

        return judgments_frame(self._run_dir("judgments"), self.results)

    @property
    def per_unit(self) -> pd.DataFrame:
        """Per-unit values (personas, items) of every metric: one row per task x unit."""
        import pandas as pd

        rows = [{"task": task, "unit": unit, **(values or {})}
                for task, entry in (self.results.get("tasks") or {}).items()
                for unit, values in (entry.get("per_unit") or {}).items()]
        return pd.DataFrame(rows)

    def _run_dir(self, what: str) -> Path:
        if self.path is None:
            raise UsageError(f"{self.source} is a baseline file: it has no {what} (only results and manifest essentials).")
        return self.path

    def _loaded(self) -> LoadedRun:
        from rolebench_eval.analysis.loaded_runs import LoadedRun

        return LoadedRun(source=self.source or str(self.path), run_id=self.run_id, results=self.results,
                         manifest=self.manifest, is_baseline_file=self.path is None)

    def __repr__(self) -> str:
        tasks = ", ".join(self.results.get("tasks") or {})
        return f"Run({self.run_id!r}, tasks=[{tasks}], path={str(self.path) if self.path else None!r})"


def _from_loaded(loaded: LoadedRun) -> Run:
    return Run(path=loaded.run_dir, run_id=loaded.run_id, results=dict(loaded.results),
               manifest=dict(loaded.manifest), source=loaded.source)


def run(
    tasks: str | Sequence[str],
    model: str | None = None,
    judges: Sequence[str] = (),
    *,
    progress: bool | None = None,
    **options: Any,
) -> Run:
    """Evaluate `model` on `tasks` exactly as `rbe run` does, and return the run it wrote.

    `tasks`: task or group names ("personagym-light" or a list); `model`: a path or endpoint model
    name (None: the embedded model); `judges`: judge specs as for --judge. `options`: any other
    `rbe run` option by its RunConfig name or its flag's name with underscores (limit=20,
    results_dir="results", batch_size=8, base_url=..., task_options={"k": "v"}, fresh=True, ...).
    `progress`: the progress display (None: only on a terminal; a --no-progress equivalent is
    progress=False). Bad input raises UsageError (what `rbe run` exits 2 for). An incomplete run
    (what `rbe run` exits 3 for) is returned with the reasons in `.incomplete`.
    """
    from rolebench_eval.cli import run_config
    from rolebench_eval.running.runner import Runner

    if isinstance(judges, str):
        judges = [judges]
    everything = {"model": model, "judges": list(judges) or None, **options}
    argv = run_argv(tasks, everything)
    args = _run_parser().parse_args(argv)
    config = dataclasses.replace(run_config(args, progress=progress), command=["rbe", *argv])
    result = Runner(config).run()
    loaded = load_run(result.run_dir)
    loaded.incomplete = list(result.incomplete)
    loaded.calls_made, loaded.calls_reused = dict(result.calls_made), dict(result.calls_reused)
    return loaded


def load_run(path_or_id: str | Path | Run, results_dir: str | Path = "results") -> Run:
    """A finished run: a run directory, a baseline file, or a run id (or unique prefix) under
    `results_dir`, as every `rbe` command accepts."""
    if isinstance(path_or_id, Run):
        return path_or_id
    from rolebench_eval.analysis import loaded_runs

    return _from_loaded(loaded_runs.load_run(path_or_id, Path(results_dir)))


def load_runs(results_dir: str | Path = "results") -> pd.DataFrame:
    """Every finished run under `results_dir`, tidy: one row per run x task x metric [x judge], with
    run_id, model, judges, protocol, config_hash, date (when results.json was written, UTC),
    smoke_judge, then the metrics columns and the run's path."""
    from rolebench_eval.analysis.frames import runs_frame
    from rolebench_eval.cli_checks import check_results_dir

    check_results_dir(Path(results_dir), must_exist=True)
    return runs_frame(Path(results_dir))


def _pair(a: str | Path | Run, b: str | Path | Run, results_dir: str | Path) -> tuple[LoadedRun, LoadedRun]:
    from rolebench_eval.analysis import loaded_runs

    def reference(item: str | Path | Run) -> str:
        if isinstance(item, Run):
            return item.source or str(item.path)
        return str(item)

    first, second = loaded_runs.load_runs([reference(a), reference(b)], Path(results_dir))
    return first, second


def compare(
    a: str | Path | Run,
    b: str | Path | Run,
    *,
    metrics: Sequence[str] | None = None,
    allow_mismatch: bool = False,
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    resamples: int = 9999,
    results_dir: str | Path = "results",
) -> pd.DataFrame:
    """The paired comparison of run `b` against baseline `a` that `rbe compare a b` prints, one row
    per metric: metric, kind, n (paired units), n_only_a, n_only_b, mean_a, mean_b, diff (b - a),
    ci_low, ci_high (bootstrap), ci_method, test, statistic, p, p_adj, significant, note.

    Raises the same UsageError as the command for runs that are not comparable (unless
    allow_mismatch=True; the differences are then in `frame.attrs["mismatches"]`). `attrs` also
    holds label_a, label_b, correction, alpha, not_compared and non_blocking_differences.
    """
    import pandas as pd

    from rolebench_eval.analysis.compare_runs import compare_pair

    first, second = _pair(a, b, results_dir)
    pair = compare_pair(first, second, metrics=metrics, allow_mismatch=allow_mismatch, correction=correction,
                        alpha=alpha, seed=seed, n_resamples=resamples)
    rows = [{
        "metric": m.metric, "kind": m.kind, "n": m.n_paired, "n_only_a": m.n_only_a, "n_only_b": m.n_only_b,
        "mean_a": m.mean_a, "mean_b": m.mean_b, "diff": m.diff, "ci_low": m.ci95[0], "ci_high": m.ci95[1],
        "ci_method": m.ci_method, "test": m.test, "statistic": m.statistic, "p": m.p_value, "p_adj": m.p_adjusted,
        "significant": m.significant, "note": m.note,
    } for m in pair.comparison.metrics]
    frame = pd.DataFrame(rows)
    frame.attrs.update({
        "label_a": first.label, "label_b": second.label, "run_a": first.run_id, "run_b": second.run_id,
        "correction": pair.comparison.correction, "alpha": pair.comparison.alpha,
        "mismatches": list(pair.mismatches), "non_blocking_differences": list(pair.shown_differences),
        "not_compared": dict(pair.skipped),
    })
    return frame


def unit_differences(
    a: str | Path | Run,
    b: str | Path | Run,
    *,
    metrics: Sequence[str] | None = None,
    allow_mismatch: bool = False,
    results_dir: str | Path = "results",
) -> pd.DataFrame:
    """Per metric and unit: value in a, value in b, diff = b - a, largest |diff| first
    (`rbe compare a b --format csv`); the same refusal of non-comparable runs."""
    from rolebench_eval.analysis.side_by_side import unit_differences as differences

    first, second = _pair(a, b, results_dir)
    return differences(first, second, metrics=metrics, allow_mismatch=allow_mismatch)


__all__ = ["Run", "compare", "load_run", "load_runs", "run", "unit_differences"]
