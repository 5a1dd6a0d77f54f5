"""`rbe questions generate|ls|show|light|check`: question sets for the user's own personas.

Exit codes (errors.py): 0 success; 2 bad input (a flag, a persona file's line, a folder that is
not a set); 3 generation incomplete (a persona's environment selection or a call failed after its
retries, a budget stopped it, or --strict refused a set with short tasks): the calls are saved and a
rerun of the same command continues.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rolebench_eval import cli_checks
from rolebench_eval.cli_checks import positive_int
from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_OK

# `rbe questions generate`'s backend flags and their defaults (checked against the generator's backend).
GENERATE_DEFAULTS = {"batch_size": 16, "concurrency": None, "request_timeout": 120.0, "device": "auto"}

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `rbe questions` and its subcommands on the `rbe` parser."""
    q = sub.add_parser("questions", help="question sets for your own personas (PersonaGym question generation)",
                       description="Generate, inspect, derive and check PersonaGym question sets.")
    qsub = q.add_subparsers(dest="questions_command", required=True)

    g = qsub.add_parser("generate", help="generate a question set from a persona file",
                        description="For each persona: environment selection, then N questions for each of "
                                    "the five tasks, with the reference code's requests.")
    g.add_argument("--personas", type=Path, required=True, metavar="FILE",
                   help=".txt (one per line), .json/.jsonl (strings or {name, description}), .csv (--column)")
    g.add_argument("--generator", required=True, metavar="SPEC",
                   help="embedded, a model name (OpenAI-compatible, e.g. gpt-4o-2024-08-06), openai:NAME, hf:PATH, "
                        "vllm:PATH; options after commas as for --judge (base_url=URL, api_key_env=VAR, label=, revision=)")
    g.add_argument("--generator-base-url", metavar="URL", help="OpenAI-compatible endpoint of an API generator")
    g.add_argument("--output", type=Path, required=True, metavar="DIR", help="the question set's folder")
    g.add_argument("--num-questions", type=positive_int, default=10, help="questions per task (reference: 10)")
    g.add_argument("--column", help="CSV: the column holding the persona descriptions (default: persona or description)")
    g.add_argument("--limit", type=positive_int, help="first N personas of the file")
    g.add_argument("--strict", action="store_true", help="refuse (do not write) a set with a task short of N questions")
    g.add_argument("--max-tokens", type=positive_int, help="override the protocol's 3000 max tokens (recorded)")
    g.add_argument("--parse", default="reference", choices=["reference", "lenient"],
                   help="reference (default): the reply must be a Python list literal, as the reference parses it; "
                        "lenient: also numbered, bulleted or comma-separated items (recorded; for small local generators)")
    g.add_argument("--seed", type=int, help="send a sampling seed (attempt k: seed+k-1; recorded); default: none, as the reference")
    g.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="USD per million input and output tokens (as for rbe run)")
    g.add_argument("--budget-usd", type=cli_checks.positive_float, metavar="X", help="stop before the estimated cost exceeds X")
    g.add_argument("--max-calls", type=positive_int, metavar="N", help="send at most N calls (exit 3; a rerun continues)")
    g.add_argument("--batch-size", type=positive_int, default=GENERATE_DEFAULTS["batch_size"], help="prompts per batch (hf)")
    g.add_argument("--concurrency", type=positive_int, help="pin the requests in flight (openai)")
    g.add_argument("--request-timeout", type=cli_checks.positive_float, default=GENERATE_DEFAULTS["request_timeout"],
                   help="seconds per API request (openai)")
    g.add_argument("--device", default=GENERATE_DEFAULTS["device"], help="hf")
    g.add_argument("--no-wait", action="store_true", help="exit 2 if another rbe holds the folder")
    g.add_argument("--no-progress", action="store_true", help="no progress display")

    ls = qsub.add_parser("ls", help="list question sets")
    ls.add_argument("folders", nargs="*", type=Path, default=[Path("questions")],
                    help="sets, or folders holding sets (default: ./questions)")
    ls.add_argument("--format", default="text", choices=["text", "json"])

    show = qsub.add_parser("show", help="a set's manifest and per-persona counts, or one persona's questions")
    show.add_argument("folder", type=Path, metavar="DIR")
    show.add_argument("--persona", metavar="ID", help="print this persona's environments and questions")

    light = qsub.add_parser("light", help="derive a PersonaGym-Light set (the first question of each task)")
    light.add_argument("folder", type=Path, metavar="DIR")
    light.add_argument("--output", type=Path, metavar="OUT", help=f"default: DIR{'_personagym-light'}")

    check = qsub.add_parser("check", help="quality checks: near-duplicates, off-setting questions, length outliers")
    check.add_argument("folder", type=Path, metavar="DIR")
    check.add_argument("--format", default="text", choices=["text", "json"])
    check.add_argument("--max-lines", type=positive_int, default=50, help="findings printed (text format)")
    check.add_argument("--judge", metavar="SPEC", help="also ask this judge whether each question fits its persona and "
                                                       "environments (one greedy call per question; rbe's own prompt)")
    check.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint of an API judge")
    check.add_argument("--judge-max-tokens", type=positive_int, help="max tokens of each judge reply (default 96)")


