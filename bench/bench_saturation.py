"""How much of a batching server's peak throughput `rbe run` uses (issue 9's "before" and "after").

For each number of personas, runs the real `rbe run --tasks personagym-light --limit N` in a
fresh interpreter against a fresh simulated continuous-batching server (bench/sim_server.py; the
model under test and the judge both on it) with default flags and with `--concurrency 64`, in a
fresh results directory (no call reused), and prints side by side the share of the server's
theoretical peak that rbe achieved:

- over the server's busy span (first request to last reply: what the scheduling controls), and
- over the whole command (start-up, imports and report writing included);

with the bound set by the longest chain of dependent calls: a sample's judgment needs its answer
and its score examples, so even a perfect scheduler needs, for the longest chain, max(answer,
examples) + judgment tokens, one engine step each: at least the batch-1 step time each (a strict
bound), or the full-slots step time if the server is to stay full to the end. Today's runner also waits for every answer before the first examples call and for every
examples call before the first judgment: its chain is the sum of the three stages' longest calls,
shown as "stage-barrier bound".

    .venv/bin/python bench/bench_saturation.py                       # 8 and 32 personas, 64 slots
    .venv/bin/python bench/bench_saturation.py --slots 256 --gain 62 --personas 32 --modes default
    .venv/bin/python bench/bench_saturation.py --modes default --personas 32 --requests-per-s 30

It also prints rbe's own call account (results.json `calls.total`), the server's 429s, the share of
the allowed rate when a rate limit is set, and the mean running batch in each tenth of the span.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_server import SimConfig, SimServer  # noqa: E402

MODEL, JUDGE = "sim-policy", "sim-judge"


def chain_bounds(log: list[dict[str, Any]], config: SimConfig, total_tokens: int) -> dict[str, float]:
    """Best shares of peak a scheduler can reach given the dependencies (see module doc)."""
    answers = [e for e in log if e["kind"] == "answer"]
    examples = [e for e in log if e["kind"] == "examples"]
    judgments = [e for e in log if e["kind"] == "judge"]

    def longest(entries: list[dict[str, Any]], question: str) -> int:
        return max((e["completion_tokens"] for e in entries if any(question in i for i in e["items"])), default=0)

    chain = max(
        (max(a["completion_tokens"], longest(examples, a["items"][0])) + longest(judgments, a["items"][0])
         for a in answers),
        default=0,
    )
    barrier = sum(max((e["completion_tokens"] for e in group), default=0) for group in (answers, examples, judgments))
    ideal_s = total_tokens / config.peak_tokens_per_s

    def share(chain_tokens: int, step_s: float) -> float:
        return ideal_s / max(ideal_s, chain_tokens * step_s) if ideal_s else 0.0

    # At batch-1 step time: a strict bound. At full-slots step time: the bound for a run that
    # keeps the server full to the end (a tail run at small batches is faster per step but
    # leaves the server idle).
    one, full = config.step_time(1), config.step_time(config.slots)
    return {"chain_tokens": chain, "chain_bound": share(chain, one), "chain_bound_full": share(chain, full),
            "barrier_tokens": barrier, "barrier_bound": share(barrier, one),
            "barrier_bound_full": share(barrier, full)}


def run_once(personas: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    config = SimConfig(slots=args.slots, gain=args.gain, step_s=args.step_ms / 1000.0,
                       models=(MODEL, JUDGE), seed=args.seed, lifetime_s=args.timeout + 60,
                       requests_per_s=args.requests_per_s, tokens_per_s=args.tokens_per_s)
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)  # a local server: the placeholder key is used
    if args.rbe_pythonpath:
        env["PYTHONPATH"] = args.rbe_pythonpath
    with SimServer(config) as server, tempfile.TemporaryDirectory(prefix="rbe_sat_") as results:
        cmd = [sys.executable, "-m", "rolebench_eval.cli", "run", "--tasks", "personagym-light",
               "--limit", str(personas), "--base-url", server.base_url,
               "--model", JUDGE if args.one_model else MODEL,
               "--judge", f"openai:{JUDGE},base_url={server.base_url}", "--results-dir", results,
               "--no-progress", "--no-leaderboard"]
        if mode != "default":
            cmd += ["--concurrency", mode]
        start = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_start = os.getloadavg()[0]
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout,
                                  cwd=args.rbe_pythonpath or None)
            code, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, f"timed out after {args.timeout} s"
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # rbe's own CPU (user + system of the command; the server runs in this process).
        rbe_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        stats = server.stats()
        bounds = chain_bounds(server.log, config, stats["completion_tokens"])
        profile = server.batch_profile()
        calls = _rbe_calls(Path(results))
    share_wall = stats["completion_tokens"] / wall / stats["peak_tokens_per_s"] if wall else 0.0
    # Against a rate limit the ceiling is the allowed rate, not the engine's peak.
    span = stats["span_s"]
    allowed = []
    if args.requests_per_s and span:
        allowed.append(stats["completed"] / span / args.requests_per_s)
    if args.tokens_per_s and span:
        allowed.append((stats["prompt_tokens"] + stats["completion_tokens"]) / span / args.tokens_per_s)
    return {"personas": personas, "mode": mode, "exit": code, "stderr": stderr, "wall_s": wall, "rbe_cpu_s": rbe_cpu,
            "load_start": load_start,
            "share_wall": share_wall, "profile": profile, "calls": calls,
            "share_of_allowed": max(allowed) if allowed else None, **stats, **bounds}


def _rbe_calls(results: Path) -> dict[str, Any]:
    """rbe's own account of its calls (results.json `calls.total`): made, failed, not sent..."""
    found = sorted(results.glob("runs/*/results.json"))
    if not found:
        return {}
    return json.loads(found[0].read_text()).get("calls", {}).get("total", {})


