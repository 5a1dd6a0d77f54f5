"""The `rbe` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rolebench_eval import cli_checks
from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.cli_checks import positive_int
from rolebench_eval.cli_exits import run_command
from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from rolebench_eval.running.runner import RunConfig


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        options[key] = value
    return options


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="evaluate a model on tasks", description="Evaluate a model on tasks.")
    p.add_argument("--tasks", required=True, help="comma-separated task or group names (see `rbe ls`)")
    p.add_argument("--model", help="HF folder, GGUF file, or model name for API backends (default: the embedded model)")
    p.add_argument("--backend", help="hf (default for paths), openai, vllm, lm-eval")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the model under test (implies --backend openai); "
                                      "replicas serving the same model separated by '|': 'http://a:8000/v1|http://b:8000/v1'")
    p.add_argument("--model-args", help="lm-eval model arguments (with --backend lm-eval; --model is the lm-eval model type)")
    p.add_argument("--judge", action="append", default=[], metavar="SPEC",
                   help="judge model, repeatable: embedded, gpt-4o-2024-08-06, openai:NAME, hf:PATH, vllm:PATH; "
                        "options after commas: base_url=URL (replicas: URL|URL), api_key_env=VAR, label=NAME")
    p.add_argument("--judge-base-url", help="default OpenAI-compatible endpoint for API judges")
    p.add_argument("--examples-model", metavar="SPEC", help="model writing PersonaGym score examples (default: the first judge)")
    p.add_argument("--user-model", metavar="SPEC",
                   help="dialogue tasks: the model playing the user (SPEC as in --judge; default: the task's paper's "
                        "model with real judges, the embedded model in a smoke run)")
    p.add_argument("--baseline-model", metavar="SPEC",
                   help="pairwise dialogue tasks (RPBench-Auto): the baseline the model under test is compared "
                        "with (default as for --user-model; RPBench: gpt-4o-2024-05-13)")
    p.add_argument("--protocol", help="judging protocol (PersonaGym: opencharacter, opencharacter-full, personagym)")
    p.add_argument("--roleplay-template", help="role-play system prompt (PersonaGym: personagym, opencharacter)")
    p.add_argument("--limit", type=positive_int, help="first N personas (PersonaGym) or items per metric (RoleBench)")
    p.add_argument("--unscored-policy", default="exclude", choices=["exclude", "reference-zero"],
                   help="exclude (default): unscored items are counted, never scored; reference-zero: the reference code's zeros, only to reproduce published numbers")
    p.add_argument("--max-tokens", type=positive_int, help="override the protocol's max new tokens for answers (recorded)")
    p.add_argument("--judge-max-tokens", type=positive_int, help="override the protocol's max tokens for judge replies (recorded)")
    p.add_argument("--greedy-top-p", default="zero", choices=["zero", "one"],
                   help="judge top_p for greedy decoding: zero as the protocol sends it, or one for servers that reject 0 (vLLM)")
    p.add_argument("--judge-output", choices=["free", "guided"], default=None,
                   help="guided: judge replies constrained to the protocol's format (a recorded deviation); default: free, guided for the embedded smoke judge")
    p.add_argument("--seed", type=int, default=0, help="sampling seed sent with answer requests")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where runs are written (default: ./results)")
    p.add_argument("--include-path", action="append", default=[], help="extra folder of task plugins (repeatable)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", help="task-specific option (repeatable)")
    p.add_argument("--model-revision", metavar="REV",
                   help="the checkpoint's revision (tag, step, hash): recorded and part of the model's identity, so "
                        "answers of another revision served under the same name are never reused")
    p.add_argument("--fresh", action="store_true",
                   help="reuse no stored answer or judgment: make every call of this run anew (the new calls win on later reruns)")
    c = p.add_argument_group("cost")
    c.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="USD per million input and output tokens of an API model (repeatable), overriding "
                        "the dated table in rolebench_eval/scheduling/pricing.py; e.g. gpt-4o-2024-08-06=2.50,10.00")
    c.add_argument("--budget-usd", type=cli_checks.positive_float, metavar="X",
                   help="stop before the estimated cost of this run's calls would exceed X USD (exit 3; a rerun "
                        "continues); models without a price are not limited")
    c.add_argument("--max-calls", type=positive_int, metavar="N",
                   help="send at most N model calls in this run (exit 3 when more were needed; a rerun continues)")
    g = p.add_argument_group("backend")
    g.add_argument("--batch-size", type=positive_int, default=16, help="prompts per batch (hf, lm-eval)")
    g.add_argument("--concurrency", type=positive_int, default=None,
                   help="pin the requests in flight per API endpoint (openai) at N; default: adaptive")
    g.add_argument("--max-concurrency", type=positive_int, default=256,
                   help="cap of adaptive concurrency per API endpoint (openai; default 256)")
    g.add_argument("--device", default="auto", help="hf, lm-eval")
    g.add_argument("--dtype", default="auto", help="hf, vllm")
    g.add_argument("--chat-template", help="Jinja chat template file overriding the model's own")
    g.add_argument("--system-prompt-policy", default="fail", choices=["fail", "merge"],
                   help="when a chat template rejects the system role: fail, or merge it into the first user turn (recorded)")
    g.add_argument("--overlength-policy", default="error", choices=["error", "skip"],
                   help="prompts longer than the context: error, or record as skipped (never truncated)")
    g.add_argument("--request-timeout", type=cli_checks.positive_float, default=120.0, help="seconds per API request (openai)")
    g.add_argument("--max-retry-time", type=cli_checks.positive_float, default=600.0, help="total seconds of retries per API request (openai)")
    g.add_argument("--tensor-parallel-size", type=positive_int, default=1)
    g.add_argument("--pipeline-parallel-size", type=positive_int, default=1)
    g.add_argument("--data-parallel-size", type=positive_int, default=1)
    g.add_argument("--distributed-executor-backend", choices=["mp", "ray"], help="vLLM executor (ray for multi-node)")
    g.add_argument("--enforce-eager", action="store_true", help="vLLM: skip torch.compile/CUDA graphs (starts ~4x faster on CPU)")
    g.add_argument("--max-model-len", type=positive_int, help="vLLM: context length to allocate")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-leaderboard", action="store_true", help="do not regenerate leaderboard.md")
    p.add_argument("--no-wait", action="store_true",
                   help="if another rbe run holds this run directory, exit 2 (naming its PID) instead of waiting for it")


def _run_defaults() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    _add_run_parser(parser.add_subparsers())
    return vars(parser.parse_args(["run", "--tasks", "-"]))


def _check_run_flags(args: argparse.Namespace) -> None:
    """Refuse, before any call and any file, flags that are empty or cannot take effect."""
    from rolebench_eval.models import judge_spec, model_under_test
    from rolebench_eval.running.dialogue_roles import parse_role_spec

    cli_checks.check_not_blank({
        "--tasks": args.tasks, "--model": args.model, "--base-url": args.base_url, "--judge": args.judge,
        "--judge-base-url": args.judge_base_url, "--examples-model": args.examples_model,
        "--user-model": args.user_model, "--baseline-model": args.baseline_model,
        "--model-args": args.model_args, "--protocol": args.protocol,
        "--roleplay-template": args.roleplay_template, "--chat-template": args.chat_template,
    })
    cli_checks.check_results_dir(args.results_dir, must_exist=False)
    cli_checks.check_prices(args.price)
    model_backend = model_under_test(args.model, args.backend, args.base_url, args.model_args).backend
    specs = [*args.judge, *([args.examples_model] if args.examples_model else [])]
    backends = {model_backend, *(judge_spec(text, args.judge_base_url).backend for text in specs)}
    for flag, text in (("--user-model", args.user_model), ("--baseline-model", args.baseline_model)):
        if text:
            backends.add(parse_role_spec(text, flag, args.judge_base_url).backend)
    if not args.judge:
        backends.add("hf")  # the embedded judge, added when a task needs a judge
    cli_checks.check_backend_flags(args, _run_defaults(), model_backend, backends)
    cli_checks.check_concurrency_flags(args, _run_defaults())


def run_config(args: argparse.Namespace, *, progress: bool | None = None) -> RunConfig:
    """The RunConfig of parsed `rbe run` arguments, after the flag checks: the one mapping from
    flags to a run, shared by `rbe run` and `rolebench_eval.api.run` (which parses its keyword
    options with this same parser), so both make the same run directory, cache and resume.

    `progress`: the display when --no-progress is not given (None: only on a terminal).
    """
    from rolebench_eval.running.runner import RunConfig

    _check_run_flags(args)

    vllm_kwargs = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
        "data_parallel_size": args.data_parallel_size,
    }
    if args.enforce_eager:
        vllm_kwargs["enforce_eager"] = True
    if args.max_model_len:
        vllm_kwargs["max_model_len"] = args.max_model_len
    if args.distributed_executor_backend:
        vllm_kwargs["distributed_executor_backend"] = args.distributed_executor_backend
    return RunConfig(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        model=args.model,
        backend=args.backend,
        base_url=args.base_url,
        model_args=args.model_args,
        judges=args.judge,
        judge_base_url=args.judge_base_url,
        examples_model=args.examples_model,
        user_model=args.user_model,
        baseline_model=args.baseline_model,
        protocol=args.protocol,
        roleplay_template=args.roleplay_template,
        limit=args.limit,
        unscored_policy=args.unscored_policy,
        max_tokens=args.max_tokens,
        judge_max_tokens=args.judge_max_tokens,
        greedy_top_p=args.greedy_top_p,
        judge_output=args.judge_output,
        seed=args.seed,
        results_dir=args.results_dir,
        include_paths=args.include_path,
        task_options=_key_values(args.task_option, "--task-option"),
        backend_options=BackendOptions(
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            max_concurrency=args.max_concurrency,
            device=args.device,
            dtype=args.dtype,
            chat_template=args.chat_template,
            system_prompt_policy=args.system_prompt_policy,
            overlength_policy=args.overlength_policy,
            request_timeout_s=args.request_timeout,
            max_retry_time_s=args.max_retry_time,
        ),
        vllm_kwargs=vllm_kwargs,
        progress=False if args.no_progress else progress,
        write_leaderboard=not args.no_leaderboard,
        wait_for_lock=not args.no_wait,
        model_revision=args.model_revision,
        fresh=args.fresh,
        prices=args.price,
        budget_usd=args.budget_usd,
        max_calls=args.max_calls,
    )


def _run(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis.report import render_terminal
    from rolebench_eval.running.runner import Runner

    config = run_config(args)
    result = Runner(config).run()
    print(render_terminal(result.results))
    made = sum(result.calls_made.values())
    reused = sum(result.calls_reused.values())
    print(f"\nmodel calls made: {made}; reused from the run directory: {reused}")
    print(f"wrote {result.run_dir} (results.json, samples.jsonl, report.md, manifest.json)")
    if result.incomplete:
        for reason in result.incomplete:
            print(f"rbe: run incomplete: {reason}", file=sys.stderr)
        print("rbe: exit 3 (run incomplete): the files above are written; a rerun of the same command "
              "resumes", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _ls(args: argparse.Namespace) -> int:
    from rolebench_eval.models import BACKENDS, KNOWN_JUDGES, backend_available
    from rolebench_eval.task_registry import discover

    registry = discover(args.include_path)
    for why in registry.broken.values():
        # Shown, not fatal to the listing: the other plugins and the built-in tasks still work.
        print(f"rbe: error: broken {why}", file=sys.stderr)
    print("tasks:")
    for name, spec in sorted(registry.tasks.items()):
        protocols = spec.config.get("protocols")
        extra = f" [protocols: {', '.join(protocols)}; default {spec.config.get('default_protocol')}]" if protocols else ""
        if spec.config.get("aliases"):
            extra += f" [also: {', '.join(spec.config['aliases'])}]"
        print(f"  {name:<22} v{spec.version}  {spec.description}{extra}  ({spec.origin})")
    print("groups:")
    for name, members in sorted(registry.groups.items()):
        print(f"  {name:<22} {', '.join(members)}")
    print("backends:")
    for name, (_, _, what) in BACKENDS.items():
        state = "available" if backend_available(name) else "not installed"
        print(f"  {name:<22} {what} ({state})")
    print("judges (any OpenAI-compatible model name or local path also works):")
    for name, what in KNOWN_JUDGES.items():
        print(f"  {name:<32} {what}")
    print("protocols (per task: see the task lines above):")
    try:
        from rolebench_eval.tasks.personagym.protocols import PROTOCOLS
        from rolebench_eval.tasks.personagym.roleplay import TEMPLATES

        for name, protocol in PROTOCOLS.items():
            print(f"  {name:<22} {protocol.description}")
        print("  rolellm                RoleBench: ROUGE-L CUS/RAW/SPE, and win rate against RoleGPT with --judge")
        print("  rpbench-auto           RPBench-Auto: the judge plays the user; each round it picks the model's or the "
              "baseline's reply (both orders by default), the dialogue goes on with the winner; win rate over dialogues")
        print("  pingpong-v2            PingPong v2: a simulated user (--user-model) talks with the character; judges score "
              "every player turn 1-5 per criterion; means over dialogues, refusals counted")
        print("role-play templates:")
        for name, template in TEMPLATES.items():
            print(f"  {name:<22} PersonaGym: {template.source}")
        print(f"  {'rolellm-en, rolellm-zh':<22} RoleBench: the RoleLLM system instruction, English or Chinese")
    except ImportError:
        pass
    from rolebench_eval import naming

    stems = naming.table_file_stems()
    print("paper tables (rbe table NAME):")
    print(f"  {', '.join(naming.table_name(stem) for stem in stems)}")
    print("names and aliases (every command):")
    for line in naming.alias_lines(stems, registry.aliases()):
        print(f"  {line}")
    return EXIT_USAGE if registry.broken else EXIT_OK


def _leaderboard(args: argparse.Namespace) -> int:
    from rolebench_eval.analysis.leaderboard import filtered_leaderboard, write_leaderboard

    cli_checks.check_results_dir(args.results_dir, must_exist=True)
    if args.tasks or args.metrics:
        split = lambda text: [part.strip() for part in (text or "").split(",") if part.strip()]  # noqa: E731
        print(filtered_leaderboard(args.results_dir, split(args.tasks), split(args.metrics)), end="")
        return EXIT_OK
    print(f"wrote {write_leaderboard(args.results_dir)}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbe", description="rolebench-eval: evaluate role-playing language models",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    ls = sub.add_parser("ls", help="list tasks, groups, backends, judges and protocols (exit 2 if a task plugin is broken)")
    ls.add_argument("--include-path", action="append", default=[])
    lb = sub.add_parser("leaderboard", help="regenerate leaderboard.md from results/runs")
    lb.add_argument("--results-dir", type=Path, default=Path("results"))
    lb.add_argument("--tasks", help="only these tasks (comma-separated); printed, leaderboard.md is left as it is")
    lb.add_argument("--metrics", help="only these metrics, named as in `rbe compare` (PScore-L, EA...); printed")
    from rolebench_eval import cli_analysis, cli_questions

    cli_analysis.add_parsers(sub)
    cli_questions.add_parsers(sub)
    return parser


COMMANDS = {"run": _run, "ls": _ls, "leaderboard": _leaderboard}
EXIT_CODES_HELP = """exit codes (every command):
  0    success
  1    regression found (rbe regress only)
  2    bad input or usage: a flag, file, line or field (named in the one-line message)
  3    run incomplete: a call failed after its retries, or nothing could be scored;
       the files are written and rerunning the same command resumes
  4    internal error (a bug): the traceback is in the log file named in the message
  130  interrupted (Ctrl-C); every finished call is saved"""


def main(argv: list[str] | None = None) -> int:
    from rolebench_eval.cli_analysis import COMMANDS as ANALYSIS_COMMANDS
    from rolebench_eval.cli_questions import COMMANDS as QUESTIONS_COMMANDS

    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse prints them and exits 2
    return run_command({**COMMANDS, **ANALYSIS_COMMANDS, **QUESTIONS_COMMANDS}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
