"""RoleBench end to end through `rbe run`: the fixture dataset with scripted models (fast), and the
real embedded model on the shipped data (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rolebench_eval import cli
from rolebench_eval.requests import ChatRequest

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    out = capsys.readouterr().out
    return code, out


def _calls_made(out: str) -> int:
    match = re.search(r"model calls made: (\d+)", out)
    assert match, out
    return int(match.group(1))


def _results(out: str) -> tuple[Path, dict]:
    match = re.search(r"wrote (\S+) \(results.json", out)
    assert match, out
    run_dir = Path(match.group(1))
    return run_dir, json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def test_fixture_run_with_scripted_model_and_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scripted_backends
) -> None:
    # The judge is the embedded model under another label, so one backend (keyed by the model's
    # identity) serves both roles: the reply depends on the prompt.
    def reply(request: ChatRequest) -> str:
        if request.messages[0].content.startswith("你是一个角色扮演表现比较助手"):
            # Prefers whatever is shown first: under both orders every item is an inconsistent tie.
            return "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"
        return "俺老孙来也：" + request.messages[-1].content[:10]

    backends = scripted_backends({"embedded": reply})
    results_dir = tmp_path / "results"
    argv = [
        "run", "--tasks", "rolebench-zh", "--judge", "embedded,label=scripted-judge",
        "--task-option", f"rolebench_dir={FULL}", "--results-dir", str(results_dir), "--no-progress",
    ]
    code, out = _run(argv, capsys)
    assert code == 0, out
    assert _calls_made(out) == 6 + 6 * 2
    judge_requests = [r for r in backends["embedded"].requests if "排名" in r.messages[0].content]
    assert len(judge_requests) == 12
    run_dir, results = _results(out)
    task = results["tasks"]["rolebench-zh"]
    assert task["protocol"] == "rolellm" and task["roleplay_template"] == "rolellm-zh"
    assert task["judges"] == ["scripted-judge"]
    assert list(task["metrics"]) == ["CUS", "RAW", "SPE", "avg", "win_rate", "win_rate_tie_adjusted"]
    assert all(task["metrics"][m]["mean"] is not None for m in ("CUS", "RAW", "SPE", "avg"))
    assert task["metrics"]["win_rate"]["mean"] == 0.0
    assert task["metrics"]["win_rate_tie_adjusted"]["mean"] == 0.5
    assert task["win_rate"]["judges"]["scripted-judge"]["inconsistent_share"] == 1.0
    assert task["metric_kinds"]["win_rate"] == "verdict" and task["metric_kinds"]["CUS"] == "continuous"
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 6 and set(task["per_unit"]) == {r["item_id"] for r in records}
    assert all(r["verdicts"]["scripted-judge"]["outcome"] == "tie" for r in records)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tasks"]["rolebench-zh"]["data"]["source"] == "task-option:rolebench_dir"
    assert manifest["settings"]["options"] == {"rolebench_dir": str(FULL)}
    assert "rolebench-zh" in (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    assert "win rate" in out and "CUS" in out

    # The same command again: everything comes from the run directory.
    code, out = _run(argv, capsys)
    assert code == 0 and _calls_made(out) == 0


def test_bad_task_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "--tasks", "rolebench-zh", "--task-option", "zh_tokenizer=default",
         "--results-dir", str(tmp_path), "--no-progress"]
    )
    assert code == 2
    assert "Chinese" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_on_shipped_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RBE_ROLEBENCH_DIR", raising=False)
    argv = ["run", "--tasks", "rolebench", "--limit", "2", "--max-tokens", "16",
            "--results-dir", str(tmp_path / "results"), "--no-progress"]
    code, out = _run(argv, capsys)
    assert code == 0, out
    assert _calls_made(out) == 2 + 4 + 4  # en: SPE only; zh and en-rolegen: SPE + general
    _, results = _results(out)
    tasks = results["tasks"]
    assert list(tasks) == ["rolebench-en", "rolebench-zh", "rolebench-en-rolegen"]
    assert results["judges"] == [] and not results["smoke_judge"]
    for name, task in tasks.items():
        metrics = task["metrics"]
        assert list(metrics) == ["CUS", "RAW", "SPE", "avg"], name
        assert metrics["SPE"]["n"] == 2 and metrics["SPE"]["mean"] is not None
        assert metrics["RAW"]["mean"] is None and metrics["RAW"]["reason"].startswith("not computed: missing")
        assert "instructions-general.jsonl" in metrics["RAW"]["reason"]
        assert metrics["avg"]["mean"] is None and metrics["avg"]["reason"].startswith("not computed")
        assert any("desc.json" in w for w in task["warnings"])
    assert tasks["rolebench-en"]["metrics"]["CUS"]["reason"] == (
        "not computed: missing rolebench-eng/instruction-generalization/general/test.jsonl"
    )
    for name in ("rolebench-zh", "rolebench-en-rolegen"):
        assert tasks[name]["metrics"]["CUS"]["n"] == 2 and tasks[name]["metrics"]["CUS"]["mean"] is not None
    code, out = _run(argv, capsys)
    assert code == 0 and _calls_made(out) == 0


@pytest.mark.slow
def test_embedded_judge_win_rate_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--tasks", "rolebench-zh", "--limit", "2", "--max-tokens", "16",
            "--judge", "embedded", "--judge-max-tokens", "16",
            "--results-dir", str(tmp_path / "results"), "--no-progress"]
    code, out = _run(argv, capsys)
    assert code == 0, out
    assert _calls_made(out) == 4 + 4 * 2
    _, results = _results(out)
    assert results["smoke_judge"] is True
    task = results["tasks"]["rolebench-zh"]
    metrics = task["metrics"]
    assert {"win_rate", "win_rate_tie_adjusted"} <= set(metrics)
    details = task["win_rate"]["judges"]["embedded"]
    # A 135M model cut at 16 tokens rarely gives a parseable ranking: any split is fine, but
    # every item is accounted for.
    assert details["n"] + details["n_unscored"] + details["n_skipped_no_baseline"] == 4
    for key in ("wins", "ties", "losses", "inconsistent", "inconsistent_share", "unscored_reasons"):
        assert key in details
    assert metrics["win_rate"]["n"] == details["n"]
    assert metrics["win_rate"]["n_unscored"] == details["n_unscored"]
    assert task["judges"] == ["embedded"]
