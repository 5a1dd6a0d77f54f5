"""`rbe compare`, `rbe regress`, `rbe baseline`, `rbe table` and `rbe report`: commands that read finished runs.

Exit codes (the table of errors.py, README "Exit codes"): 0 success (and every --fail-if-worse rule
passed), 1 a rule failed (a significant drop beyond its allowance; `regress` and `compare` with
rules), 2 bad input (cli_exits.run_command turns every RbeError into its exit code, argparse exits 2),
4 internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.cli_checks import check_results_dir, fraction, positive_int
from rolebench_eval.errors import EXIT_OK, EXIT_REGRESSION

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = function
        return function

    return register


# --------------------------------------------------------------------------------------------------
# Parsers


def _results_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where run ids are looked up (default: ./results)")


# Kept in step with rolebench_eval.analysis.paired_stats and multiple_comparisons (tests check it); not imported here because pandas
# and scipy take over a second to import and every `rbe` command builds this parser.
CORRECTIONS = ("holm", "bh")
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 9999


def _statistics_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("statistics")
    group.add_argument("--correction", default="holm", choices=CORRECTIONS,
                       help="multiple-comparison correction across metrics: holm (family-wise error, default) or bh (false discovery rate)")
    group.add_argument("--alpha", type=fraction, default=0.05, help="significance level after correction (default 0.05)")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default 0)")
    group.add_argument("--resamples", type=positive_int, default=DEFAULT_RESAMPLES,
                       help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    group.add_argument("--allow-mismatch", action="store_true",
                       help="compare runs whose protocol, judges, task version or data differ (flagged in the output)")
    group.add_argument("--fail-if-worse", action="append", default=[], metavar="METRIC:DELTA",
                       help="exit 1 if METRIC (PScore-L, EA, Expected Action, task/metric...: any case; ambiguous names are refused) drops by more "
                            "than DELTA (metric units; win rates are fractions) and the drop is significant; repeatable")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the analysis subcommands on the `rbe` parser."""
    p = sub.add_parser("compare", help="paired comparison of runs, metric by metric",
                       description="Paired comparison of runs (units: personas or items), each run against the first.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, baseline files or run ids (at least two)")
    p.add_argument("--metrics", help="comma-separated metrics to compare (default: all)")
    p.add_argument("--format", default="text", choices=["text", "markdown", "json", "csv"],
                   help="output format (default: text); csv: the per-unit differences (metric, unit, value_a, "
                        "value_b, diff), largest first, instead of the statistics")
    p.add_argument("--html", type=Path, metavar="OUT",
                   help="also write a side-by-side page (two runs): per metric the units that differ most, with both "
                        "answers, judge replies and scores, searchable")
    p.add_argument("--top", type=positive_int, default=10, help="units per metric on the --html page (default 10)")
    _results_dir(p)
    _statistics_options(p)

    p = sub.add_parser("regress", help="fail (exit 1) when a run is significantly worse than a baseline",
                       description="Regression gate: compare RUN with a baseline run or baseline file; exit 1 on a "
                                   "significant drop larger than allowed, 0 otherwise, 2 on bad input.")
    p.add_argument("--baseline", required=True, help="baseline run directory, run id or baseline file")
    p.add_argument("--run", required=True, help="candidate run directory, run id or baseline file")
    p.add_argument("--format", default="text", choices=["text", "markdown", "json"])
    _results_dir(p)
    _statistics_options(p)

    p = sub.add_parser("baseline", help="export a run as a self-contained baseline file to commit")
    actions = p.add_subparsers(dest="baseline_command", required=True)
    e = actions.add_parser("export", help="write results + per-unit values + manifest essentials to one JSON file")
    e.add_argument("run", metavar="RUN", help="run directory or run id")
    e.add_argument("--output", type=Path, help="file to write (default: <results-dir>/baselines/<model>__<tasks>.json)")
    e.add_argument("--name", help="name recorded in the file (default: the file name)")
    _results_dir(e)

    p = sub.add_parser("table", help="a paper's table with your runs as measured rows",
                       description="Re-render a published table (rows from the paper) with runs as measured rows. "
                                   "Without NAME, list the tables.")
    p.add_argument("name", nargs="?", metavar="NAME", help="table name (omit to list them)")
    p.add_argument("--runs", nargs="*", default=[], metavar="RUN", help="run directories, baseline files or run ids")
    p.add_argument("--task", help="the run task feeding the table (default: matched from the table's benchmark)")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    p.add_argument("--allow-mismatch", action="store_true",
                   help="show runs whose protocol or judge differ from the paper's (flagged ‡)")
    _results_dir(p)

    p = sub.add_parser("report", help="self-contained HTML report of all runs (or of one run)",
                       description="Write a self-contained HTML page (no network needed): leaderboard, charts, samples.")
    _results_dir(p)
    p.add_argument("--output", type=Path, help="HTML file to write (default: <results-dir>/report.html)")
    p.add_argument("--run", help="write only this run's page, RUN/report.html")
    p.add_argument("--no-run-pages", action="store_true", help="do not (re)write each run's report.html")
    p.add_argument("--max-samples", type=int, help="samples embedded per run (default: 50 on the site, 300 on a run page)")

    p = sub.add_parser("export", help="a run's samples and metrics as csv, parquet or jsonl files",
                       description="Write RUN's samples (one row per sample) and metrics (one row per task x metric "
                                   "[x judge]) as files for spreadsheets and dashboards.")
    p.add_argument("run", metavar="RUN", help="run directory or run id")
    p.add_argument("--format", default="csv", choices=["csv", "parquet", "jsonl"], help="file format (default: csv; parquet needs pyarrow)")
    p.add_argument("--output", type=Path, metavar="DIR", help="folder to write (default: <results-dir>/exports/<run id>)")
    _results_dir(p)


