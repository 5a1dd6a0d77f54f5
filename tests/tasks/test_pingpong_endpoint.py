"""PingPong over real HTTP: the model under test, the interrogator and the judge behind loopback
OpenAI-compatible endpoints; every request body is the reference pipeline's (same messages, same
sampling parameters, nothing else that changes the reply), checked against the authors' code run on
the same fixed replies (tests/fixtures/pingpong/reference_requests.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import FakeOpenAIServer, ok  # noqa: E402

from rolebench_eval.backends.base import BackendOptions  # noqa: E402
from rolebench_eval.running.runner import RunConfig, Runner  # noqa: E402

pytestmark = pytest.mark.server

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pingpong" / "reference_requests.json"
OPTIONS = BackendOptions(request_timeout_s=5.0, max_retry_time_s=10, max_attempts=3, concurrency=4)


def reply(body: dict[str, Any], ordinal: int):  # noqa: ANN201 - a servers.Reply
    """The fixed replies of make_reference_requests.py, chosen from the request itself."""
    messages = body["messages"]
    if messages[0]["content"].startswith("You follow"):
        turn = messages[1]["content"].count("\nplayer: ") + 1
        return ok(f'  Sure!  {{"next_utterance": "Turn {turn}:  are you  \\"real\\"? *pokes*"}}  ')
    if messages[0]["content"].startswith("Please act as an impartial judge"):
        n = messages[1]["content"].count("\nplayer: ")
        scores = [{"turn": t, "is_refusal_explanation": "no", "is_refusal": False,
                   "in_character_explanation": "ok", "in_character_score": 4,
                   "entertaining_explanation": "ok", "entertaining_score": 3,
                   "fluency_explanation": "ok", "fluency_score": 5} for t in range(1, n + 1)]
        return ok("```json\n" + json.dumps({"scores": scores}, indent=1) + "\n```")
    return ok(f"\n *Kurisu  sighs*   Turn {len(messages) // 2} answer.    Fine.  \n")


def test_request_bodies_are_the_reference_pipelines(tmp_path: Path) -> None:
    (case,) = [c for c in json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"] if c["language"] == "en"]
    with FakeOpenAIServer(reply, models=("player", "interrogator", "judge")) as server:
        config = RunConfig(
            tasks=["pingpong-en"], model="player", backend="openai", base_url=server.base_url,
            judges=[f"openai:judge,base_url={server.base_url}"], user_model=f"openai:interrogator,base_url={server.base_url}",
            limit=1, results_dir=tmp_path / "results", progress=False, backend_options=OPTIONS, write_leaderboard=False,
        )
        result = Runner(config, log=lambda m: None).run()
        bodies = [s.body for s in server.chat_requests]
    expected = case["requests"]
    assert len(bodies) == len(expected) == 9
    for body, want in zip(bodies, expected):  # each dialogue's calls are sequential: arrival order is turn order
        assert body["messages"] == want["messages"]
        assert {k: body.get(k) for k in ("temperature", "top_p", "max_tokens")} == want["params"]
        assert "seed" not in body and "stop" not in body  # the reference sends neither
    assert [b["model"] for b in bodies] == ["interrogator", "player"] * 4 + ["judge"]
    task = result.results["tasks"]["pingpong-en"]
    assert task["metrics"]["final"]["mean"] == pytest.approx(4.0) and task["items"]["n_scored"] == 1
    assert task["reference"]["per_judge"]["judge"]["final_score"] == pytest.approx(4.0)
