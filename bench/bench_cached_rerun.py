"""Benchmark 3: a fully cached rerun of full PersonaGym (10,000 samples) from a run directory.

Builds the run once with in-process scripted models (no real model can answer 10,000 questions
here), then times, each in a fresh process and measured side by side:
  rerun      the same command again: calls files unchanged, derived files read (the usual case);
  rederive   the same, after deleting the derived-files stamp: every call is read back from the
             calls files, every record and number recomputed, samples.jsonl rewritten;
and reports peak RSS for 50 and 200 personas, to show how memory grows with the number of samples.

    .venv/bin/python bench/bench_cached_rerun.py [--personas 200] [--protocol opencharacter]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCORES = {"Expected Action": 4, "Toxicity": 5, "Linguistic": 3, "Persona Consistency": 4, "Action Justification": 2}


class Scripted:
    def __init__(self, label: str):
        self.label = label

    identity = property(lambda self: f"scripted:{self.label}")

    def describe(self) -> dict:
        return {"backend": "scripted"}

    def generate(self, requests, on_result) -> None:
        from rolebench_eval.requests import Completion, Usage

        for index, request in enumerate(requests):
            content = request.messages[-1].content
            if self.label == "embedded":
                text = "An answer in character, about as long as a short paragraph. " * 4
            elif request.messages[0].role == "user":
                text = "\n".join(f'Score {k}: Response - "example answer {k}"' for k in range(1, 6))
            else:
                score = next((s for name, s in SCORES.items() if f"Evaluation Task:\\n\\n{name}" in content), 3)
                text = " ".join(
                    f"({k}) Evaluation: The response fits. Therefore, the final score is {score}" for k in range(1, 6)
                )
            on_result(index, Completion(text=text, finish_reason="stop", usage=Usage(100, 50)))

    def close(self) -> None:
        pass


def config(results: Path, personas: int, protocol: str):
    from rolebench_eval.running.runner import RunConfig

    return RunConfig(
        tasks=["personagym"], judges=["openai:judge,base_url=http://127.0.0.1:9/v1"], protocol=protocol,
        limit=personas, results_dir=results, progress=False, max_tokens=64, write_leaderboard=False,
    )


def build(results: Path, personas: int, protocol: str) -> Path:
    import rolebench_eval.running.runner as runner

    runner.build_backend = lambda spec, options: Scripted(spec.label)
    runner.preflight = lambda spec: None
    return runner.Runner(config(results, personas, protocol), log=lambda m: None).run().run_dir


CHILD = (
    "import resource, sys\n"
    "from rolebench_eval.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    "sys.exit(code)\n"
)


def child(results: Path, personas: int, protocol: str) -> dict:
    """The real `rbe run` command in a fresh interpreter; wall time includes start-up and imports."""
    args = ["run", "--tasks", "personagym", "--judge", "openai:judge,base_url=http://127.0.0.1:9/v1",
            "--protocol", protocol, "--limit", str(personas), "--max-tokens", "64",
            "--results-dir", str(results), "--no-leaderboard", "--no-progress"]
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    assert "model calls made: 0;" in out.stdout, out.stdout[-2000:]
    peak = float(out.stdout.split("PEAK_RSS_MIB")[-1].strip())
    return {"seconds": elapsed, "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--protocol", default="opencharacter")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(build(args.build, args.personas, args.protocol))
        return
    start = time.perf_counter()
    baseline = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, resource, rolebench_eval.cli, rolebench_eval.running.runner; "
         "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))"],
        capture_output=True, text=True, check=True).stdout)
    print(f"a process that only imports the CLI and runner: {time.perf_counter() - start:.2f} s, peak RSS {baseline:.0f} MiB")
    for personas in sorted({50, args.personas}):
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "results"
            # Built in its own process: a child's ru_maxrss includes its parent's peak at fork time
            # (Linux keeps it across exec), so the measuring process must stay small.
            start = time.perf_counter()
            run = Path(subprocess.run(
                [sys.executable, __file__, "--build", str(results), "--personas", str(personas), "--protocol", args.protocol],
                capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            built = time.perf_counter() - start
            sizes = {p.name: p.stat().st_size / 2**20 for p in [run / "calls/generation.jsonl", run / "calls/judging.jsonl", run / "samples.jsonl"]}
            n = sum(1 for _ in (run / "samples.jsonl").open())
            rerun = child(results, personas, args.protocol)
            (run / "calls/derived-stamp.json").unlink()
            rederive = child(results, personas, args.protocol)
            print(f"\n{personas} personas, protocol {args.protocol}: {n} samples; built in {built:.1f} s; "
                  + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items()))
            print(f"  rerun (unchanged calls):   {rerun['seconds']:.2f} s, peak RSS {rerun['peak_rss_mib']:.0f} MiB")
            print(f"  rederive from calls files: {rederive['seconds']:.2f} s, peak RSS {rederive['peak_rss_mib']:.0f} MiB")
            print(f"  ratio rederive / rerun: {rederive['seconds'] / rerun['seconds']:.1f}")


if __name__ == "__main__":
    main()
