"""The real path: the embedded SmolLM2 model through transformers, as a new user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.embedded import SMOKE_JUDGE_WARNING
from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_OK

pytestmark = pytest.mark.slow

SECRET = "sk-rbe-test-Xw93kd02hf71"  # an API key in the environment of the killed run
# --batch-size 2: the 10 calls (answers and score examples go out together) finish in 5 engine
# batches, so the kill below lands between them. --judge-output free: the smoke judge's own
# (unguided) replies, which exercise the unscored path; the quickstart's guided default is
# test_quickstart_prints_a_full_smoke_table below.
ARGS = ["--tasks", "personagym-light", "--limit", "1", "--max-tokens", "16", "--judge-max-tokens", "16",
        "--batch-size", "2", "--no-progress", "--judge-output", "free"]


def run_dir(results: Path) -> Path:
    (path,) = list((results / "runs").iterdir())
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_killed_run_resumes_and_a_rerun_makes_no_call(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    # A real process, killed (SIGKILL: no cleanup) as soon as its first calls are saved: the
    # scheduler sends answers and score examples together, so the kill lands mid-run.
    process = subprocess.Popen(
        [sys.executable, "-m", "rolebench_eval.cli", "run", *ARGS, "--results-dir", str(results)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "OPENAI_API_KEY": SECRET},
    )
    deadline = time.monotonic() + 600
    generation = None
    while time.monotonic() < deadline and process.poll() is None:
        runs = list((results / "runs").glob("*/calls/generation.jsonl")) if (results / "runs").exists() else []
        if runs and runs[0].read_text().strip():
            generation = runs[0]
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert generation is not None, process.stderr.read().decode()[-2000:]
    saved_before = sum(
        len([line for line in path.read_text().splitlines() if line.endswith("}")])
        for path in generation.parent.glob("*.jsonl")
    )

    # The 135M smoke model writes no usable score examples or verdicts: the run says so (exit 3,
    # nothing could be scored) instead of scoring from nothing.
    assert main(["run", *ARGS, "--results-dir", str(results)]) == EXIT_INCOMPLETE
    captured = capsys.readouterr()
    assert "nothing could be scored" in captured.err
    run = run_dir(results)
    generation_calls = lines(run / "calls" / "generation.jsonl")
    assert len(generation_calls) == 5  # no answer was generated twice
    judging_calls = lines(run / "calls" / "judging.jsonl")
    examples_calls = [c for c in judging_calls if c["stage"] == "score_examples"]
    grading_calls = [c for c in judging_calls if c["stage"] == "rubric_grading"]
    assert len({c["key"] for c in judging_calls}) == len(judging_calls)  # no judging call made twice
    assert len(examples_calls) == 5  # one per question (opencharacter protocol)
    # The resumed run made exactly the calls the killed one had not saved.
    made = len(generation_calls) + len(judging_calls) - saved_before
    assert f"model calls made: {made};" in captured.out and made > 0

    from rolebench_eval.analysis.run_samples import iter_samples

    records = list(iter_samples(run))  # texts of calls resolved from the calls files
    assert len(records) == 5
    for record in records:
        assert record["answer"] and record["finish_reason"] in ("stop", "length")
        assert record["answer_usage"]["completion_tokens"] <= 16
        assert record["prompt"][0]["content"].startswith("Adopt the identity of ")
        assert record["score_examples"]["reply"] is not None
        # Whatever the tiny models wrote, a record is either a 1..5 score or unscored with a reason;
        # examples that process to nothing are never judged.
        assert (record["score"] in (1, 2, 3, 4, 5)) != (record["unscored_reason"] is not None)
        if not record["score_examples"]["processed"]:
            assert not record["judgments"] and "score examples" in record["unscored_reason"]
    assert len(grading_calls) == sum(1 for r in records if r["score_examples"]["processed"])
    results_json = json.loads((run / "results.json").read_text())
    task = results_json["tasks"]["personagym-light"]
    assert results_json["smoke_judge"] is True and results_json["smoke_warning"] == SMOKE_JUDGE_WARNING
    assert task["items"]["n"] == 5 and task["items"]["n_scored"] + task["items"]["n_unscored"] == 5
    assert SMOKE_JUDGE_WARNING in (run / "report.md").read_text()
    assert SMOKE_JUDGE_WARNING in (tmp_path / "leaderboard.md").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["packages"]["transformers"] and manifest["model"]["identity"].startswith("hf:")
    # The key of the killed run's environment (SECRET) must reach no file of the run, and the
    # manifest records no key variable for this run, which uses no API model.
    for path in (p for p in run.rglob("*") if p.is_file()):
        assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), f"the API key leaked into {path}"
    assert "OPENAI_API_KEY" not in json.dumps(manifest)

    first_results = (run / "results.json").read_text()
    assert main(["run", *ARGS, "--results-dir", str(results)]) == EXIT_INCOMPLETE
    total = len(generation_calls) + len(judging_calls)
    assert f"model calls made: 0; reused from the run directory: {total}" in capsys.readouterr().out
    assert (run / "results.json").read_text() == first_results


def test_quickstart_prints_a_full_smoke_table(tmp_path: Path, capsys) -> None:
    """The README's first command: the embedded smoke judge is guided by default, so every item
    gets a 1..5 score and the run exits 0, still labelled a smoke test and recording the deviation."""
    results = tmp_path / "results"
    code = main(["run", "--tasks", "personagym-light", "--limit", "1", "--no-progress", "--results-dir", str(results)])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err[-3000:]
    assert SMOKE_JUDGE_WARNING in captured.out
    assert "note: guided judge output for judge:embedded, examples" in captured.err
    run = run_dir(results)
    records = lines(run / "samples.jsonl")
    assert len(records) == 5
    assert all(r["score"] in (1, 2, 3, 4, 5) and r["unscored_reason"] is None for r in records), [
        r["unscored_reason"] for r in records
    ]
    judging = lines(run / "calls" / "judging.jsonl")
    assert {c["stage"] for c in judging} == {"score_examples", "rubric_grading"}
    assert all(c["request"]["guided_regex"] for c in judging)
    assert all("guided_regex" not in c["request"] for c in lines(run / "calls" / "generation.jsonl"))
    manifest = json.loads((run / "manifest.json").read_text())
    entry = manifest["tasks"]["personagym-light"]["judge_output"]
    assert entry == {"judge:embedded": "guided", "examples": "guided"}
    assert any(d.startswith("guided judge output") for d in manifest["deviations"])
    task = json.loads((run / "results.json").read_text())["tasks"]["personagym-light"]
    assert task["items"]["n_scored"] == 5 and task["items"]["n_unscored"] == 0
