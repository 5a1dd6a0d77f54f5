"""The scheduler's own CPU cost per call, and its memory, on full PersonaGym (issue 9).

Runs full PersonaGym (`--tasks personagym`, protocol `opencharacter-full`: per persona 50 answers,
50 score-example calls, one per question, and 10 judgments of 5 questions each; 200 personas:
10,000 + 10,000 + 2,000 calls) through the real `Runner` with an in-process backend that answers
instantly with replies rbe parses (`rolebench_eval.running.runner.build_backend` replaced, as the tests'
ScriptedBackend does). With no model time, everything the process spends is rbe's: scheduling,
call keys and the call store, checks, parsing, records and reports. Each number of personas runs in
a fresh interpreter (its own peak RSS; Linux carries a parent's peak into a forked child) in a fresh
results directory, and reports process CPU seconds (user + system) per call for the run alone
(imports excluded), wall time, and peak RSS against a process that only imported rbe.

    .venv/bin/python bench/bench_scheduler_overhead.py                  # 50, 100 and 200 personas
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXAMPLES = "\n".join(f'Score {k}: Response - "an example answer at level {k}"' for k in range(1, 6))
JUDGMENT = " ".join(f"({k}) Evaluation: The response fits the persona. Therefore, the final score is 4"
                    for k in range(1, 6))
ANSWER = "An answer in character, about as long as a short paragraph. " * 4


class Instant:
    """A backend that answers every request at once (no model time), counting what it served."""

    def __init__(self, label: str, counts: dict[str, int]):
        self.label, self.counts = label, counts

    identity = property(lambda self: f"instant:{self.label}")

    def describe(self) -> dict[str, str]:
        return {"backend": "instant", "name": self.label}

    def generate(self, requests: Sequence[Any], on_result: Callable[[int, Any], None]) -> None:
        from rolebench_eval.requests import Completion, Usage

        for index, request in enumerate(requests):
            if self.label != "judge":
                kind, text = "answer", ANSWER
            elif request.messages[0].role == "user":  # score examples: one user message
                kind, text = "examples", EXAMPLES
            else:
                kind, text = "judge", JUDGMENT
            self.counts[kind] = self.counts.get(kind, 0) + 1
            on_result(index, Completion(text=text, finish_reason="stop", usage=Usage(100, 50)))

    def close(self) -> None:
        pass


def measure(personas: int, protocol: str) -> dict[str, Any]:
    """One run in this process (called in a fresh child)."""
    import rolebench_eval.running.runner as runner

    imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts: dict[str, int] = {}
    runner.build_backend = lambda spec, options: Instant(spec.label, counts)
    runner.preflight = lambda spec: None  # the judge's URL points at nothing; no endpoint check
    with tempfile.TemporaryDirectory(prefix="rbe_overhead_") as tmp:
        config = runner.RunConfig(
            tasks=["personagym"], judges=["openai:judge,base_url=http://127.0.0.1:9/v1"], protocol=protocol,
            limit=personas, results_dir=Path(tmp), progress=False, max_tokens=64, write_leaderboard=False,
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = runner.Runner(config, log=lambda m: None).run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        files = {p.name: p.stat().st_size / 2**20 for p in (result.run_dir / "calls").glob("*.jsonl")}
        samples = sum(1 for _ in (result.run_dir / "samples.jsonl").open())
    calls = sum(counts.values())
    return {"personas": personas, "counts": counts, "calls": calls, "samples": samples, "cpu_s": cpu,
            "wall_s": wall, "cpu_ms_per_call": 1000 * cpu / calls if calls else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "imported_rss_mib": imported_rss, "calls_files_mib": files,
            "incomplete": bool(getattr(result, "incomplete", False))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", default="50,100,200", help="comma-separated numbers of personas")
    parser.add_argument("--protocol", default="opencharacter-full")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.protocol)))
        return
    header = ("personas", "answers", "examples", "judgments", "calls", "CPU s", "CPU ms per call", "wall s",
              "peak RSS MiB", "RSS after imports MiB", "calls files MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for personas in (int(p) for p in args.personas.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(personas), "--protocol", args.protocol],
                             capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{personas} personas: exit {out.returncode}\n{out.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        c = r["counts"]
        print(f"| {personas} | {c.get('answer', 0):,} | {c.get('examples', 0):,} | {c.get('judge', 0):,} | "
              f"{r['calls']:,} | {r['cpu_s']:.1f} | {r['cpu_ms_per_call']:.2f} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {r['imported_rss_mib']:.0f} | "
              f"{sum(r['calls_files_mib'].values()):.1f} |" + (" (run incomplete)" if r["incomplete"] else ""),
              flush=True)


if __name__ == "__main__":
    main()