# --------------------------------------------------------------------------------------------------
# compare / regress


def _rules(texts: Sequence[str]) -> list[tuple[str, float]]:
    from rolebench_eval.analysis.compare_runs import parse_rule

    return [parse_rule(part.strip()) for text in texts for part in text.split(",") if part.strip()]


def _pairs(references: Sequence[str], args: argparse.Namespace, metrics: Sequence[str] | None) -> list[Any]:
    from rolebench_eval.analysis.compare_runs import compare_pair
    from rolebench_eval.analysis.loaded_runs import load_runs

    runs = load_runs(references, args.results_dir)
    rules = _rules(args.fail_if_worse)
    return [
        compare_pair(
            runs[0], run, metrics=metrics, rules=rules, allow_mismatch=args.allow_mismatch,
            correction=args.correction, alpha=args.alpha, seed=args.seed, n_resamples=args.resamples,
        )
        for run in runs[1:]
    ]


def _gate_lines(gate: Any) -> list[str]:
    lines = [f"regression gate ({gate.label_b} vs baseline {gate.label_a}): {'PASS' if gate.passed else 'FAIL'}"]
    for decision in gate.decisions:
        lines.append(f"  {'ok  ' if decision.passed else 'FAIL'} {decision.metric} (allowed drop {decision.max_drop:g}): {decision.reason}")
    return lines


def _pair_text(pair: Any, markdown: bool) -> str:
    from rolebench_eval.analysis import comparison_render

    a, b, comparison = pair.a, pair.b, pair.comparison
    head = "### " if markdown else ""
    bullet = "- " if markdown else "  "
    lines = [
        f"{head}{b.label} vs {a.label}",
        "",
        f"{bullet}a (baseline): {a.label}, {'baseline file' if a.is_baseline_file else 'run'} {a.run_id}",
        f"{bullet}b (candidate): {b.label}, {'baseline file' if b.is_baseline_file else 'run'} {b.run_id}",
        f"{bullet}tasks: {', '.join(pair.tasks)}; correction: {comparison.correction} across "
        f"{len(comparison.metrics)} metric{'' if len(comparison.metrics) == 1 else 's'}; alpha {comparison.alpha:g}",
    ]
    if pair.mismatches:
        lines += ["", ("> **" if markdown else "") + "WARNING: compared with --allow-mismatch; these runs differ, "
                  "so the differences below are not comparable:" + ("**" if markdown else "")]
        lines += [("> - " if markdown else "  - ") + problem for problem in pair.mismatches]
    if getattr(pair, "shown_differences", ()):
        # Sampling-only settings (seed, limit): shown so a reader knows, not blocking.
        lines += ["", f"{bullet}differences that do not affect comparability:"]
        lines += [("  - " if markdown else "    ") + text for text in pair.shown_differences]
    if a.results.get("smoke_judge") or b.results.get("smoke_judge"):
        lines += ["", f"{bullet}note: judged by the embedded smoke-test judge; its scores carry no meaning"]
    lines.append("")
    table = comparison_render.comparison_to_markdown(comparison) if markdown else comparison_render.comparison_to_text(comparison)
    lines.append(table.rstrip("\n"))
    if pair.skipped:
        lines += ["", "not compared:"]
        lines += [f"{'- ' if markdown else '  '}{name}: {why}" for name, why in pair.skipped.items()]
    if pair.gate is not None:
        lines += [""] + [("    " if markdown else "") + line for line in _gate_lines(pair.gate)]
    return "\n".join(lines) + "\n"