def main() -> None:
    parser = argparse.ArgumentParser(description="rbe throughput as a share of a batching server's peak")
    parser.add_argument("--personas", default="8,32", help="comma-separated numbers of personas")
    parser.add_argument("--modes", default="default,64", help="'default' and/or --concurrency values")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--gain", type=float, default=13.6)
    parser.add_argument("--step-ms", type=float, default=1.0, help="engine step at batch 1 (time scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per rbe run")
    parser.add_argument("--requests-per-s", type=float, default=None, help="server rate limit (429 beyond)")
    parser.add_argument("--tokens-per-s", type=float, default=None,
                        help="server rate limit on prompt + completion tokens (429 beyond)")
    parser.add_argument("--one-model", action="store_true",
                        help="the model under test is the judge's model too (one lane, one controller)")
    parser.add_argument("--rbe-pythonpath", default=None,
                        help="run rbe from this source tree (e.g. an exported older commit)")
    args = parser.parse_args()
    config = SimConfig(slots=args.slots, gain=args.gain, step_s=args.step_ms / 1000.0)
    print(f"server: {args.slots} slots, batching gain {args.gain:g}x, step {args.step_ms:g} ms at batch 1, "
          f"{config.step_time(args.slots) * 1000:.2f} ms at full slots; peak {config.peak_tokens_per_s:,.0f} tok/s")
    rows = [run_once(int(p), m, args) for p in args.personas.split(",") for m in args.modes.split(",")]
    header = ("personas", "flags", "exit", "calls", "tokens", "span s", "share of peak (span)",
              "share (whole command)", "mean batch", "chain bound (batch 1 / full)", "stage-barrier bound (batch 1 / full)", "429",
              "max lag ms")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        flags = "default" if r["mode"] == "default" else f"--concurrency {r['mode']}"
        print(f"| {r['personas']} | {flags} | {r['exit']} | {r['completed']} | {r['completion_tokens']:,} | "
              f"{r['span_s']:.2f} | **{r['share_of_peak']:.0%}** | {r['share_wall']:.0%} | "
              f"{r['mean_batch_while_busy']:.1f} | {r['chain_bound']:.0%} / {r['chain_bound_full']:.0%} | "
              f"{r['barrier_bound']:.0%} / {r['barrier_bound_full']:.0%} | "
              f"{r['rate_limited']} | {r['max_lag_s'] * 1000:.1f} |")
    print()
    for r in rows:
        c = r["calls"]
        print(f"{r['personas']} personas, {r['mode']}: rbe calls made {c.get('made')}, failed {c.get('failed')}, "
              f"not sent {c.get('not_sent')}, retried attempts {c.get('retried_attempts')}; server 429s "
              f"{r['rate_limited']}" + (f"; share of the allowed rate {r['share_of_allowed']:.0%}"
                                        if r["share_of_allowed"] is not None else "")
              + f"; rbe CPU {r['rbe_cpu_s']:.1f} s in {r['wall_s']:.1f} s wall"
              + (f" ({1000 * r['rbe_cpu_s'] / c['made']:.2f} ms per call made, start-up included)"
                 if c.get("made") else "") + f"; load average {r['load_start']:.1f} at the start")
        print("  mean batch in each tenth of the span: " + " ".join(f"{b:.0f}" for b in r["profile"]))
    for r in rows:
        if r["exit"] != 0:
            tail = "\n".join(r["stderr"].strip().splitlines()[-5:])
            print(f"\n{r['personas']} personas, {r['mode']}: rbe exited {r['exit']}:\n{tail}")


if __name__ == "__main__":
    main()
