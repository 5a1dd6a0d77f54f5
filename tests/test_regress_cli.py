"""`rbe regress` exit codes and report, and `rbe baseline export` files reused as baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402

from rolebench_eval.cli import main  # noqa: E402

FAST = ["--resamples", "199"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    base = fx.persona_values(n=40, seed=1)
    fx.write_run(results, "baseline-run", [fx.personagym_task(base)], model="model-a")
    # Same model retrained: a tiny change, and a clear regression.
    fx.write_run(results, "same-run", [fx.personagym_task(fx.persona_values(base=base, shift=0.0, seed=5, noise=0.25))], model="model-a2")
    fx.write_run(results, "worse-run", [fx.personagym_task(fx.persona_values(base=base, shift=-0.5, seed=6, noise=0.25))], model="model-a3")
    # A big drop in the mean carried by a few personas only: not significant on 40 personas.
    noisy = {unit: dict(row) for unit, row in base.items()}
    for unit in list(noisy)[:3]:
        noisy[unit]["PersonaScore"] = 1.0
    fx.write_run(results, "noisy-run", [fx.personagym_task(noisy)], model="model-a4")
    return results


def _regress(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["regress", "--results-dir", str(root), *FAST, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_exit_0_when_within_allowance(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _regress(capsys, root, "--baseline", "baseline-run", "--run", "same-run",
                              "--fail-if-worse", "personagym-light/PersonaScore:0.1", "--fail-if-worse", "EA:0.2")
    assert code == 0
    assert "regression gate (model-a2 vs baseline model-a): PASS" in out
    assert "ok   personagym-light/PersonaScore (allowed drop 0.1)" in out
    assert "no significant regression" in err


def test_exit_1_on_significant_drop_with_readable_report(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _regress(capsys, root, "--baseline", "baseline-run", "--run", "worse-run",
                              "--fail-if-worse", "PersonaScore:0.2,TC:1.0")
    assert code == 1
    assert "regression gate (model-a3 vs baseline model-a): FAIL" in out
    line = next(l for l in out.splitlines() if "FAIL personagym-light/PersonaScore" in l)
    assert "allowed drop 0.2" in line and "significant" in line and "p_adj=" in line
    assert "ok   personagym-light/TC (allowed drop 1)" in out  # the drop is within its allowance
    assert "REGRESSION: exit 1" in err


def test_large_but_not_significant_drop_passes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _regress(capsys, root, "--baseline", "baseline-run", "--run", "noisy-run",
                            "--fail-if-worse", "PersonaScore:0.05", "--format", "json")
    assert code == 0
    gate = json.loads(out)["comparisons"][0]["gate"]
    [decision] = gate["decisions"]
    assert gate["passed"] and decision["drop"] > 0.05 and not decision["significant"]
    assert "but not significant" in decision["reason"]


def test_exit_2_on_bad_input(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--baseline", "baseline-run", "--run", "worse-run", "--fail-if-worse", "Persona:0.1"], "unknown metric 'Persona'"),
        (["--baseline", "baseline-run", "--run", "worse-run", "--fail-if-worse", "PersonaScore"], "expected METRIC:DELTA"),
        (["--baseline", "baseline-run", "--run", "worse-run", "--fail-if-worse", "PersonaScore:-1"], "DELTA must be a number >= 0"),
        (["--baseline", "nothing-here", "--run", "worse-run", "--fail-if-worse", "PersonaScore:0.1"], "no run directory"),
        (["--baseline", "baseline-run", "--run", "worse-run"], "at least one --fail-if-worse"),
    ]
    for argv, message in cases:
        code, out, err = _regress(capsys, root, *argv)
        assert code == 2, argv
        assert message in err, (argv, err)
    with pytest.raises(SystemExit) as exit_info:  # argparse: a required flag is missing
        main(["regress", "--run", "worse-run"])
    assert exit_info.value.code == 2


def test_plain_metric_name_must_be_unambiguous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    base = fx.persona_values(n=12)
    tasks = [fx.personagym_task(base), fx.personagym_task(base, name="personagym")]
    fx.write_run(results, "a", tasks)
    fx.write_run(results, "b", tasks, model="model-b")
    code, _, err = _regress(capsys, results, "--baseline", "a", "--run", "b", "--fail-if-worse", "EA:0.1")
    assert code == 2 and "ambiguous" in err and "personagym/EA" in err and "personagym-light/EA" in err
    code, out, _ = _regress(capsys, results, "--baseline", "a", "--run", "b", "--fail-if-worse", "personagym/EA:0.1")
    assert code == 0 and "correction: holm across 12 metrics" in out


def test_baseline_export_and_reuse(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "repo" / "results" / "baselines" / "model-a.json"
    assert main(["baseline", "export", "baseline-run", "--results-dir", str(root), "--output", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    document = json.loads(target.read_text())
    assert document["schema"] == "rolebench-eval/baseline/v1" and document["source_run_id"] == "baseline-run"
    task = document["results"]["tasks"]["personagym-light"]
    assert len(task["per_unit"]) == 40 and task["metric_kinds"]["PersonaScore"] == "likert"
    assert document["manifest"]["tasks"]["personagym-light"]["data"]["questions_sha256"] == "q" * 64

    # The run directory can go away: the file alone is the baseline, with the same verdicts.
    from_dir = _regress(capsys, root, "--baseline", "baseline-run", "--run", "worse-run", "--fail-if-worse", "PersonaScore:0.2", "--format", "json")
    from_file = _regress(capsys, root, "--baseline", str(target), "--run", "worse-run", "--fail-if-worse", "PersonaScore:0.2", "--format", "json")
    assert from_dir[0] == from_file[0] == 1
    metrics_dir = json.loads(from_dir[1])["comparisons"][0]["comparison"]["metrics"]
    metrics_file = json.loads(from_file[1])["comparisons"][0]["comparison"]["metrics"]
    assert metrics_dir == metrics_file
    assert json.loads(from_file[1])["comparisons"][0]["a"]["baseline_file"] is True
    # A baseline with a different data hash is refused like a run would be.
    other = fx.write_run(root, "other-data", [fx.personagym_task(fx.persona_values(n=40), data_hash="d" * 64)], model="m")
    code, _, err = _regress(capsys, root, "--baseline", str(target), "--run", str(other), "--fail-if-worse", "PersonaScore:0.2")
    assert code == 2 and "data hash data.questions_sha256 differs" in err
