"""ApiLane: adaptive and pinned concurrency, Retry-After, replicas, and the replicas' identity.

In-process endpoints (no HTTP) drive the lane's own logic; the replica tests run the real
OpenAIBackend against scripted loopback servers (tests/servers.py). Assertions are on counts and
orders of events, never on how long something took.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.backends import openai_backend
from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.backends.openai_backend import OpenAIBackend
from rolebench_eval.cli import main
from rolebench_eval.errors import BackendError, UsageError
from rolebench_eval.models import ReplicaMismatch, judge_spec, model_under_test, preflight, spec_identity
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message, Usage
from rolebench_eval.scheduling.api_lane import (
    FATAL,
    FINAL,
    OK,
    RETRY,
    ApiLane,
    ApiLaneSettings,
    AttemptOutcome,
)
from rolebench_eval.scheduling.concurrency import ControllerSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import servers  # noqa: E402
from servers import FakeOpenAIServer, drop, ok, raw  # noqa: E402


def request(text: str) -> ChatRequest:
    return ChatRequest((Message("user", text),), GenerationParams(max_tokens=8))


def no_jitter(low: float, high: float) -> float:
    return min(high, 0.001)


class FakeEndpoint:
    """An endpoint in this process: `reply(request, attempt_no)` decides each attempt, after
    `latency` seconds. It records the in-flight count and every attempt's start."""

    def __init__(self, name: str, reply: Callable[[ChatRequest, int], AttemptOutcome] | None = None,
                 latency: float = 0.01):
        self.name = name
        self.reply = reply or (lambda req, n: AttemptOutcome(OK, completion=Completion(
            text=f"{name}: {req.messages[-1].content}", usage=Usage(5, 10))))
        self.latency = latency
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[tuple[float, str]] = []
        self.tries: dict[str, int] = {}
        self.opened = 0
        self.closed = 0

    def open_client(self) -> object:
        asyncio.get_running_loop()  # the lane must open clients inside the loop
        self.opened += 1
        return object()

    async def close_client(self, client: object) -> None:
        self.closed += 1

    async def attempt(self, client: object, req: ChatRequest) -> AttemptOutcome:
        text = req.messages[-1].content
        self.tries[text] = self.tries.get(text, 0) + 1
        self.starts.append((time.monotonic(), text))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            return self.reply(req, self.tries[text])
        finally:
            self.in_flight -= 1


def run_lane(lane: ApiLane, requests: Sequence[ChatRequest]) -> tuple[list[Completion], dict[str, Any]]:
    async def go() -> tuple[list[Completion], dict[str, Any]]:
        try:
            done = await asyncio.gather(*(lane.complete(r) for r in requests))
            return list(done), lane.snapshot()
        finally:
            await lane.aclose()

    return asyncio.run(go())


def adaptive(**controller: Any) -> ApiLaneSettings:
    return ApiLaneSettings(controller=ControllerSettings(**{"window_s": 0.02, **controller}),
                           max_attempts=50, max_retry_time_s=60)


# -- concurrency ----------------------------------------------------------------------------------


def test_pinned_concurrency_3_never_has_more_than_3_in_flight() -> None:
    endpoint = FakeEndpoint("a", latency=0.02)
    settings = ApiLaneSettings.from_options(BackendOptions(concurrency=3))
    completions, snap = run_lane(ApiLane("m", [endpoint], settings), [request(f"q{i}") for i in range(24)])
    assert all(c.ok for c in completions)
    assert endpoint.max_in_flight == 3  # never more, and the pin was really used
    assert snap["concurrency"] == {"mode": "pinned", "concurrency": 3}
    assert snap["replicas"][0]["peak_limit"] == 3 and snap["replicas"][0]["peak_in_flight"] == 3
    assert endpoint.opened == 1 and endpoint.closed == 1  # one client, opened in the loop, closed


def test_default_is_adaptive_starting_low_and_rises_while_throughput_rises() -> None:
    # Latency does not grow with the load: every extra request in flight is more throughput, so
    # the limit must climb from its low start, and never past the cap.
    options = BackendOptions(max_concurrency=32)
    settings = ApiLaneSettings.from_options(options)
    assert options.concurrency is None and settings.pinned is None and settings.controller.initial == 32
    settings = ApiLaneSettings(controller=ControllerSettings(initial=4, max_concurrency=32, window_s=0.02))
    endpoint = FakeEndpoint("a", latency=0.02)
    completions, snap = run_lane(ApiLane("m", [endpoint], settings), [request(f"q{i}") for i in range(600)])
    assert all(c.ok for c in completions)
    replica = snap["replicas"][0]
    assert snap["concurrency"] == {"mode": "adaptive", "initial": 4, "max_concurrency": 32}
    assert replica["peak_limit"] >= 16, replica  # doubled at least twice from 4
    assert endpoint.max_in_flight <= 32


