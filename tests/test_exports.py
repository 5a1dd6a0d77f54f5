"""`rbe export RUN --format csv|parquet|jsonl`, and the DataFrame shapes it writes (analysis/frames.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.analysis import exports, frames  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402


@pytest.fixture
def run_path(tmp_path: Path) -> Path:
    values = fx.persona_values(n=6, seed=3)
    values[list(values)[1]]["EA"] = None  # an unscored persona: an empty cell, never 0
    return fx.write_run(tmp_path / "results", "model-a__personagym-light__aaaa",
                        [fx.personagym_task(values), fx.rolebench_task(fx.rolebench_values(n=6))], model="model-a")


def _cells(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with missing values as None and numbers as floats: what every format must keep."""
    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return float(value)
        return value

    return [{key: cell(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_round_trips(run_path: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", str(run_path), "--format", fmt, "--output", str(out)]) == 0
    assert f"{out / ('samples.' + fmt)} (12 rows)" in capsys.readouterr().out
    results = json.loads((run_path / "results.json").read_text())
    expected = {"samples": frames.samples_frame(run_path, results), "metrics": frames.metrics_frame(results)}
    for name, frame in expected.items():
        read = exports.read_frame(out / f"{name}.{fmt}", fmt)
        assert list(read.columns) == list(frame.columns)
        assert _cells(read) == _cells(frame)
    metrics = exports.read_frame(out / f"metrics.{fmt}", fmt).set_index(["task", "metric"])
    assert metrics.loc[("personagym-light", "EA"), "n"] == 5 and metrics.loc[("personagym-light", "EA"), "unscored"] == 1
    assert metrics.loc[("personagym-light", "EA"), "value"] == pytest.approx(results["tasks"]["personagym-light"]["metrics"]["EA"]["mean"])
    samples = exports.read_frame(out / f"samples.{fmt}", fmt)
    assert samples.loc[0, "answer"] == fx.HOSTILE_ANSWER


def test_default_output_is_beside_the_runs(run_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = run_path.parent.parent
    assert main(["export", "model-a", "--results-dir", str(root)]) == 0
    assert (root / "exports" / "model-a__personagym-light__aaaa" / "samples.csv").is_file()
    assert not (run_path / "samples.csv").exists()


def test_parquet_without_pyarrow_is_a_one_line_error(run_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    real = exports.importlib.util.find_spec
    monkeypatch.setattr(exports.importlib.util, "find_spec", lambda name: None if name == "pyarrow" else real(name))
    assert main(["export", str(run_path), "--format", "parquet", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs the pyarrow package" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_baseline_file_and_a_run_without_samples(run_path: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "export", str(run_path), "--output", str(tmp_path / "b.json")]) == 0
    assert main(["export", str(tmp_path / "b.json")]) == 2
    assert "is a baseline file" in capsys.readouterr().err
    (run_path / "samples.jsonl").unlink()
    assert main(["export", str(run_path), "--output", str(tmp_path / "o")]) == 2
    assert "samples.jsonl is missing" in capsys.readouterr().err


def test_rolebench_record_shape(tmp_path: Path) -> None:
    """A record as tasks/rolebench writes it: ROUGE per reference set, both orders per judge."""
    record = {
        "schema": 1, "task": "rolebench-en", "sample_id": "s1", "unit": "item-1", "item_id": "item-1",
        "question": "Who are you?", "metrics": ["CUS", "RAW"], "answer": "I am Sherlock.", "answer_error": None,
        "empty_answer": False, "scores": {"CUS": 0.5, "RAW": None}, "unscored_reason": None,
        "judgments": [
            {"judge": "gpt", "order": "ab", "reply": "[model_1] first", "outcome": "win", "reason": None},
            {"judge": "gpt", "order": "ba", "reply": "[model_2] first", "outcome": "loss", "reason": None},
        ],
        "verdicts": {"gpt": {"outcome": "tie", "inconsistent": True, "reason": "orders disagree"}},
    }
    (tmp_path / "samples.jsonl").write_text(json.dumps(record) + "\n")
    results = {"run_id": "r", "tasks": {"rolebench-en": {"judges": ["gpt"]}}}
    [row] = frames.samples_frame(tmp_path, results).to_dict(orient="records")
    assert row["metric"] == "CUS,RAW" and row["score[CUS]"] == 0.5 and row["score[RAW]"] is None
    assert row["score"] is None  # no single score: one per reference set, and a verdict per judge
    assert row["judge[gpt].verdict"] == "tie" and row["judge[gpt].unscored_reason"] == "orders disagree"
    assert row["judge[gpt].reply"] == "[order ab]\n[model_1] first\n\n[order ba]\n[model_2] first"
    judgments = frames.judgments_frame(tmp_path, results)
    assert list(judgments["order"]) == ["ab", "ba"] and list(judgments["outcome"]) == ["win", "loss"]


def test_personagym_record_with_two_judges(tmp_path: Path) -> None:
    """One row per sample, each judge in its own columns; the combined score is the record's."""
    judgments = [
        {"judge": "gpt", "reply": "(1) Evaluation: ok. Therefore, the final score is 4", "score": 4, "unscored_reason": None},
        {"judge": "llama", "reply": "(1) Evaluation: hmm", "score": None, "unscored_reason": "no final score"},
    ]
    record = {"schema": 1, "task": "personagym", "sample_id": "p000-EA-q0", "unit": "a sailor", "metric": "EA",
              "question": "What now?", "answer": "Aye.", "judgments": judgments, "score": 4, "unscored_reason": None}
    (tmp_path / "samples.jsonl").write_text(json.dumps(record) + "\n")
    results = {"run_id": "r", "tasks": {"personagym": {"judges": ["gpt", "llama"]}}}
    [row] = frames.samples_frame(tmp_path, results).to_dict(orient="records")
    assert row["score"] == 4 and row["judge[gpt].score"] == 4 and row["judge[gpt].reply"].endswith("score is 4")
    assert row["judge[llama].score"] is None or math.isnan(row["judge[llama].score"])
    assert row["judge[llama].unscored_reason"] == "no final score"
    assert len(frames.judgments_frame(tmp_path, results)) == 2
