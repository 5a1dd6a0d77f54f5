"""`rbe questions generate` killed mid-way (SIGKILL, a real process) continues without repeating a
call, and a rerun after it finished makes none; the requests reach an OpenAI-compatible endpoint
as the reference sends them (one user message, temperature/top_p 0.9, max_tokens 3000, no seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import EXIT_OK

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import FakeOpenAIServer, Reply, ok  # noqa: E402

PERSONAS = ["A glassblower from Murano", "A night-bus driver in Seoul", "A falconer from Abu Dhabi"]
CALLS_PER_PERSONA = 6  # environments, then one call per task


def script(body: dict[str, Any], ordinal: int) -> Reply:
    prompt = body["messages"][-1]["content"]
    if "Selected Settings:" in prompt:
        return ok("```python\n['Wedding', 'Courtroom']\n```", delay=0.3)
    task = prompt.split("Evaluation Task: ")[1].split("\n")[0]
    return ok(repr([f"In the Courtroom, how would you handle {task} case {i}?" for i in range(2)]), delay=0.3)


def saved_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_killed_generation_resumes_and_a_rerun_makes_no_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    personas = tmp_path / "personas.txt"
    personas.write_text("\n".join(PERSONAS) + "\n")
    output = tmp_path / "set"
    calls = output / "calls.jsonl"
    with FakeOpenAIServer(script=script) as server:
        args = ["questions", "generate", "--personas", str(personas), "--generator",
                f"openai:fake-model,base_url={server.base_url}", "--num-questions", "2", "--output", str(output),
                "--concurrency", "1", "--no-progress"]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-key"}
        process = subprocess.Popen([sys.executable, "-m", "rolebench_eval.cli", *args], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and len(saved_lines(calls)) < 4:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        before = saved_lines(calls)
        assert 4 <= len(before) < len(PERSONAS) * CALLS_PER_PERSONA, process.stderr.read().decode()[-2000:]
        assert not (output / "question-set.json").exists()  # killed before the set was written

        os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-key")
        assert main(args) == EXIT_OK
        out = capsys.readouterr().out
        after = saved_lines(calls)
        assert len(after) == len(PERSONAS) * CALLS_PER_PERSONA
        assert len({line["key"] for line in after}) == len(after)  # no call was made twice
        made = len(after) - len(before)
        assert f"model calls made: {made}; reused from the set's calls: {len(before)}" in out

        sent = len(server.chat_requests)
        assert main(args) == EXIT_OK
        assert "model calls made: 0; reused from the set's calls: 18" in capsys.readouterr().out
        assert len(server.chat_requests) == sent  # the rerun sent nothing

        body = server.chat_requests[0].body
        assert body is not None
        assert [m["role"] for m in body["messages"]] == ["user"]
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.9, 0.9, 3000)
        assert not {"seed", "frequency_penalty", "presence_penalty"} & set(body)
    manifest = json.loads((output / "question-set.json").read_text())
    assert manifest["totals"]["questions"] == len(PERSONAS) * 5 * 2 and manifest["complete"] is True
    assert "sk-test" not in (output / "question-set.json").read_text()
