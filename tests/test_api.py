"""The Python API (rolebench_eval.api): the same runs as `rbe run`, DataFrames that hold the values
of results.json and samples.jsonl, and the comparison `rbe compare` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_fixtures as fx  # noqa: E402
from scripted_replies import JUDGE, answer  # noqa: E402
from scripted_replies import judge_by_task as judge  # noqa: E402

import rolebench_eval as rbe  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402
from rolebench_eval.errors import UsageError  # noqa: E402


def _cli_run(results: Path) -> dict:
    code = main(["run", "--tasks", "personagym-light", "--judge", JUDGE, "--limit", "2", "--max-tokens", "16",
                 "--results-dir", str(results), "--no-progress"])
    assert code == 0
    [run_dir] = (results / "runs").iterdir()
    return json.loads((run_dir / "results.json").read_text())


def test_api_run_is_the_cli_run(tmp_path: Path, scripted_backends, capsys: pytest.CaptureFixture[str]) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge})
    cli = _cli_run(tmp_path / "cli")
    capsys.readouterr()
    backends = scripted_backends({"embedded": answer, "judge-a": judge})
    run = rbe.run("personagym-light", judges=[JUDGE], limit=2, max_tokens=16, results_dir=tmp_path / "api", progress=False)
    assert capsys.readouterr().out == ""  # the API prints no table
    assert len(backends["embedded"].requests) == 10 and run.calls_made == {"generation": 10, "judging": 20}
    # Same configuration, same run id and the same numbers as the command line's results.json.
    assert run.run_id == cli["run_id"] and run.results["config_hash"] == cli["config_hash"]
    assert run.results["tasks"]["personagym-light"]["metrics"] == cli["tasks"]["personagym-light"]["metrics"]
    assert run.results["tasks"]["personagym-light"]["per_unit"] == cli["tasks"]["personagym-light"]["per_unit"]
    means = run.metrics.set_index("metric")["value"].to_dict()
    assert means == {"EA": 4, "TC": 5, "LH": 3, "PC": 4, "AJ": 2, "PersonaScore": pytest.approx(3.6)}
    assert run.incomplete == []


def test_api_run_resumes_the_cli_run_without_a_call(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge})
    cli = _cli_run(tmp_path / "results")
    backends = scripted_backends({"embedded": answer, "judge-a": judge})
    run = rbe.run(["personagym-light"], judges=JUDGE, limit=2, max_tokens=16, results_dir=str(tmp_path / "results"),
                  no_progress=True)
    assert backends == {} and run.calls_made == {"generation": 0, "judging": 0}  # the CLI's calls, reused
    assert run.path == tmp_path / "results" / "runs" / cli["run_id"]


def test_api_run_checks_options_like_the_cli(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge})
    with pytest.raises(UsageError, match=r"unknown option 'batchsize'.*batch_size"):
        rbe.run("personagym-light", batchsize=4, results_dir=tmp_path)
    with pytest.raises(UsageError, match=r"option limit: expected a positive number, got 0"):
        rbe.run("personagym-light", limit=0, results_dir=tmp_path)
    with pytest.raises(UsageError, match=r"option unscored_policy: invalid choice: 'zero'"):
        rbe.run("personagym-light", unscored_policy="zero", results_dir=tmp_path)
    with pytest.raises(UsageError, match="backend_options by the flags' names"):
        rbe.run("personagym-light", backend_options={}, results_dir=tmp_path)
    # A backend flag no model of the run reads is refused before any call, as `rbe run` refuses it.
    with pytest.raises(UsageError, match="--concurrency"):
        rbe.run("personagym-light", judges=["embedded"], concurrency=4, results_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_run_argv_maps_config_names_to_flags() -> None:
    from rolebench_eval.api import run_argv

    argv = run_argv(["a", "b"], {"judges": ["j1", "j2"], "task_options": {"k": "v"}, "write_leaderboard": False,
                                 "wait_for_lock": True, "fresh": True, "limit": 3, "model": None, "prices": ["m=1,2"]})
    assert argv == ["run", "--tasks", "a,b", "--judge=j1", "--judge=j2", "--task-option=k=v",
                    "--no-leaderboard", "--fresh", "--limit=3", "--price=m=1,2"]
    assert run_argv("a", {"seed": -1})[-1] == "--seed=-1"  # a value starting with '-' stays a value
    with pytest.raises(UsageError, match="write_leaderboard= must be True or False"):
        run_argv("a", {"write_leaderboard": "no"})


@pytest.fixture
def two_runs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "results"
    base = fx.persona_values(n=12, seed=1)
    better = fx.persona_values(base=base, shift=0.4, seed=2)
    better[list(better)[2]]["EA"] = None  # unscored in b
    items = fx.rolebench_values(n=9)
    return {
        "a": fx.write_run(root, "model-a__personagym-light__aaaa", [fx.personagym_task(base), fx.rolebench_task(items)], model="model-a"),
        "b": fx.write_run(root, "model-b__personagym-light__bbbb",
                          [fx.personagym_task(better), fx.rolebench_task(fx.rolebench_values(base=items, shift=0.1))], model="model-b"),
        "root": root,
    }


def test_load_run_frames_hold_the_files_values(two_runs: dict[str, Path]) -> None:
    run = rbe.load_run("model-a", results_dir=two_runs["root"])
    results = json.loads((two_runs["a"] / "results.json").read_text())
    assert run.path == two_runs["a"] and run.manifest["config_hash"] == results["config_hash"]
    metrics = run.metrics
    assert len(metrics) == 6 + 5  # PersonaGym's six; the RoleBench fixture's CUS, RAW, SPE and two win rates
    for row in metrics.itertuples():
        summary = results["tasks"][row.task]["metrics"][row.metric]
        assert row.value == summary["mean"] and row.n == summary["n"] and row.unscored == summary["n_unscored"]
        assert [row.ci_low, row.ci_high] == summary["ci95"]
    assert metrics.set_index(["task", "metric"]).loc[("personagym-light", "PersonaScore"), "name"] == "PScore-L"

    samples = run.samples
    records = [json.loads(line) for line in (two_runs["a"] / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(records) == 12 + 9
    first = samples.iloc[0]
    assert first["answer"] == fx.HOSTILE_ANSWER and first["unit"] == records[0]["unit"]
    assert first["score"] == records[0]["score"] and first["metric"] == "EA"
    assert first["question"] == "Question 0: what do you do on a stormy night?"  # the prompt's user turn
    assert first[f"judge[{fx.JUDGE}].reply"] == records[0]["judgments"][0]["reply"]
    assert first[f"judge[{fx.JUDGE}].score"] == records[0]["judgments"][0]["score"]
    assert list(run.judgments["reply"][:12]) == [r["judgments"][0]["reply"] for r in records[:12]]
    assert run.per_unit.set_index(["task", "unit"]).loc[("personagym-light", records[1]["unit"]), "EA"] == \
        results["tasks"]["personagym-light"]["per_unit"][records[1]["unit"]]["EA"]


def test_load_runs_is_tidy_across_runs(two_runs: dict[str, Path]) -> None:
    frame = rbe.load_runs(two_runs["root"])
    assert sorted(frame["run_id"].unique()) == ["model-a__personagym-light__aaaa", "model-b__personagym-light__bbbb"]
    assert len(frame) == 2 * 11  # each run: 6 PersonaGym + 5 RoleBench metrics
    row = frame[(frame.model == "model-b") & (frame.metric == "EA")].iloc[0]
    results_b = json.loads((two_runs["b"] / "results.json").read_text())
    assert row.value == results_b["tasks"]["personagym-light"]["metrics"]["EA"]["mean"] and row.unscored == 1
    assert row.judges == fx.JUDGE and row.protocol == "opencharacter" and row.config_hash == results_b["config_hash"]
    assert row.date.endswith("+00:00")
    with pytest.raises(UsageError):
        rbe.load_runs(two_runs["root"] / "nowhere")


def test_compare_matches_the_cli(two_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "model-a", "model-b", "--results-dir", str(two_runs["root"]), "--format", "json", "--resamples", "999"])
    assert code == 0
    cli = {m["metric"]: m for m in json.loads(capsys.readouterr().out)["comparisons"][0]["comparison"]["metrics"]}
    frame = rbe.compare("model-a", rbe.load_run(two_runs["b"]), results_dir=two_runs["root"], resamples=999)
    assert list(frame["metric"]) == list(cli)
    for row in frame.itertuples():
        expected = cli[row.metric]
        assert (row.n, row.n_only_a, row.n_only_b) == (expected["n_paired"], expected["n_only_a"], expected["n_only_b"])
        for got, key in ((row.mean_a, "mean_a"), (row.mean_b, "mean_b"), (row.diff, "diff"), (row.p_adj, "p_adjusted")):
            assert got == pytest.approx(expected[key], nan_ok=True)
        assert [row.ci_low, row.ci_high] == pytest.approx(expected["ci95"])
    assert frame.attrs["label_a"] == "model-a" and frame.attrs["correction"] == "holm"
    assert frame.set_index("metric").loc["personagym-light/EA", "n"] == 11  # b's unscored persona is not paired


def test_compare_refuses_what_the_cli_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    base = fx.persona_values(n=8, seed=1)
    fx.write_run(root, "a__x__1", [fx.personagym_task(base)], model="a")
    fx.write_run(root, "b__x__2", [fx.personagym_task(base, judges=("gpt-4o-mini",))], model="b")
    assert main(["compare", "a__x__1", "b__x__2", "--results-dir", str(root)]) == 2
    cli_error = capsys.readouterr().err
    with pytest.raises(UsageError) as caught:
        rbe.compare("a__x__1", "b__x__2", results_dir=root)
    assert str(caught.value).splitlines()[0] in cli_error and "judge set differs" in str(caught.value)
    frame = rbe.compare("a__x__1", "b__x__2", results_dir=root, allow_mismatch=True, resamples=99)
    assert any("judge set differs" in m for m in frame.attrs["mismatches"])


def test_baseline_file_has_no_samples(two_runs: dict[str, Path], tmp_path: Path) -> None:
    assert main(["baseline", "export", str(two_runs["a"]), "--output", str(tmp_path / "base.json")]) == 0
    run = rbe.load_run(tmp_path / "base.json")
    assert run.path is None and not run.metrics.empty
    with pytest.raises(UsageError, match="baseline file"):
        run.samples


def test_import_stays_light() -> None:
    probe = "import sys, rolebench_eval{}; print('pandas' in sys.modules, 'torch' in sys.modules)"
    lazy = subprocess.run([sys.executable, "-c", probe.format("")], capture_output=True, text=True, check=True)
    assert lazy.stdout.split() == ["False", "False"]
    # Touching the API loads rolebench_eval.api, still without pandas (until a DataFrame is asked for) or torch.
    touched = subprocess.run([sys.executable, "-c", probe.format("; rolebench_eval.load_run")],
                             capture_output=True, text=True, check=True)
    assert touched.stdout.split() == ["False", "False"]