def test_converges_under_a_rate_limit_without_a_failed_call() -> None:
    # A request limit (token bucket, 100/s, 10 of burst) answered with 429 + Retry-After.
    state = {"level": 10.0, "stamp": time.monotonic()}
    rate, burst = 100.0, 10.0
    limited = [0]

    def reply(req: ChatRequest, attempt: int) -> AttemptOutcome:
        now = time.monotonic()
        state["level"] = min(burst, state["level"] + (now - state["stamp"]) * rate)
        state["stamp"] = now
        if state["level"] < 1:
            limited[0] += 1
            return AttemptOutcome(RETRY, failure="rate_limited", error="HTTP 429 rate limited",
                                  retry_after_s=(1 - state["level"]) / rate)
        state["level"] -= 1
        return AttemptOutcome(OK, completion=Completion(text="x", usage=Usage(1, 10)))

    endpoint = FakeEndpoint("a", reply, latency=0.02)
    n = 300
    completions, snap = run_lane(ApiLane("m", [endpoint], adaptive(initial=4)), [request(f"q{i}") for i in range(n)])
    assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
    # Every 429 was a retried attempt on a call that then succeeded, and they stay few: the
    # limit settles under the rate instead of hammering it.
    assert sum(c.attempts - 1 for c in completions) == limited[0] == snap["retried_attempts"]
    assert limited[0] < 0.25 * n, limited[0]
    # Metered by Retry-After: the starts were paced (concurrency.py), the limit was not cut.
    assert snap["replicas"][0]["failures"]["rate_limited"] == limited[0] > 0
    assert snap["replicas"][0]["limit_decreases"] == 0 and snap["replicas"][0]["paced"]


def test_retry_after_pauses_the_endpoint_until_then() -> None:
    def reply(req: ChatRequest, attempt: int) -> AttemptOutcome:
        if req.messages[-1].content == "q0" and attempt == 1:
            return AttemptOutcome(RETRY, failure="rate_limited", error="HTTP 429 slow down", retry_after_s=0.3)
        return AttemptOutcome(OK, completion=Completion(text="x"))

    endpoint = FakeEndpoint("a", reply, latency=0.01)
    settings = ApiLaneSettings(pinned=1, max_attempts=3, max_retry_time_s=10)
    lane = ApiLane("m", [endpoint], settings, jitter=lambda lo, hi: pytest.fail("jitter despite Retry-After"))
    completions, _ = run_lane(lane, [request("q0"), request("q1")])
    assert [c.attempts for c in completions] == [2, 1]
    assert completions[0].attempt_errors == ("HTTP 429 slow down",)
    (t429, _), *rest = endpoint.starts
    # Nothing at all started on the endpoint before the pause ended, q1 included.
    assert [text for _, text in rest] == ["q0", "q1"] or [text for _, text in rest] == ["q1", "q0"]
    assert all(t - t429 >= 0.3 for t, _ in rest), [t - t429 for t, _ in rest]


def test_429s_with_retry_after_pace_the_request_without_using_up_its_attempts() -> None:
    # A server pacing a request six times with Retry-After, then answering: with 3 attempts
    # allowed, the request still succeeds (bounded by the retry deadline, not the attempt count).
    def reply(req: ChatRequest, attempt: int) -> AttemptOutcome:
        if attempt <= 6:
            return AttemptOutcome(RETRY, failure="rate_limited", error=f"HTTP 429 #{attempt}", retry_after_s=0.01)
        return AttemptOutcome(OK, completion=Completion(text="x"))

    endpoint = FakeEndpoint("a", reply, latency=0.001)
    lane = ApiLane("m", [endpoint], ApiLaneSettings(pinned=1, max_attempts=3, max_retry_time_s=10), jitter=no_jitter)
    [completion], _ = run_lane(lane, [request("q")])
    assert completion.ok and completion.attempts == 7
    assert completion.attempt_errors == tuple(f"HTTP 429 #{n}" for n in range(1, 7))
    # A transport fault without Retry-After still counts: 3 attempts, then it gives up.
    failing = FakeEndpoint("b", lambda req, n: AttemptOutcome(RETRY, failure="rate_limited", error=f"HTTP 429 #{n}"))
    lane = ApiLane("m", [failing], ApiLaneSettings(pinned=1, max_attempts=3), jitter=no_jitter)
    [completion], _ = run_lane(lane, [request("q")])
    assert completion.error == "HTTP 429 #3 (gave up after 3 attempt(s))"


