"""Benchmark 3: a fully cached rerun of full PersonaGym (10,000 samples) from a run directory.

Builds the run once with in-process scripted models (no real model can answer 10,000 questions
here), then times, each in a fresh process and measured side by side:
  rerun      the same command again: calls files unchanged, derived files read (the usual case);
  rederive   the same, after deleting the derived-files stamp: every call is read back from the
             calls files, every record and number recomputed, samples.jsonl rewritten;
and reports, for 50 and 200 personas: the size of the run directory against its calls files, and
wall time, CPU time (user + system: the machine is shared, so wall time alone says little) and peak
RSS of the first run (scripted models, in-process), the rerun and the re-derive, to show how time
and memory grow with the number of samples.

    .venv/bin/python bench/bench_cached_rerun.py [--personas 200] [--protocol opencharacter|personagym]
"""

from __future__ import annotations

import argparse
import json
import resource
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
    # The judge's endpoint is a dead port: no metadata request (a rerun makes no model call).
    "import rolebench_eval.running.runner as runner\n"
    "runner.preflight = lambda spec: None\n"
    "code = main(sys.argv[1:])\n"
    "use = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('PEAK_RSS_MIB', use.ru_maxrss / 1024, use.ru_utime + use.ru_stime)\n"
    "sys.exit(code)\n"
)


def usage_line() -> str:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return f"PEAK_RSS_MIB {use.ru_maxrss / 1024} {use.ru_utime + use.ru_stime}"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
    peak, cpu = map(float, out.stdout.split("PEAK_RSS_MIB")[-1].split())
    return {"seconds": elapsed, "cpu_s": cpu, "peak_rss_mib": peak}


def line(name: str, m: dict) -> str:
    return f"  {name:<27}{m['seconds']:6.2f} s wall, {m['cpu_s']:6.2f} s CPU, peak RSS {m['peak_rss_mib']:5.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--protocol", default="opencharacter")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        run = build(args.build, args.personas, args.protocol)
        print(usage_line())
        print(run)
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
            out = subprocess.run(
                [sys.executable, __file__, "--build", str(results), "--personas", str(personas), "--protocol", args.protocol],
                capture_output=True, text=True, check=True).stdout.strip().splitlines()
            run = Path(out[-1])
            peak, cpu = map(float, out[-2].split()[1:])
            built = {"seconds": time.perf_counter() - start, "cpu_s": cpu, "peak_rss_mib": peak}
            names = ["calls/generation.jsonl", "calls/judging.jsonl", "samples.jsonl", "report.html"]
            sizes = {name: (run / name).stat().st_size / 2**20 for name in names}
            calls = sizes["calls/generation.jsonl"] + sizes["calls/judging.jsonl"]
            total = dir_size(run) / 2**20
            n = sum(1 for _ in (run / "samples.jsonl").open())
            rerun = child(results, personas, args.protocol)
            (run / "calls/derived-stamp.json").unlink()
            rederive = child(results, personas, args.protocol)
            print(f"\n{personas} personas, protocol {args.protocol}: {n} samples; "
                  + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items()))
            print(f"  run directory {total:.1f} MiB = {total / calls:.2f}x its calls files ({calls:.1f} MiB)")
            print(line("first run (scripted):", built))
            print(line("rerun (unchanged calls):", rerun))
            print(line("rederive from calls files:", rederive))
            print(f"  ratio rederive / rerun (wall): {rederive['seconds'] / rerun['seconds']:.1f}")


if __name__ == "__main__":
    main()
