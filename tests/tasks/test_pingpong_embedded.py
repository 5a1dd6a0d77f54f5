"""PingPong end to end on the embedded model (slow): it plays the user, the character and the judge.

One dialogue of 2 turns with small token limits. The 135M model rarely writes the interrogator's
JSON, so the dialogue may stop at a turn: either way the record must say exactly what happened,
never a score from nothing, and a rerun must make no finished call again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolebench_eval.running.runner import RunConfig, Runner

pytestmark = pytest.mark.slow


def config(tmp_path: Path) -> RunConfig:
    # No --judge, no --user-model: a smoke run, the embedded model in every role (judge and
    # interrogator limited to the smoke 128 tokens, recorded as deviations).
    return RunConfig(tasks=["pingpong-en"], limit=1, task_options={"max_turns": "2"}, max_tokens=16,
                     results_dir=tmp_path / "results", progress=False, write_leaderboard=False)


def test_one_dialogue_on_the_embedded_model(tmp_path: Path) -> None:
    result = Runner(config(tmp_path), log=lambda m: None).run()
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["user_model"]["label"] == "embedded"
    assert any("plays the user" in d for d in manifest["deviations"])
    (record,) = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert record["sample_id"] == "en-c0-s0" and record["n_turns"] == 2
    calls = [json.loads(line) for line in (run / "calls" / "judging.jsonl").read_text().splitlines()]
    asked = [c for c in calls if c["stage"] == "interrogate"]
    turns = record["n_turns_done"]
    assert len(record["turns"]) == len(record["messages"]) == 2 * turns
    if record["failed_turn"] is not None:  # stopped: unscored with the turn and the reason, not judged
        assert result.incomplete and record["score"] is None and record["judgments"] == []
        assert f"at turn {record['failed_turn']}" in record["unscored_reason"]
        assert record["unscored_reason"].startswith(("interrogator", "player"))
        if record["unscored_reason"].startswith("interrogator"):
            assert len(asked) == record["failed_turn"]
    else:  # both turns done: the smoke judge was asked once; scored, or unscored with a reason
        assert turns == 2 and len(asked) == 2 and len(record["judgments"]) == 1
        assert (record["score"] is None) == (record["unscored_reason"] is not None)
    results = json.loads((run / "results.json").read_text())
    assert results["smoke_judge"] is True
    assert "pingpong-en" in (run / "report.md").read_text()
    if not result.incomplete:  # every call succeeded: a rerun makes none
        again = Runner(config(tmp_path), log=lambda m: None).run()
        assert sum(again.calls_made.values()) == 0