def test_400_ends_at_once_and_fatal_reaches_every_waiter() -> None:
    final = FakeEndpoint("a", lambda req, n: AttemptOutcome(FINAL, completion=Completion.failure("HTTP 400: too long")))
    [completion], _ = run_lane(ApiLane("m", [final], ApiLaneSettings(pinned=2)), [request("q")])
    assert completion.error == "HTTP 400: too long" and completion.attempts == 1 and final.tries == {"q": 1}
    fatal = FakeEndpoint("a", lambda req, n: AttemptOutcome(FATAL, exception=BackendError("key rejected")))
    lane = ApiLane("m", [fatal], ApiLaneSettings(pinned=1))

    async def go() -> list[Any]:
        return await asyncio.gather(*(lane.complete(request(f"q{i}")) for i in range(5)), return_exceptions=True)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, BackendError) for o in outcomes)
    assert sum(fatal.tries.values()) == 1  # the queued four were never sent


def test_transport_failures_give_up_after_max_attempts_naming_each() -> None:
    endpoint = FakeEndpoint("a", lambda req, n: AttemptOutcome(RETRY, failure="server_error", error=f"HTTP 503 #{n}"))
    lane = ApiLane("m", [endpoint], ApiLaneSettings(pinned=1, max_attempts=3), jitter=no_jitter)
    [completion], _ = run_lane(lane, [request("q")])
    assert completion.error == "HTTP 503 #3 (gave up after 3 attempt(s))"
    assert completion.attempts == 3 and completion.attempt_errors == ("HTTP 503 #1", "HTTP 503 #2")


# -- replicas, in process ---------------------------------------------------------------------------


def test_replicas_share_by_free_capacity() -> None:
    # Pinned at 2 and at 6 in flight: the queue goes to whichever has room, so the wider
    # replica takes about three times as many.
    a, b = FakeEndpoint("a", latency=0.02), FakeEndpoint("b", latency=0.02)
    lane = ApiLane("m", [a, b], ApiLaneSettings(pinned=4))
    # Two replicas of different widths, as two adaptive controllers could have settled.
    lane._replicas[0].controller.pinned = lane._replicas[0].controller._limit = 2  # type: ignore[attr-defined]
    lane._replicas[1].controller.pinned = lane._replicas[1].controller._limit = 6  # type: ignore[attr-defined]
    completions, snap = run_lane(lane, [request(f"q{i}") for i in range(80)])
    assert all(c.ok for c in completions)
    assert (a.max_in_flight, b.max_in_flight) == (2, 6)
    share_b = len(b.starts) / 80
    assert 0.6 <= share_b <= 0.9, (len(a.starts), len(b.starts))
    assert [r["completed"] for r in snap["replicas"]] == [len(a.starts), len(b.starts)]


# -- replicas over HTTP: the real backend ----------------------------------------------------------


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(openai_backend, "random", type("J", (), {"uniform": staticmethod(no_jitter)}))


def run_backend_lane(backend: OpenAIBackend, requests: Sequence[ChatRequest]) -> tuple[list[Completion], dict[str, Any]]:
    return run_lane(backend.lane("m"), requests)


def test_two_replicas_spread_the_load() -> None:
    options = BackendOptions(concurrency=4, request_timeout_s=5, max_attempts=3, max_retry_time_s=10)
    with FakeOpenAIServer(servers.always(ok(delay=0.03))) as a, FakeOpenAIServer(servers.always(ok(delay=0.03))) as b:
        backend = OpenAIBackend("fake-model", options, base_url=a.base_url, replicas=[b.base_url])
        completions, snap = run_backend_lane(backend, [request(f"q{i}") for i in range(40)])
    assert all(c.ok and c.attempts == 1 for c in completions)
    assert len(a.chat_requests) + len(b.chat_requests) == 40
    assert len(a.chat_requests) >= 12 and len(b.chat_requests) >= 12, (len(a.chat_requests), len(b.chat_requests))
    assert a.max_in_flight <= 4 and b.max_in_flight <= 4
    assert [r["endpoint"] for r in snap["replicas"]] == [a.base_url, b.base_url]


