"""A run killed with SIGKILL mid-flight loses no finished call: the rerun makes exactly the calls
the killed run had not written, and none twice.

The endpoint is the benchmark's simulated batching server (bench/sim_server.py) in this process,
slow enough (2 ms engine steps, 4 slots) that the kill lands while many calls are in flight; rbe
runs as a real child process (`rbe run`), so the kill is a real one (no cleanup, no flush).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "sim_server.py"
_spec = importlib.util.spec_from_file_location("sim_server_kill", _PATH)
sim = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["sim_server_kill"] = sim
_spec.loader.exec_module(sim)  # type: ignore[union-attr]


def _command(url: str, results: Path) -> list[str]:
    return [sys.executable, "-m", "rolebench_eval.cli", "run", "--tasks", "personagym-light", "--limit", "2",
            "--base-url", url, "--model", "sim-model", "--judge", f"openai:sim-judge,base_url={url}",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard"]


def _lines(calls: Path) -> list[dict]:
    out = []
    for path in sorted(calls.glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return out


def test_sigkill_mid_run_then_rerun_repeats_no_finished_call(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    results = tmp_path / "results"
    config = sim.SimConfig(slots=4, gain=2.0, step_s=0.002, models=("sim-model", "sim-judge"), lifetime_s=600)
    with sim.SimServer(config) as server:
        process = subprocess.Popen(_command(server.base_url, results), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True, env=env)
        calls_dir = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            found = list(results.glob("runs/*/calls")) if results.exists() else []
            if found and len(_lines(found[0])) >= 8:
                calls_dir = found[0]
                break
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert calls_dir is not None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        saved = _lines(calls_dir)
        # Requests of the killed run still in the server's engine finish there after the kill;
        # the rerun's are those that arrive after it starts (server log, monotonic clock).
        time.sleep(0.5)
        rerun_start = time.monotonic()
        rerun = subprocess.run(_command(server.base_url, results), capture_output=True, text=True, env=env,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        made_by_rerun = sum(1 for entry in server.log if entry["arrival"] >= rerun_start)

    final = _lines(calls_dir)
    keys = [line["key"] for line in final]
    assert len(keys) == len(set(keys))  # no call written twice: nothing finished was made again
    # The rerun made exactly the calls the killed run had not written (in flight at the kill).
    assert made_by_rerun == len(final) - len(saved) > 0
    assert {line["key"] for line in saved} <= set(keys)
    assert f"model calls made: {made_by_rerun};" in rerun.stdout
    # 2 personas of PersonaGym-Light: 10 answers, 10 score-example calls, 10 judgments
    stages = [line["stage"] for line in final]
    assert len(final) == 30 and stages.count("generate") == 10, stages
