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
    .venv/bin/python bench/bench_scheduler_overhead.py --endpoint http  # the real HTTP path

`--endpoint http` replaces the in-process backend by the real OpenAI backend against an endpoint
that answers at once (`sim_server.py --instant`, in its own process, so its CPU is not counted):
the whole client path per call (scheduler, lane, openai client and HTTP, call store, records).
`--profile FILE` writes a cProfile of the child's run (`python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
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


def measure(personas: int, protocol: str, url: str | None = None, profile: str | None = None) -> dict[str, Any]:
    """One run in this process (called in a fresh child); `url`: the instant HTTP endpoint."""
    import rolebench_eval.running.runner as runner

    imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts: dict[str, int] = {}
    if url is None:
        runner.build_backend = lambda spec, options: Instant(spec.label, counts)
        runner.preflight = lambda spec: None  # the judge's URL points at nothing; no endpoint check
        models: dict[str, Any] = {"judges": ["openai:judge,base_url=http://127.0.0.1:9/v1"]}
    else:
        os.environ.pop("OPENAI_API_KEY", None)
        models = {"model": "sim-model", "base_url": url, "judges": [f"openai:sim-judge,base_url={url}"]}
    from rolebench_eval.scheduling.scheduler import Scheduler

    scheduled: dict[str, float] = {}
    original_run = Scheduler.run

    def run_and_note(self: Any, jobs: Any, on_done: Any = None) -> Any:
        # Peak RSS when every call is done, before the reports are written: what the scheduler,
        # the jobs and the streamed records hold, apart from what is derived afterwards.
        out = original_run(self, jobs, on_done)
        scheduled["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out

    Scheduler.run = run_and_note  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="rbe_overhead_") as tmp:
        config = runner.RunConfig(
            tasks=["personagym"], protocol=protocol, **models,
            limit=personas, results_dir=Path(tmp), progress=False, max_tokens=64, write_leaderboard=False,
        )
        profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        result = runner.Runner(config, log=lambda m: None).run()
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        system_s = usage1.ru_stime - usage0.ru_stime  # kernel time: sockets (loopback TCP), file writes
        files = {p.name: p.stat().st_size / 2**20 for p in (result.run_dir / "calls").glob("*.jsonl")}
        samples = sum(1 for _ in (result.run_dir / "samples.jsonl").open())
        if url is not None:  # the calls made, by stage, from rbe's own account
            calls_section = json.loads((result.run_dir / "results.json").read_text()).get("calls", {})
            counts = {"made": int((calls_section.get("total") or {}).get("made") or 0)}
    calls = sum(counts.values())
    return {"personas": personas, "counts": counts, "calls": calls, "samples": samples, "cpu_s": cpu,
            "wall_s": wall, "cpu_ms_per_call": 1000 * cpu / calls if calls else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "imported_rss_mib": imported_rss, "calls_files_mib": files,
            "scheduled_rss_mib": scheduled.get("peak_rss_mib"), "system_s": system_s,
            "incomplete": bool(getattr(result, "incomplete", False))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", default="50,100,200", help="comma-separated numbers of personas")
    parser.add_argument("--protocol", default="opencharacter-full")
    parser.add_argument("--endpoint", choices=("inprocess", "http"), default="inprocess",
                        help="in-process instant backend, or the OpenAI backend against an instant HTTP server")
    parser.add_argument("--profile", default=None, help="write a cProfile of the (last) run to this file")
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.protocol, args.url, args.profile)))
        return
    server = None
    if args.endpoint == "http":
        server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sim_server.py")), "--instant",
                                   "--model", "sim-model", "--model", "sim-judge", "--lifetime-s", "3600"],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        args.url = server.stdout.readline().split(" on ", 1)[1].split()[0]
    try:
        _table(args)
    finally:
        if server is not None:
            server.kill()


def _table(args: argparse.Namespace) -> None:
    header = ("personas", "answers", "examples", "judgments", "calls", "CPU s (of it system)", "CPU ms per call", "wall s",
              "peak RSS MiB", "peak RSS when the calls are done MiB", "RSS after imports MiB", "calls files MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for personas in (int(p) for p in args.personas.split(",")):
        extra = (["--url", args.url] if args.url else []) + (["--profile", args.profile] if args.profile else [])
        out = subprocess.run([sys.executable, __file__, "--child", str(personas), "--protocol", args.protocol, *extra],
                             capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{personas} personas: exit {out.returncode}\n{out.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        c = r["counts"]
        if args.url:  # by kind from the full protocol's shape: 50 answers + 50 examples + 10 judgments
            c = {"answer": 50 * personas, "examples": 50 * personas, "judge": 10 * personas}
        print(f"| {personas} | {c.get('answer', 0):,} | {c.get('examples', 0):,} | {c.get('judge', 0):,} | "
              f"{r['calls']:,} | {r['cpu_s']:.1f} ({r['system_s']:.1f} system) | {r['cpu_ms_per_call']:.2f} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {r['scheduled_rss_mib'] or 0:.0f} | {r['imported_rss_mib']:.0f} | "
              f"{sum(r['calls_files_mib'].values()):.1f} |" + (" (run incomplete)" if r["incomplete"] else ""),
              flush=True)


if __name__ == "__main__":
    main()
