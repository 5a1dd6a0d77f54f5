"""The benchmark's simulated batching server: its timing model, its replies, its rate limit."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.judges.rubric_judge import parse_grading_reply, process_examples

_PATH = Path(__file__).resolve().parents[1] / "bench" / "sim_server.py"
_spec = importlib.util.spec_from_file_location("sim_server", _PATH)
sim = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["sim_server"] = sim
_spec.loader.exec_module(sim)  # type: ignore[union-attr]


def _post(base_url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def _chat(text: str, max_tokens: int = 1000) -> dict[str, Any]:
    return {"model": "sim-model", "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": "Adopt the identity of X."},
                         {"role": "user", "content": text}]}


def test_gain_sets_alpha_and_peak() -> None:
    config = sim.SimConfig(slots=64, gain=13.6, step_s=0.001)
    assert config.step_time(1) == pytest.approx(0.001)
    # gain = throughput at full slots / at batch 1
    assert (64 / config.step_time(64)) / (1 / config.step_time(1)) == pytest.approx(13.6)
    assert config.peak_tokens_per_s == pytest.approx(13600.0)
    with pytest.raises(ValueError, match="gain"):
        sim.SimConfig(slots=8, gain=9.0)


def test_replies_parse_as_personagym_examples_and_judgments() -> None:
    rubric_items = ["rubric one text", "rubric two text"]
    examples_prompt = ("You are given several rubrics below and are asked to create examples of each "
                       "score category for the rubrics\n\nRubrics:\n" + str(rubric_items))
    kind, items = sim.classify([{"role": "user", "content": examples_prompt}])
    assert (kind, items) == ("examples", rubric_items)
    rng = sim.random.Random(1)
    examples = sim.reply_text("examples", 2, 100, rng)
    assert process_examples(examples).count("Score ") == 10

    judge_prompt = "You are given several rubrics to evaluate persona responses below.\nRubrics: \n" + str(
        ["a", "b", "c"]) + "\n\n"
    kind, items = sim.classify([{"role": "system", "content": "judge"}, {"role": "user", "content": judge_prompt}])
    assert (kind, len(items)) == ("judge", 3)
    scores = parse_grading_reply(sim.reply_text("judge", 3, 60, rng), 3)
    assert [s.unscored_reason for s in scores] == [None, None, None]
    assert all(1 <= s.score <= 5 for s in scores)


def test_batching_timing_and_stats() -> None:
    # 4 slots, gain 2: step at full batch = 2 ms * (1 + alpha * 3) with alpha = 1/3 -> 4 ms.
    config = sim.SimConfig(slots=4, gain=2.0, step_s=0.002, lifetime_s=60, lengths={
        "answer": (50.0, 0.0), "other": (50.0, 0.0), "examples": (50.0, 0.0), "judge": (50.0, 0.0)})
    with sim.SimServer(config) as server:
        status, _, reply = _post(server.base_url, _chat("alone"))
        assert status == 200 and reply["usage"]["completion_tokens"] == 50
        status, _, clipped = _post(server.base_url, _chat("short", max_tokens=7))
        assert clipped["usage"]["completion_tokens"] == 7
        assert clipped["choices"][0]["finish_reason"] == "length"
        # 8 requests at once on 4 slots: two waves of 50 steps at 4 ms = about 0.4 s.
        start = time.monotonic()
        threads = [threading.Thread(target=_post, args=(server.base_url, _chat(f"q{i}"))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        stats = server.stats()
    assert stats["completed"] == 10
    assert stats["completion_tokens"] == 50 + 7 + 8 * 50
    assert stats["max_running"] == 4
    assert 0.38 <= elapsed < 2.0  # never faster than the model allows
    assert stats["peak_tokens_per_s"] == pytest.approx(1000.0)
    kinds = {entry["kind"] for entry in server.log}
    assert kinds == {"answer"}


def test_rate_limit_answers_429_with_retry_after() -> None:
    config = sim.SimConfig(slots=8, gain=4.0, step_s=0.001, requests_per_s=2.0, lifetime_s=60,
                           lengths={"answer": (5.0, 0.0), "other": (5.0, 0.0)})
    with sim.SimServer(config) as server:
        codes = [_post(server.base_url, _chat(f"q{i}")) for i in range(3)]
        stats = server.stats()
    assert [c[0] for c in codes] == [200, 200, 429]  # a burst of one second = 2 requests
    retry_after = float(codes[2][1]["Retry-After"])
    assert 0.0 < retry_after <= 0.5
    assert stats["rate_limited"] == 1 and stats["completed"] == 2


def test_models_and_unknown_model() -> None:
    with sim.SimServer(sim.SimConfig(models=("a", "b"), lifetime_s=60)) as server:
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=10) as response:
            listed = [m["id"] for m in json.loads(response.read())["data"]]
        status, _, body = _post(server.base_url, {**_chat("x"), "model": "c"})
    assert listed == ["a", "b"]
    assert status == 404 and "not served" in body["error"]["message"]


def test_stops_by_itself() -> None:
    server = sim.SimServer(sim.SimConfig(lifetime_s=0.3))
    server.start()
    server._thread.join(5)
    assert not server._thread.is_alive()
