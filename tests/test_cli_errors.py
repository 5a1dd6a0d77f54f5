"""Bad input fails fast: a clear message naming the problem, exit code 2, nothing computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolebench_eval.cli import main


def run_cli(tmp_path: Path, *args: str) -> list[str]:
    return ["run", "--results-dir", str(tmp_path / "results"), "--no-progress", *args]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "persongym-lite"], "unknown task 'persongym-lite'. Did you mean 'personagym-light'?"),
        (["--tasks", "personagym-light", "--backend", "vlm"], "unknown backend 'vlm'. Did you mean 'vllm'?"),
        (["--tasks", "personagym-light", "--protocol", "opencharcter", "--judge", "embedded"],
         "unknown protocol 'opencharcter'. Did you mean 'opencharacter'?"),
        (["--tasks", "personagym-light", "--judge", "vlm:/models/judge"], "unknown judge backend 'vlm'. Did you mean 'vllm'?"),
        (["--tasks", "personagym-light", "--model", "/no/such/checkpoint"], "--model: no such file or folder: /no/such/checkpoint"),
        (["--tasks", "personagym-light", "--judge", "hf:/no/such/judge"], "no such file or folder: /no/such/judge"),
        (["--tasks", "personagym-light", "--judge", "x,temperature=1"], "bad option 'temperature=1'"),
        (["--tasks", "personagym-light", "--judge", "a,label=same", "--judge", "b,label=same"], "share the label"),
        (["--tasks", "personagym-light", "--task-option", "novalue"], "--task-option 'novalue': expected KEY=VALUE"),
        (["--tasks", "personagym-light", "--include-path", "/no/such/plugins"], "not a folder: /no/such/plugins"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(run_cli(tmp_path, *args)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # nothing was started


def test_missing_api_key_for_the_openai_api(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert main(run_cli(tmp_path, "--tasks", "personagym-light", "--judge", "gpt-4o-2024-08-06", "--limit", "1")) == 2
    err = capsys.readouterr().err
    assert "missing API key for gpt-4o-2024-08-06: set the environment variable OPENAI_API_KEY" in err


def test_model_path_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    assert main(run_cli(tmp_path, "--tasks", "personagym-light", "--model", str(folder), "--limit", "1",
                        "--judge", "openai:j,base_url=http://127.0.0.1:9/v1")) == 2
    assert "does not answer" in capsys.readouterr().err  # the judge endpoint is checked first, before loading


def test_non_model_folder_is_rejected_when_loaded(tmp_path: Path) -> None:
    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.backends.hf_backend import HFBackend
    from rolebench_eval.errors import BackendError

    folder = tmp_path / "not-a-model"
    folder.mkdir()
    with pytest.raises(BackendError, match="not a Hugging Face model folder"):
        HFBackend(str(folder), BackendOptions())
    text_file = tmp_path / "model.txt"
    text_file.write_text("x")
    with pytest.raises(BackendError, match="not a .gguf"):
        HFBackend(str(text_file), BackendOptions())


def test_limit_must_be_positive(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--tasks", "personagym-light", "--limit", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


def test_ls_lists_tasks_backends_judges_protocols(capsys) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ["personagym-light", "personagym-all", "hf", "openai", "vllm", "lm-eval", "gpt-4o-2024-08-06", "opencharacter"]:
        assert name in out


def test_external_task_folder_is_a_plugin(tmp_path: Path, capsys) -> None:
    plugin = tmp_path / "plugins" / "echo"
    plugin.mkdir(parents=True)
    (plugin / "tasks.toml").write_text(
        '[[task]]\nname = "echo-task"\nfactory = "impl:make"\nversion = "3"\ndescription = "echo"\nrequires_judge = false\n'
    )
    (plugin / "impl.py").write_text(
        "from rolebench_eval.task_api import Task\n"
        "def make(spec, settings):\n    raise NotImplementedError\n"
    )
    assert main(["ls", "--include-path", str(tmp_path / "plugins")]) == 0
    assert "echo-task" in capsys.readouterr().out