def test_a_replica_dying_mid_run_hands_its_requests_to_the_other() -> None:
    # b answers its first three requests, then resets every connection (a killed server).
    options = BackendOptions(concurrency=4, request_timeout_s=5, max_attempts=4, max_retry_time_s=30)
    dying = servers.sequence(ok(delay=0.02), ok(delay=0.02), ok(delay=0.02), then=drop())
    with FakeOpenAIServer(servers.always(ok(delay=0.02))) as a, FakeOpenAIServer(dying) as b:
        backend = OpenAIBackend("fake-model", options, base_url=a.base_url, replicas=[b.base_url])
        n = 40
        completions, snap = run_backend_lane(backend, [request(f"q{i}") for i in range(n)])
        b_attempts = len(b.chat_requests)
    assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
    assert len(a.chat_requests) == n - 3  # every request b did not answer was answered by a
    moved = [c for c in completions if c.attempts > 1]
    # Each request b dropped finished on a, its dropped attempt on the record.
    assert len(moved) == sum(c.attempts - 1 for c in completions) == b_attempts - 3 > 0
    assert all("connection error" in c.attempt_errors[0] for c in moved)
    replica_b = snap["replicas"][1]
    assert replica_b["taken_out"] >= 1 and replica_b["failures"]["connection"] == b_attempts - 3
    assert snap["retried_attempts"] == b_attempts - 3


# -- replicas: parsing and identity ----------------------------------------------------------------


def models_reply(root: str) -> servers.Reply:
    entry = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "vllm", "root": root,
             "max_model_len": 4096}
    return raw(json.dumps({"object": "list", "data": [entry]}).encode())


def test_base_url_names_replicas_separated_by_a_bar() -> None:
    spec = model_under_test("m", None, "http://a:1/v1 | http://b:2/v1/", None)
    assert (spec.backend, spec.base_url, spec.replicas) == ("openai", "http://a:1/v1", ("http://b:2/v1",))
    judge = judge_spec("openai:j,base_url=http://a:1/v1|http://b:2/v1,label=J", None)
    assert (judge.base_url, judge.replicas, judge.label) == ("http://a:1/v1", ("http://b:2/v1",), "J")
    # A comma stays part of a URL's path, not a separator.
    assert model_under_test("m", None, "http://a:1/x,y/v1", None).replicas == ()
    with pytest.raises(UsageError, match="an empty URL"):
        model_under_test("m", None, "http://a:1/v1||http://b:2/v1", None)
    with pytest.raises(UsageError, match="named twice"):
        model_under_test("m", None, "http://a:1/v1|http://a:1/v1", None)


def test_replicas_serving_one_checkpoint_share_one_identity_without_urls() -> None:
    with FakeOpenAIServer(models_reply=models_reply("/ckpt/llama")) as a, \
            FakeOpenAIServer(models_reply=models_reply("/ckpt/llama")) as b:
        spec = preflight(model_under_test("fake-model", None, f"{a.base_url}|{b.base_url}", None))
        single = preflight(model_under_test("fake-model", None, b.base_url, None))
    assert spec is not None and single is not None
    identity = spec_identity(spec, BackendOptions())
    assert identity == spec_identity(single, BackendOptions())  # the model's, not a replica's
    assert a.base_url not in identity and b.base_url not in identity
    assert spec.describe()["replicas"] == [b.base_url]


def test_replicas_serving_different_checkpoints_are_refused_naming_both() -> None:
    with FakeOpenAIServer(models_reply=models_reply("/ckpt/step-1000")) as a, \
            FakeOpenAIServer(models_reply=models_reply("/ckpt/step-2000")) as b:
        with pytest.raises(ReplicaMismatch) as info:
            preflight(model_under_test("fake-model", None, f"{a.base_url}|{b.base_url}", None))
    message = str(info.value)
    assert "\n" not in message and a.base_url in message and b.base_url in message
    assert "different checkpoints" in message


def test_cli_refuses_mismatched_replicas_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(models_reply=models_reply("/ckpt/a")) as a, \
            FakeOpenAIServer(models_reply=models_reply("/ckpt/b")) as b:
        code = main(["run", "--model", "fake-model", "--base-url", f"{a.base_url}|{b.base_url}",
                     "--tasks", "personagym-light", "--limit", "1", "--judge", "embedded",
                     "--results-dir", str(tmp_path / "results"), "--no-progress", "--no-leaderboard"])
        err = capsys.readouterr().err
        assert not a.chat_requests and not b.chat_requests
    assert code == 2, err
    assert "different checkpoints" in err and a.base_url in err and b.base_url in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--concurrency", "3", "--max-concurrency", "8"], "give one of them"),
        (["--max-concurrency", "8"], "--max-concurrency applies to the openai backend only"),
        (["--base-url", "http://a:1/v1||http://b:1/v1", "--model", "m"], "an empty URL"),
    ],
)
def test_cli_concurrency_and_replica_flags_are_checked(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--base-url" not in flags and "give one" in message:
        flags = [*flags, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    code = main(["run", "--tasks", "personagym-light", "--limit", "1", *flags,
                 "--results-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