def _questions(args: argparse.Namespace) -> int:
    return _SUBCOMMANDS[args.questions_command](args)


COMMANDS["questions"] = _questions


def _generate(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis.report import calls_lines
    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.questions.generate_run import GenerateConfig, generate

    cli_checks.check_not_blank({"--generator": args.generator, "--generator-base-url": args.generator_base_url,
                                "--column": args.column})
    cli_checks.check_prices(args.price)
    # As `rbe run` does: a backend flag the generator's backend does not read is refused.
    from rolebench_eval.models import judge_spec

    backend = judge_spec(args.generator, args.generator_base_url).backend
    cli_checks.check_backend_flags(args, GENERATE_DEFAULTS, backend, {backend})
    config = GenerateConfig(
        personas=args.personas, generator=args.generator, output=args.output, num_questions=args.num_questions,
        column=args.column, strict=args.strict, limit=args.limit, max_tokens=args.max_tokens,
        generator_base_url=args.generator_base_url,
        backend_options=BackendOptions(batch_size=args.batch_size, concurrency=args.concurrency,
                                       device=args.device, request_timeout_s=args.request_timeout),
        prices=args.price, budget_usd=args.budget_usd, max_calls=args.max_calls,
        wait_for_lock=not args.no_wait, progress=False if args.no_progress else None,
        parse=args.parse, seed=args.seed,
    )
    result = generate(config)
    totals = result.manifest.get("totals") or {}
    print(f"question set {result.output}: {totals.get('personas_with_questions')} persona(s), "
          f"{totals.get('questions')} question(s), {totals.get('short_tasks')} task(s) short of "
          f"{args.num_questions}; questions sha256 {str(result.manifest.get('questions_sha256') or '-')[:12]}")
    for problem in result.problems:
        print(f"  short or failed: {problem}")
    print("\n".join(["", *calls_lines({"calls": result.calls_section})]))
    print(f"\nmodel calls made: {result.calls_made}; reused from the set's calls: {result.calls_reused}")
    if result.written:
        print(f"wrote {result.output} (one <persona>.json per persona, question-set.json, calls.jsonl)")
    if result.incomplete:
        for reason in result.incomplete:
            print(f"rbe: generation incomplete: {reason}", file=sys.stderr)
        print("rbe: exit 3 (incomplete): every call is saved; a rerun of the same command retries what failed",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _ls(args: argparse.Namespace) -> int:
    from rolebench_eval.questions.question_sets import find_sets, summary_row

    rows = [summary_row(folder) for folder in find_sets(args.folders)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no question sets in {', '.join(str(f) for f in args.folders)}")
        return EXIT_OK
    header = ("set", "kind", "personas", "questions", "short", "generator", "created", "sha256")
    table = [header, *[(r["set"], r["kind"], r["personas"], r["questions"], r["short_tasks"], r["generator"],
                        r["created"], r["sha256"]) for r in rows]]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from rolebench_eval.questions.question_sets import show_lines

    print("\n".join(show_lines(args.folder, args.persona)))
    return EXIT_OK


def _light(args: argparse.Namespace) -> int:
    from rolebench_eval.questions.question_sets import derive_light

    output, manifest = derive_light(args.folder, args.output)
    totals = manifest["totals"]
    print(f"wrote {output}: {totals['personas_with_questions']} persona(s), {totals['questions']} question(s) "
          f"(first of each task); questions sha256 {manifest['questions_sha256'][:12]}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from rolebench_eval.questions import checks
    from rolebench_eval.questions.generation import GenerationInputs
    from rolebench_eval.questions.question_sets import load_set

    cli_checks.check_not_blank({"--judge": args.judge, "--judge-base-url": args.judge_base_url})
    qset = load_set(args.folder, "rbe questions check")
    findings = checks.check_set(qset, GenerationInputs.load().settings_list)
    calls = None
    if args.judge:
        from rolebench_eval.questions.judge_check import judge_findings

        judged, calls = judge_findings(qset, args.judge, base_url=args.judge_base_url,
                                       max_tokens=args.judge_max_tokens,
                                       log=lambda m: print(m, file=sys.stderr))
        findings += judged
    summary = checks.report(qset, findings)
    if calls is not None:
        summary["judge_calls"] = calls
    if args.format == "json":
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return EXIT_OK
    counts = ", ".join(f"{n} {check}" for check, n in sorted(summary["counts"].items())) or "nothing found"
    print(f"{qset.path}: {summary['questions']} question(s), {len(qset.personas)} persona(s): {counts}")
    for finding in findings[: args.max_lines]:
        print(f"  {finding.line()}")
    if len(findings) > args.max_lines:
        print(f"  ... {len(findings) - args.max_lines} more (--max-lines, or --format json for all)")
    if calls is not None:
        from rolebench_eval.analysis.report import calls_lines

        print("\n".join(["", *calls_lines({"calls": calls})]))
    return EXIT_OK


_SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": _generate, "ls": _ls, "show": _show, "light": _light, "check": _check,
}
