"""End to end on the embedded model: a persona file -> a generated set -> its Light set -> a run and
its results table. The 135M model is a plumbing test (its questions mean nothing): small limits, a
seed for reproducibility, lenient parsing (it never writes a Python list), and --max-calls as a bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_OK
from rolebench_eval.questions.question_sets import MANIFEST_NAME, load_set

# Two embedded-model stages (generation, then a run): more than one run's default timeout on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PERSONA = "A retired lighthouse keeper from Maine who collects sea glass and distrusts modern technology"


def test_persona_file_to_results_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    personas = tmp_path / "personas.txt"
    personas.write_text(PERSONA + "\n")
    folder = tmp_path / "questions" / "smoke"
    args = ["questions", "generate", "--personas", str(personas), "--generator", "embedded", "--output", str(folder),
            "--num-questions", "1", "--max-tokens", "32", "--parse", "lenient", "--seed", "1", "--max-calls", "6",
            "--no-progress"]
    assert main(args) in (EXIT_OK, EXIT_INCOMPLETE)
    out = capsys.readouterr().out
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["inputs"]["generator"]["embedded"] and manifest["inputs"]["parameters"]["seed"] == 1
    assert any("--max-tokens 32" in d for d in manifest["deviations"])
    calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]
    assert 2 <= len(calls) <= 6 and calls[0]["stage"] == "select_settings"
    assert calls[0]["request"]["params"]["max_tokens"] == 32 and calls[0]["request"]["params"]["seed"] == 1
    made = len(calls)
    assert f"model calls made: {made}; reused from the set's calls: 0" in out

    # (Resume and rerun are tested against an endpoint in test_generation_resume.py: cheaper.)
    qset = load_set(folder)
    assert qset.personas[0].persona == PERSONA
    assert main(["questions", "light", str(folder)]) == 0
    light = folder.parent / "smoke_personagym-light"
    n_questions = sum(len(q) for q in load_set(light).personas[0].questions.values())
    assert 1 <= n_questions <= 5
    capsys.readouterr()

    results = tmp_path / "results"
    code = main(["run", "--tasks", "personagym-light", "--task-option", f"questions={light}", "--max-tokens", "16",
                 "--judge-max-tokens", "16", "--results-dir", str(results), "--no-progress", "--no-leaderboard"])
    assert code in (EXIT_OK, EXIT_INCOMPLETE)  # the smoke judge rarely writes a usable verdict
    out = capsys.readouterr().out
    assert "personagym-light" in out and "PScore-L" in out
    (run,) = list((results / "runs").iterdir())
    task_manifest = json.loads((run / "manifest.json").read_text())["tasks"]["personagym-light"]
    assert task_manifest["data"]["questions_sha256"] == load_set(light).sha256
    from rolebench_eval.analysis.run_samples import iter_samples

    records = list(iter_samples(run))
    assert len(records) == n_questions and all(r["unit"] == PERSONA for r in records)