def _pair_dict(pair: Any) -> dict[str, Any]:
    from rolebench_eval.analysis import comparison_render

    def side(run: Any) -> dict[str, Any]:
        return {"label": run.label, "run_id": run.run_id, "source": run.source, "baseline_file": run.is_baseline_file,
                "config_hash": run.results.get("config_hash"), "smoke_judge": bool(run.results.get("smoke_judge"))}

    return {
        "a": side(pair.a),
        "b": side(pair.b),
        "tasks": list(pair.tasks),
        "comparable": not pair.mismatches,
        "allow_mismatch_used": bool(pair.mismatches),
        "mismatches": list(pair.mismatches),
        "non_blocking_differences": list(getattr(pair, "shown_differences", ())),
        "comparison": comparison_render.comparison_to_dict(pair.comparison),
        "not_compared": dict(pair.skipped),
        "gate": comparison_render.gate_to_dict(pair.gate) if pair.gate is not None else None,
    }


def _emit(pairs: Sequence[Any], fmt: str) -> int:
    failed = any(pair.gate is not None and not pair.gate.passed for pair in pairs)
    if fmt == "json":
        document = {
            "schema": "rolebench-eval/comparison/v1",
            "comparisons": [_pair_dict(pair) for pair in pairs],
            "gate_passed": None if all(pair.gate is None for pair in pairs) else not failed,
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print("\n".join(_pair_text(pair, markdown=fmt == "markdown") for pair in pairs), end="")
    return EXIT_REGRESSION if failed else EXIT_OK


@_command("compare")
def _compare(args: argparse.Namespace) -> int:
    from rolebench_eval.errors import UsageError

    if len(args.runs) < 2:
        raise UsageError("rbe compare needs at least two runs: the first is the baseline the others are compared with.")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if args.html is not None and len(args.runs) != 2:
        raise UsageError("rbe compare --html shows two runs side by side: give exactly two runs.")
    if args.format == "csv":
        return _compare_csv(args, metrics)
    pairs = _pairs(args.runs, args, metrics)
    status = _emit(pairs, args.format)
    if args.html is not None:
        _side_by_side(pairs[0].a, pairs[0].b, args, metrics, pairs[0].comparison)
    return status


def _side_by_side(a: Any, b: Any, args: argparse.Namespace, metrics: Sequence[str] | None, comparison: Any) -> None:
    from rolebench_eval.analysis import side_by_side

    path = side_by_side.write_html(a, b, args.html, metrics=metrics, top=args.top,
                                   allow_mismatch=args.allow_mismatch, comparison=comparison)
    print(f"wrote {path}", file=sys.stderr)


def _compare_csv(args: argparse.Namespace, metrics: Sequence[str] | None) -> int:
    """Per-unit differences of each run against the first, as CSV on stdout (no statistics:
    the gate still refuses runs that are not comparable, and --fail-if-worse needs the tests)."""
    import pandas as pd

    from rolebench_eval.analysis import side_by_side
    from rolebench_eval.analysis.loaded_runs import load_runs
    from rolebench_eval.errors import UsageError

    if args.fail_if_worse:
        raise UsageError("--fail-if-worse needs the paired tests: use --format text, markdown or json with it.")
    runs = load_runs(args.runs, args.results_dir)
    frames = [side_by_side.unit_differences(runs[0], run, metrics=metrics, allow_mismatch=args.allow_mismatch)
              for run in runs[1:]]
    if args.html is not None:
        _side_by_side(runs[0], runs[1], args, metrics, None)
    print(pd.concat(frames, ignore_index=True).to_csv(index=False), end="")
    return EXIT_OK


@_command("regress")
def _regress(args: argparse.Namespace) -> int:
    from rolebench_eval.errors import UsageError

    if not args.fail_if_worse:
        raise UsageError("rbe regress needs at least one --fail-if-worse METRIC:DELTA rule.")
    pairs = _pairs([args.baseline, args.run], args, metrics=None)
    status = _emit(pairs, args.format)
    if args.format != "json":
        verdict = "REGRESSION: exit 1" if status else "no significant regression beyond the allowed drops"
        print(verdict, file=sys.stderr)
    return status


# --------------------------------------------------------------------------------------------------
# baseline / table


@_command("baseline")
def _baseline(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis.loaded_runs import default_baseline_path, export_baseline, load_run
    from rolebench_eval.errors import UsageError

    run = load_run(args.run, args.results_dir)
    if run.is_baseline_file:
        raise UsageError(f"{args.run} is already a baseline file; export takes a run directory or run id.")
    output = args.output or default_baseline_path(run, args.results_dir)
    path = export_baseline(run, output, args.name)
    units = sum(len(task.results.get("per_unit") or {}) for task in run.tasks.values())
    print(f"wrote {path} (run {run.run_id}, tasks {', '.join(run.tasks)}, {units} units); "
          f"check it in and use it with `rbe regress --baseline {path} --run RUN --fail-if-worse METRIC:DELTA`")
    return EXIT_OK


@_command("table")
def _table(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis.loaded_runs import load_runs
    from rolebench_eval.errors import UsageError
    from rolebench_eval.analysis.paper_tables import list_tables, load_table, render_table

    if not args.name:
        for name in list_tables():
            table = load_table(name)
            print(f"{name:<24} {table.title} [{table.benchmark}; protocol {table.protocol}; judge {' + '.join(table.judges)}]")
        return EXIT_OK
    table = load_table(args.name)
    from rolebench_eval.analysis.table_rows import measured_rows

    rows = [row for run in load_runs(args.runs, args.results_dir) for row in measured_rows(run, table, args.task)]
    try:
        text = render_table(args.name, rows, fmt=args.format, allow_mismatch=args.allow_mismatch)
    except UsageError as error:
        # paper_tables speaks to Python callers; name the flag instead of the keyword argument.
        raise UsageError(str(error).replace("allow_mismatch=True", "--allow-mismatch")) from None
    print(text, end="")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# report


@_command("report")
def _report(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis import html_report
    from rolebench_eval.running import run_dir
    from rolebench_eval.analysis.loaded_runs import load_run
    from rolebench_eval.errors import UsageError

    if args.max_samples is not None and args.max_samples < 0:
        raise UsageError("--max-samples must be 0 or more")
    if args.run:
        run = load_run(args.run, args.results_dir)
        if run.run_dir is None:
            raise UsageError(f"{args.run} is a baseline file; a run page needs the run directory (samples.jsonl).")
        kwargs = {} if args.max_samples is None else {"max_samples": args.max_samples}
        print(f"wrote {html_report.write_run_html(run.run_dir, **kwargs)}")
        return EXIT_OK
    check_results_dir(args.results_dir, must_exist=True)
    for path in run_dir.find_runs(args.results_dir):
        # The page renderers index into results.json; a corrupted one is named here, before any
        # page is written, instead of failing halfway with a traceback.
        if (path / run_dir.RESULTS).is_file():
            run_dir.read_json(path / run_dir.RESULTS, "run results")
    if not args.no_run_pages:
        for path in run_dir.find_runs(args.results_dir):
            if (path / run_dir.RESULTS).is_file():
                html_report.write_run_html(path)
    output = args.output or args.results_dir / "report.html"
    kwargs = {} if args.max_samples is None else {"max_samples_per_run": args.max_samples}
    print(f"wrote {html_report.write_site_html(args.results_dir, output, **kwargs)}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# export


@_command("export")
def _export(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis import exports
    from rolebench_eval.analysis.frames import metrics_frame, samples_frame
    from rolebench_eval.analysis.loaded_runs import load_run
    from rolebench_eval.errors import UsageError

    exports.check_format(args.format)  # before reading anything: a missing pyarrow is named at once
    run = load_run(args.run, args.results_dir)
    if run.run_dir is None:
        raise UsageError(f"{args.run} is a baseline file; an export needs the run directory (samples.jsonl).")
    output = args.output or exports.default_output(args.results_dir, run.run_id)
    frames = {"samples": samples_frame(run.run_dir, run.results), "metrics": metrics_frame(run.results)}
    paths = exports.export_frames(frames, output, args.format)
    counts = ", ".join(f"{path} ({len(frame)} rows)" for path, frame in zip(paths, frames.values()))
    print(f"wrote {counts}")
    return EXIT_OK
