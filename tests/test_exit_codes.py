"""One exit-code table for every command: bad input is one line on stderr and exit 2, never a
traceback with exit 1 (which a CI job reads as "regression"); a bug is exit 4 with a log file."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import sys
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_USAGE

sys.path.insert(0, str(Path(__file__).parent))
from run_fixtures import persona_values, personagym_task, write_run  # noqa: E402
from scripted_replies import JUDGE, answer, judge  # noqa: E402


def run_args(results: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", "personagym-light", "--limit", "1", "--judge", JUDGE, "--max-tokens", "8",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard", *extra]


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rbe: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `folder` read-only; as root (where the kernel ignores the mode) refuse writes the way a
    read-only mount does, for every way Python creates files."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    inside = str(folder.resolve())

    def refused(path: object) -> bool:
        try:
            return str(Path(os.fsdecode(path)).resolve()).startswith(inside)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def deny(path: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))  # type: ignore[arg-type]

    real_os_open, real_mkdir, real_open = os.open, os.mkdir, builtins.open

    def os_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if refused(path):
            deny(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        if any(c in mode for c in "wax+") and refused(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


# -- the results directory ------------------------------------------------------------------------


def test_results_dir_that_is_a_file(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    results.write_text("not a folder")
    assert main(run_args(results)) == EXIT_USAGE
    one_line_error(capsys, "--results-dir", str(results), "is a file")
    assert results.read_text() == "not a folder"


def test_read_only_results_dir_is_refused_before_any_call(tmp_path: Path, capsys, monkeypatch, scripted_backends) -> None:
    backends = scripted_backends({"embedded": answer, "judge-a": judge})
    results = tmp_path / "results"
    results.mkdir()
    read_only(results, monkeypatch)
    try:
        assert main(run_args(results)) == EXIT_USAGE
    finally:
        results.chmod(0o755)
    one_line_error(capsys, "--results-dir", str(results), "cannot write")
    assert backends == {}  # refused before a model was even loaded


def test_full_disk_keeps_every_recorded_call_and_a_rerun_resumes(tmp_path: Path, capsys, monkeypatch, scripted_backends) -> None:
    from rolebench_eval.running import call_store

    scripted_backends({"embedded": answer, "judge-a": judge})
    real_append = call_store.CallStore.append
    appended = []

    def append_until_full(self, *args, **kwargs):  # noqa: ANN001, ANN202
        if len(appended) >= 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        appended.append(1)
        return real_append(self, *args, **kwargs)

    monkeypatch.setattr(call_store.CallStore, "append", append_until_full)
    results = tmp_path / "results"
    assert main(run_args(results)) == EXIT_USAGE
    one_line_error(capsys, "No space left on device", "rerun the same command to resume")
    run = next((results / "runs").iterdir())
    recorded = sum(len((run / f"calls/{name}.jsonl").read_text().splitlines())
                   for name in ("generation", "judging") if (run / f"calls/{name}.jsonl").exists())
    assert recorded == 7  # nothing already computed was lost

    monkeypatch.setattr(call_store.CallStore, "append", real_append)
    assert main(run_args(results)) == 0
    out = capsys.readouterr().out
    assert "model calls made: 8; reused from the run directory: 7" in out  # 5 answers + 10 judgments


# -- corrupted files ------------------------------------------------------------------------------


def _finished_run(tmp_path: Path, scripted_backends) -> Path:
    scripted_backends({"embedded": answer, "judge-a": judge})
    assert main(run_args(tmp_path / "results")) == 0
    return next((tmp_path / "results" / "runs").iterdir())


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\xff\xfe not utf-8\n", "line 1: not UTF-8"), (b'{"key": "k", "completion": []}\n', "line 1"), (b'{"key": 5, "completion": {}}\n', "line 1")],
)
def test_corrupted_calls_file(tmp_path: Path, capsys, scripted_backends, content: bytes, needle: str) -> None:
    run = _finished_run(tmp_path, scripted_backends)
    calls = run / "calls" / "generation.jsonl"
    calls.write_bytes(content + calls.read_bytes())
    capsys.readouterr()
    assert main(run_args(tmp_path / "results")) == EXIT_USAGE
    one_line_error(capsys, str(calls), needle)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("results.json", b"\xff\xfe", "is not UTF-8"),
        ("results.json", b"[1, 2]", "holds a JSON list"),
        ("results.json", b'{"tasks": []}', "'tasks' is missing or not an object"),
        ("results.json", b'{"tasks": {"t": 3}}', "every entry of 'tasks'"),
        ("manifest.json", b"[]", "holds a JSON list"),
        ("manifest.json", b"\xff", "is not UTF-8"),
    ],
)
def test_corrupted_run_files_for_compare(tmp_path: Path, capsys, name: str, content: bytes, needle: str) -> None:
    good = write_run(tmp_path / "results", "good", [personagym_task(persona_values())])
    bad = write_run(tmp_path / "results", "bad", [personagym_task(persona_values(shift=0.1))])
    (bad / name).write_bytes(content)
    assert main(["compare", str(good), str(bad)]) == EXIT_USAGE
    one_line_error(capsys, str(bad / name), needle)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff", "is not UTF-8"),
        (b'{"schema": "rolebench-eval/baseline/v1", "results": []}', "'results' is missing"),
        (b'{"schema": "rolebench-eval/baseline/v1", "results": {"tasks": 1}}', "'results.tasks'"),
        (b'[{"schema": "rolebench-eval/baseline/v1"}]', "holds a JSON list"),
    ],
)
def test_wrongly_shaped_baseline(tmp_path: Path, capsys, content: bytes, needle: str) -> None:
    run = write_run(tmp_path / "results", "good", [personagym_task(persona_values())])
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(content)
    assert main(["regress", "--baseline", str(baseline), "--run", str(run), "--fail-if-worse", "PersonaScore:0.1"]) == EXIT_USAGE
    one_line_error(capsys, str(baseline), needle)


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[]", b'{"tasks": "x"}'])
def test_report_on_a_corrupted_results_json(tmp_path: Path, capsys, content: bytes) -> None:
    write_run(tmp_path / "results", "good", [personagym_task(persona_values())])
    bad = write_run(tmp_path / "results", "bad", [personagym_task(persona_values())])
    (bad / "results.json").write_bytes(content)
    assert main(["report", "--results-dir", str(tmp_path / "results")]) == EXIT_USAGE
    one_line_error(capsys, str(bad / "results.json"))
    assert not (tmp_path / "results" / "report.html").exists()


# -- baselines written to a bad place -------------------------------------------------------------


def test_baseline_export_to_a_directory_or_under_a_file(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "results", "good", [personagym_task(persona_values())])
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["baseline", "export", str(run), "--output", str(folder)]) == EXIT_USAGE
    one_line_error(capsys, str(folder), "is a directory")
    assert list(tmp_path.glob("*.tmp")) == [] and folder.is_dir()
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert main(["baseline", "export", str(run), "--output", str(a_file / "b.json")]) == EXIT_USAGE
    one_line_error(capsys, str(a_file), "is a file, not a folder")


def test_baseline_export_to_a_read_only_folder_leaves_no_tmp(tmp_path: Path, capsys, monkeypatch) -> None:
    run = write_run(tmp_path / "results", "good", [personagym_task(persona_values())])
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder, monkeypatch)
    try:
        assert main(["baseline", "export", str(run), "--output", str(folder / "b.json")]) == EXIT_USAGE
    finally:
        folder.chmod(0o755)
    one_line_error(capsys, str(folder / "b.json"), "Permission denied")
    assert list(folder.iterdir()) == []


def test_atomic_write_failure_removes_its_tmp(tmp_path: Path, monkeypatch) -> None:
    from rolebench_eval.running import run_dir as rd
    from rolebench_eval.errors import RunDirectoryError

    def full(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rd.os, "replace", full)
    target = tmp_path / "x.json"
    target.write_text('{"old": 1}')
    with pytest.raises(RunDirectoryError, match="No space left"):
        rd.write_json_atomic(target, {"new": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"] and json.loads(target.read_text()) == {"old": 1}


# -- flags refused before any call ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--judge", ""], ["--judge", "empty value"]),
        (["--model", " "], ["--model", "empty value"]),
        (["--task-option", "rolebench_dir=/x"], ["--task-option rolebench_dir", "not an option of personagym-light", "Known options: questions"]),
        (["--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--tensor-parallel-size", "2"],
         ["--tensor-parallel-size applies to the vllm backend only"]),
        (["--concurrency", "3", "--judge", "hf:."], ["--concurrency applies to the openai backend only"]),
        (["--batch-size", "4", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], ["--batch-size applies to the hf/lm-eval"]),
        (["--model-args", "pretrained=x"], ["--model-args applies to the lm-eval backend only"]),
        (["--enforce-eager"], ["--enforce-eager applies to the vllm backend only"]),
    ],
)
def test_flags_refused_before_any_call(tmp_path: Path, capsys, scripted_backends, extra: list[str], needles: list[str]) -> None:
    backends = scripted_backends({"embedded": answer, "judge-a": judge})
    args = run_args(tmp_path / "results")
    if "--judge" in extra:  # these cases name their own judge
        position = args.index("--judge")
        del args[position : position + 2]
    assert main([*args, *extra]) == EXIT_USAGE
    one_line_error(capsys, *needles)
    assert backends == {} and not (tmp_path / "results").exists()


def test_unknown_task_option_key_of_a_task_that_has_options(tmp_path: Path, capsys) -> None:
    assert main(["run", "--tasks", "rolebench-en", "--task-option", "zh_tokenize=char",
                 "--results-dir", str(tmp_path / "r")]) == EXIT_USAGE
    one_line_error(capsys, "--task-option zh_tokenize", "Did you mean 'zh_tokenizer'?")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--request-timeout", "--max-retry-time"])
@pytest.mark.parametrize("value", ["-5", "0", "nan"])
def test_non_positive_seconds_are_usage_errors(capsys, flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--tasks", "personagym-light", flag, value])
    assert exit_info.value.code == EXIT_USAGE
    assert f"argument {flag}: expected a positive number" in capsys.readouterr().err


def test_alpha_outside_zero_one_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "a", "b", "--alpha", "3"])
    assert exit_info.value.code == EXIT_USAGE
    assert "--alpha: expected a number between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["report"], ["leaderboard"]])
def test_missing_results_dir_for_report_and_leaderboard(tmp_path: Path, capsys, command: list[str]) -> None:
    missing = tmp_path / "no-such-results"
    assert main([*command, "--results-dir", str(missing)]) == EXIT_USAGE
    one_line_error(capsys, "--results-dir", str(missing), "no such folder")
    assert not missing.exists()


# -- plugins --------------------------------------------------------------------------------------


def _plugins(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "tasks.toml").write_text("this is [[[ not toml")
    for name, body in [("importer", 'raise RuntimeError("boom at import")\n'),
                       ("factory", "def make(spec, settings):\n    raise ValueError('boom in factory')\n")]:
        (root / name).mkdir()
        (root / name / "tasks.toml").write_text(f'[[task]]\nname = "{name}-task"\nfactory = "impl:make"\nrequires_judge = false\n')
        (root / name / "impl.py").write_text(body)
    return root


def test_a_broken_plugin_does_not_hide_the_builtin_tasks(tmp_path: Path, capsys) -> None:
    assert main(["ls", "--include-path", str(_plugins(tmp_path))]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "personagym-light" in captured.out and "rolebench-en" in captured.out and "importer-task" in captured.out
    assert f"broken task plugin {tmp_path / 'plugins' / 'bad' / 'tasks.toml'}" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(("task", "needle"), [("importer-task", "boom at import"), ("factory-task", "boom in factory")])
def test_running_a_task_of_a_raising_plugin(tmp_path: Path, capsys, task: str, needle: str) -> None:
    plugins = _plugins(tmp_path)
    folder = task.removesuffix("-task")
    assert main(["run", "--tasks", task, "--include-path", str(plugins), "--results-dir", str(tmp_path / "r")]) == EXIT_USAGE
    one_line_error(capsys, str(plugins / folder / "tasks.toml"), needle)
    assert not (tmp_path / "r").exists()


def test_running_a_task_of_an_unreadable_plugin_names_its_file(tmp_path: Path, capsys) -> None:
    plugins = _plugins(tmp_path)
    assert main(["run", "--tasks", "bad-task", "--include-path", str(plugins), "--results-dir", str(tmp_path / "r")]) == EXIT_USAGE
    one_line_error(capsys, "unknown task 'bad-task'", str(plugins / "bad" / "tasks.toml"))


# -- internal errors and incomplete runs ----------------------------------------------------------


def test_an_internal_error_is_exit_4_with_its_traceback_in_a_log(tmp_path: Path, capsys, monkeypatch) -> None:
    from rolebench_eval import cli

    def broken(args):  # noqa: ANN001, ANN202
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "leaderboard", broken)
    results = tmp_path / "results"
    results.mkdir()
    assert main(["leaderboard", "--results-dir", str(results)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    logs = list(results.glob("rbe-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err and "internal error (KeyError: 'a bug')" in err
    assert "Traceback" in logs[0].read_text() and "raise KeyError" in logs[0].read_text()


def test_an_incomplete_run_exits_3_and_says_why(tmp_path: Path, capsys, monkeypatch) -> None:
    from rolebench_eval.running import runner

    def fake_run(self):  # noqa: ANN001, ANN202
        return runner.RunResult(tmp_path, {"tasks": {}}, {"generation": 1}, {}, ["2 judge calls failed after their retries"])

    monkeypatch.setattr(runner.Runner, "run", fake_run)
    monkeypatch.setattr("rolebench_eval.analysis.report.render_terminal", lambda results: "numbers")
    assert main(run_args(tmp_path / "results")) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "rbe: run incomplete: 2 judge calls failed after their retries" in err
    assert "exit 3" in err
