"""Two `rbe run`s of one command into one results directory: the second waits for the first (or,
with --no-wait, exits 2 naming its PID) and then makes no call the first made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servers import FakeOpenAIServer, Reply, ok  # noqa: E402

from rolebench_eval.errors import RunDirectoryError  # noqa: E402
from rolebench_eval.running.run_lock import RunLock  # noqa: E402

DELAY_S = 0.25  # per reply, so that the first run is still calling when the others start


def scripted(body: dict[str, Any], ordinal: int) -> Reply:
    messages = body["messages"]
    content = messages[-1]["content"]
    if body["model"] == "policy":
        return ok("In character, as asked.", delay=DELAY_S)
    if messages[0]["role"] == "user" or ("Score 1:" in content and "Evaluation" not in content):
        return ok("\n".join(f'Score {k}: Response - "example {k}"' for k in range(1, 6)), delay=DELAY_S)
    return ok("(1) Evaluation: fine. Therefore, the final score is 4", delay=DELAY_S)


def start(server: FakeOpenAIServer, results: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "rolebench_eval.cli", "run", "--tasks", "personagym-light", "--limit", "1",
        "--base-url", server.base_url, "--model", "policy", "--judge", f"openai:judge,base_url={server.base_url}",
        "--concurrency", "1", "--results-dir", str(results), "--no-progress", "--no-leaderboard", *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OPENAI_API_KEY", None)
    out = log.with_suffix(".out").open("wb")
    return subprocess.Popen(command, stdout=out, stderr=log.open("wb"), env=env, cwd=log.parent)


def wait_for(condition, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.server
def test_a_second_run_waits_for_the_first_and_makes_no_call_it_made(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with FakeOpenAIServer(scripted, models=("policy", "judge")) as server:
        first = start(server, results, tmp_path / "first.err")
        wait_for(lambda: len(server.chat_requests) >= 1)  # the first run holds the lock and is calling
        refused = start(server, results, tmp_path / "refused.err", "--no-wait")
        assert refused.wait(timeout=120) == 2
        second = start(server, results, tmp_path / "second.err")
        wait_for(lambda: "waiting for another rbe run" in (tmp_path / "second.err").read_text())
        assert first.wait(timeout=120) == 0
        assert second.wait(timeout=120) == 0
        bodies = [json.dumps(r.body, sort_keys=True) for r in server.chat_requests]

    refused_err = (tmp_path / "refused.err").read_text()
    assert f"is in use by another rbe run (PID {first.pid}" in refused_err and "Traceback" not in refused_err
    assert f"waiting for another rbe run (PID {first.pid})" in (tmp_path / "second.err").read_text()
    first_out = (tmp_path / "first.out").read_text()
    made = int(first_out.split("model calls made:")[1].split(";")[0])
    assert made == len(bodies) == 15  # 5 answers, 5 examples, 5 judgments, each made once
    assert len(set(bodies)) == len(bodies)  # no call was made twice
    assert "model calls made: 0; reused from the run directory: 15" in (tmp_path / "second.out").read_text()


def test_no_wait_names_the_holder_and_the_lock_is_released_after_the_run(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirectoryError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path / "run", wait=False).acquire()
    with RunLock(tmp_path / "run", wait=False):  # free again once released
        assert (tmp_path / "run" / "run.lock").read_text().strip() == str(os.getpid())


def test_the_lock_file_does_not_make_a_fresh_run_directory_look_corrupted(tmp_path: Path) -> None:
    from rolebench_eval.running import run_dir as rd

    with RunLock(tmp_path / "run"):
        rd.open_run_dir(tmp_path / "run", {"config_hash": "abc"})
    assert json.loads((tmp_path / "run" / "manifest.json").read_text()) == {"config_hash": "abc"}
