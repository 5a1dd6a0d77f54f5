"""Every measurement setting of a real task manifest blocks compare/regress/table/leaderboard; seed does not.

The fixture runs carry the manifests the real tasks write (run_fixtures.task_manifest), so a setting
a task records is checked without a list of settings in the engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.cli import main  # noqa: E402
from rolebench_eval.analysis.leaderboard import write_leaderboard  # noqa: E402

FAST = ["--resamples", "99"]


def _rolebench(name: str = "rolebench-en", **options: Any) -> fx.TaskFixture:
    return fx.rolebench_task(fx.rolebench_values(n=30, seed=3), name=name, **options)


def _personagym(**options: Any) -> fx.TaskFixture:
    return fx.personagym_task(fx.persona_values(n=20, seed=4), **options)


# (case, task of run a, task of run b, examples model of b, the setting the refusal must name)
CASES = [
    ("reference policy", _rolebench, lambda: _rolebench(options={"reference_policy": "first"}), None,
     "setting rouge.reference_policy differs"),
    ("tokenizer", lambda: _rolebench("rolebench-zh", judges=("gpt-4",)),
     lambda: _rolebench("rolebench-zh", judges=("gpt-4",), options={"zh_tokenizer": "char-alnum"}), None,
     "setting rouge.tokenizer differs"),
    ("order policy", _rolebench, lambda: _rolebench(options={"win_rate_order": "random-order"}), None,
     "setting win_rate.order_policy differs"),
    ("judge reference", _rolebench, lambda: _rolebench(options={"judge_reference": "none"}), None,
     "setting win_rate.judge_reference differs"),
    ("examples model", _personagym, _personagym, "gpt-4o-mini", "examples model differs"),
    ("question set", _personagym, lambda: _personagym(manifest_overrides={"data.questions": "benchmark-v1"}), None,
     "setting data.questions differs"),
]


def _write(root: Path, case: tuple[Any, ...]) -> tuple[Path, Path, str]:
    _, make_a, make_b, examples_b, message = case
    a = fx.write_run(root, "run-a", [make_a()], model="model-a")
    b = fx.write_run(root, "run-b", [make_b()], model="model-b", examples_model=examples_b)
    return a, b, message


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compare_and_regress_refuse_a_changed_setting(case: tuple[Any, ...], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b, message = _write(tmp_path / "results", case)
    code, out, err = _cli(capsys, "compare", str(a), str(b), *FAST)
    assert code == 2 and out == "" and "not comparable" in err and message in err, err
    task = next(iter(json.loads((a / "results.json").read_text())["tasks"]))
    metric = "SPE" if task.startswith("rolebench") else "PersonaScore"
    code, out, err = _cli(capsys, "regress", "--baseline", str(a), "--run", str(b), "--fail-if-worse", f"{task}/{metric}:0.1", *FAST)
    assert code == 2 and message in err, err
    code, out, _ = _cli(capsys, "compare", str(a), str(b), "--allow-mismatch", *FAST)
    assert code == 0 and "WARNING: compared with --allow-mismatch" in out and message in out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_leaderboard_never_mixes_a_changed_setting(case: tuple[Any, ...], tmp_path: Path) -> None:
    a, b, message = _write(tmp_path / "results", case)
    text = write_leaderboard(tmp_path / "results").read_text(encoding="utf-8")
    sections = text.split("\n## ")[1:]
    assert len(sections) == 2, text
    assert sum("`run-a`" in s for s in sections) == 1 and sum("`run-b`" in s for s in sections) == 1
    assert all(not ("`run-a`" in s and "`run-b`" in s) for s in sections)
    assert "(settings 1 of 2)" in text and "(settings 2 of 2)" in text and "Not comparable with settings 1:" in text
    assert message.split(" differs")[0].replace("setting ", "") in text


TABLE_CASES = {
    "reference policy": "rolellm_en_instruction",
    "order policy": "rolellm_en_instruction",
    "judge reference": "rolellm_en_instruction",
    "tokenizer": "rolellm_zh_instruction",
    "examples model": "opencharacter_table3",
    "question set": "opencharacter_table3",
}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_table_refuses_a_changed_setting(case: tuple[Any, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = _write(tmp_path / "results", case)
    table = TABLE_CASES[case[0]]
    setting = {"examples model": "examples model", "question set": "data.questions"}.get(case[0]) or \
        case[4].split(" differs")[0].replace("setting ", "")
    # Against the published setting (examples model, question set) or the first measured row.
    code, _, err = _cli(capsys, "table", table, "--runs", str(a), str(b))
    assert code == 2 and setting in err and "--allow-mismatch" in err, err
    code, out, _ = _cli(capsys, "table", table, "--runs", str(a), str(b), "--allow-mismatch")
    assert code == 0 and "| measured‡ |" in out and "‡ model-b: not comparable, " in out and setting in out


def test_seed_is_shown_but_does_not_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    values = fx.persona_values(n=20, seed=4)
    a = fx.write_run(root, "run-a", [fx.personagym_task(values, seed=0)], model="model-a")
    b = fx.write_run(root, "run-b", [fx.personagym_task(values, seed=7)], model="model-b")
    code, out, err = _cli(capsys, "compare", str(a), str(b), *FAST)
    assert code == 0, err
    assert "differences that do not affect comparability:" in out
    assert "setting roleplay_template.answer_params.seed differs (model-a: 0; model-b: 7)" in out
    code, _, err = _cli(capsys, "regress", "--baseline", str(a), "--run", str(b), "--fail-if-worse", "PersonaScore:0.5", *FAST)
    assert code == 0, err
    text = write_leaderboard(root).read_text(encoding="utf-8")
    assert text.count("\n## personagym-light") == 1 and "`run-a`" in text and "`run-b`" in text
    code, out, err = _cli(capsys, "table", "opencharacter_table3", "--runs", str(a), str(b))
    assert code == 0, err


def test_a_smaller_sample_is_shown_not_blocking_for_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    values = fx.persona_values(n=20, seed=4)
    a = fx.write_run(root, "run-a", [fx.personagym_task(values)], model="model-a")
    few = dict(list(values.items())[:12])
    b = fx.write_run(root, "run-b", [fx.personagym_task(few, limit=12)], model="model-b")
    code, out, err = _cli(capsys, "compare", str(a), str(b), "--format", "json", *FAST)
    assert code == 0, err
    pair = json.loads(out)["comparisons"][0]
    assert pair["comparable"] is True
    assert any("data.n_personas differs (model-a: 20; model-b: 12)" in d for d in pair["non_blocking_differences"])
    assert any("data.limit differs" in d for d in pair["non_blocking_differences"])
