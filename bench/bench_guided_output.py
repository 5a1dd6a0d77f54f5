"""Benchmark: the unscored rate of the embedded smoke judge with free and with guided output.

Runs PersonaGym-Light on the embedded SmolLM2-135M model (model under test, score-examples model
and judge) twice in one process, side by side: `--judge-output free` and `--judge-output guided`,
same personas, same limits. The second run reuses the first's answers (same model identity, so the
sibling run's calls), so the two differ only in how the judge and the examples model reply. Prints
per output mode: items, scored, unscored, the unscored rate, the reasons, the judging calls' time
and completion tokens.

    .venv/bin/python bench/bench_guided_output.py [--personas 3] [--max-tokens 32] [--judge-max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_once(results: Path, mode: str, personas: int, max_tokens: int, judge_max_tokens: int | None) -> dict:
    from rolebench_eval.running.runner import RunConfig, Runner

    config = RunConfig(
        tasks=["personagym-light"], limit=personas, judge_output=mode, results_dir=results,
        max_tokens=max_tokens, judge_max_tokens=judge_max_tokens, progress=False, write_leaderboard=False,
    )
    started = time.perf_counter()
    result = Runner(config, log=lambda message: None).run()
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines() if line]
    reasons = Counter(r["unscored_reason"] for r in records if r["unscored_reason"] is not None)
    judging = [json.loads(line) for line in (result.run_dir / "calls" / "judging.jsonl").read_text().splitlines() if line]
    by_stage: dict[str, Counter] = {}
    for call in judging:
        stage = by_stage.setdefault(call["stage"], Counter())
        stage["calls"] += 1
        stage["completion_tokens"] += (call["completion"].get("usage") or {}).get("completion_tokens") or 0
        stage["length_cut"] += call["completion"].get("finish_reason") == "length"
    return {"mode": mode, "n": len(records), "unscored": sum(reasons.values()), "reasons": reasons,
            "stages": by_stage, "wall_s": wall, "run_dir": result.run_dir.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32,
                        help="answer length (short: the answers only feed the judge; both modes share them)")
    parser.add_argument("--judge-max-tokens", type=int, default=None,
                        help="default: the embedded judge's smoke-test limit (128)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rbe-bench-guided-") as folder:
        rows = [run_once(Path(folder), mode, args.personas, args.max_tokens, args.judge_max_tokens)
                for mode in ("free", "guided")]
    print(f"PersonaGym-Light, {args.personas} personas, embedded SmolLM2-135M as model, examples model and judge; "
          f"answers {args.max_tokens} tokens, judge replies {args.judge_max_tokens or 128} tokens")
    print(f"{'output':<8} {'items':>5} {'scored':>6} {'unscored':>8} {'rate':>6}  judging calls (completion tokens, cut at max_tokens)  wall")
    for row in rows:
        stages = "; ".join(
            f"{name} {c['calls']} ({c['completion_tokens']} tok, {c['length_cut']} cut)" for name, c in sorted(row["stages"].items())
        )
        rate = row["unscored"] / row["n"] if row["n"] else float("nan")
        print(f"{row['mode']:<8} {row['n']:>5} {row['n'] - row['unscored']:>6} {row['unscored']:>8} {rate:>6.0%}  {stages}  {row['wall_s']:.0f}s")
    for row in rows:
        print(f"\n{row['mode']}: unscored reasons")
        for reason, count in row["reasons"].most_common():
            print(f"  {count}x {reason}")


if __name__ == "__main__":
    main()
