"""A faulty OpenAI-compatible endpoint against every stage of a run, through the real Runner.

The model under test and the judge are real `OpenAIBackend`s talking HTTP to scripted loopback
servers (tests/servers.py). Each distinct request gets a fault plan by stage and arrival rank: 429
with Retry-After, 5xx, a hang past the request timeout, a dropped connection, garbage and empty
bodies, 200 with empty content, and judge replies with nothing parseable. The tests check that no
fault ever becomes a score, that the results' calls section counts exactly what was injected, that
failures are unscored with their reason, and that a rerun against a healthy endpoint (same port,
so the same model identity) resends exactly the calls that failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.backends import openai_backend
from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.analysis.report import render_terminal
from rolebench_eval.running.runner import CONTENT_ATTEMPTS, RunConfig, Runner, RunResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers  # noqa: E402
from servers import FakeOpenAIServer, PerRequest, Reply, drop, empty_body, hang, null_content, ok, raw, status  # noqa: E402

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
# max_attempts 3 per backend call; a 1 s timeout makes a hang cost 1 s, and is still generous for
# a stub's answer on a loaded machine.
OPTIONS = BackendOptions(request_timeout_s=1.0, max_retry_time_s=10, max_attempts=3, concurrency=4)
GOOD_SCORE = 4
RANKING = "[{'model': 'model_1', 'reason': 'r', 'rank': 1}, {'model': 'model_2', 'reason': 'r', 'rank': 2}]"
EXAMPLES = "\n".join(f'Score {k}: Response - "example {k}"' for k in range(1, 6))


class _Jitter:
    @staticmethod
    def uniform(low: float, high: float) -> float:
        return min(high, 0.01)  # backoff sleeps of 10 ms: the retry logic itself is unchanged


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_backend, "random", _Jitter)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


# -- fault plans -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a plan makes of one request: the attempts the server answers, and how it ends."""

    stage: str
    attempts: int = 0
    ends: str = "ok"  # "ok" | "failed" | "empty"


@dataclass
class Plans:
    """Per stage, the fault replies of the n-th distinct request (then its good reply)."""

    faults: dict[str, dict[int, list[Reply]]]
    good: dict[str, Callable[[dict[str, Any]], Reply]]
    stage_of: Callable[[dict[str, Any]], str]
    log: dict[str, Outcome] = field(default_factory=dict)  # body key -> outcome
    _rank: dict[str, dict[str, int]] = field(default_factory=dict)

    def script(self) -> PerRequest:
        def choose(body: dict[str, Any], first_seen: int, attempt: int) -> Reply:
            key = json.dumps(body["messages"], sort_keys=True)
            stage = self.stage_of(body)
            ranks = self._rank.setdefault(stage, {})
            rank = ranks.setdefault(key, len(ranks) + 1)
            outcome = self.log.setdefault(key, Outcome(stage))
            outcome.attempts = attempt
            plan = self.faults.get(stage, {}).get(rank, [])
            return plan[attempt - 1] if attempt <= len(plan) else self.good[stage](body)

        return PerRequest(choose)

    def expect(self, stage: str, rank: int, ends: str) -> None:
        """Mark how the plan of (stage, rank) must end; checked against the calls section."""
        self._ends = getattr(self, "_ends", {})
        self._ends[(stage, rank)] = ends

    def expected(self) -> dict[str, dict[str, int]]:
        """Per stage: made, failed, empty, retried attempts, from what the servers saw."""
        ends = getattr(self, "_ends", {})
        keyed = {key: ends.get((o.stage, self._rank[o.stage][key]), "ok") for key, o in self.log.items()}
        counts: dict[str, dict[str, int]] = {}
        for key, o in self.log.items():
            c = counts.setdefault(o.stage, {"made": 0, "failed": 0, "empty_answers": 0, "retried_attempts": 0})
            c["made"] += 1
            c["retried_attempts"] += o.attempts - 1
            c["failed"] += keyed[key] == "failed"
            c["empty_answers"] += keyed[key] == "empty"
        return counts

    def keys_ending(self, ends: str) -> set[str]:
        marks = getattr(self, "_ends", {})
        return {k for k, o in self.log.items() if marks.get((o.stage, self._rank[o.stage][k]), "ok") == ends}


def _answer(body: dict[str, Any]) -> Reply:
    return ok("In character: " + body["messages"][-1]["content"][:24])


def _judge_stage(body: dict[str, Any]) -> str:
    messages = body["messages"]
    if messages[0]["content"].startswith("You are a role-playing performance comparison assistant") \
            or messages[0]["content"].startswith("你是一个角色扮演表现比较助手"):
        return "pairwise_ranking"
    # The examples model is asked in one user turn, the rubric judge with a system message.
    return "score_examples" if messages[0]["role"] == "user" else "rubric_grading"


def _judge_good(stage: str) -> Callable[[dict[str, Any]], Reply]:
    if stage == "pairwise_ranking":
        return lambda body: ok(RANKING)
    if stage == "score_examples":
        return lambda body: ok(EXAMPLES)

    def grade(body: dict[str, Any]) -> Reply:
        # One segment per question in the batch, so any batch size gets a score for each.
        n = max(1, body["messages"][-1]["content"].count("(") // 2)
        return ok("\n".join(f"({k}) Evaluation: fine. Therefore, the final score is {GOOD_SCORE}" for k in range(1, n + 1)))

    return grade


# Generation faults, shared by both tasks: recovered 429/5xx/hang, a call that stays failed, and
# an answer that stays empty.
GENERATION_FAULTS: dict[int, list[Reply]] = {
    1: [status(429, "slow down", retry_after="0")],
    2: [status(500, "boom"), status(503, "overloaded")],
    3: [hang(30.0)],
    4: [drop(), raw(b"{not json"), empty_body()],  # 3 backend attempts: gives up
    5: [ok(""), ok("   "), null_content()],  # empty after CONTENT_ATTEMPTS
}


def _generation_plans() -> Plans:
    plans = Plans({"generate": GENERATION_FAULTS}, {"generate": _answer}, lambda body: "generate")
    plans.expect("generate", 4, "failed")
    plans.expect("generate", 5, "empty")
    return plans


def _config(tmp_path: Path, model_server: FakeOpenAIServer, judge_server: FakeOpenAIServer, tasks: str,
            **kwargs: Any) -> RunConfig:
    return RunConfig(
        tasks=[tasks], model="policy", backend="openai", base_url=model_server.base_url,
        judges=[f"openai:judge-a,base_url={judge_server.base_url}"], results_dir=tmp_path / "results",
        progress=False, backend_options=OPTIONS, write_leaderboard=False, **kwargs,
    )


def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["stage"]: row for row in results["calls"]["by_role"]}


def _assert_counts_match(results: dict[str, Any], plans: list[Plans]) -> None:
    rows = _rows(results)
    expected: dict[str, dict[str, int]] = {}
    for plan in plans:
        expected.update(plan.expected())
    assert set(rows) == set(expected)
    for stage, counts in expected.items():
        got = {k: rows[stage][k] for k in counts}
        assert got == counts, (stage, rows[stage])
        assert rows[stage]["reused"] == 0


def _healthy(plans: Plans) -> PerRequest:
    return PerRequest(lambda body, first_seen, attempt: plans.good[plans.stage_of(body)](body))


def _resent(server: FakeOpenAIServer, since: int) -> list[str]:
    return [json.dumps(s.body["messages"], sort_keys=True) for s in server.chat_requests[since:]]


def test_personagym_stages_against_a_faulty_endpoint(tmp_path: Path) -> None:
    generation = _generation_plans()
    judging = Plans(
        {
            "score_examples": {1: [status(502, "bad gateway")], 2: [ok("no examples here")]},
            "rubric_grading": {1: [status(429, "slow", retry_after="0")],
                               2: [ok("I cannot grade this.")] * CONTENT_ATTEMPTS},
        },
        {s: _judge_good(s) for s in ("score_examples", "rubric_grading")},
        _judge_stage,
    )
    judging.expect("rubric_grading", 2, "failed")
    with FakeOpenAIServer(generation.script(), models=("policy",)) as model_server, \
            FakeOpenAIServer(judging.script(), models=("judge-a",)) as judge_server:
        config = _config(tmp_path, model_server, judge_server, "personagym-light", limit=1)
        result = Runner(config, log=lambda m: None).run()
        results = result.results
        _assert_counts_match(results, [generation, judging])

        records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
        scores = [j.get("score") for r in records for j in r.get("judgments") or []]
        # No fault became a number: every score is the scripted good one, or absent with a reason.
        assert scores and all(s in (GOOD_SCORE, None) for s in scores), scores
        failed_answers = [r for r in records if r["answer_error"]]
        assert len(failed_answers) == 1 and "gave up after 3 attempt(s)" in failed_answers[0]["answer_error"]
        assert failed_answers[0]["unscored_reason"]
        empty = [r for r in records if r.get("empty_answer")]
        assert len(empty) == 1 and empty[0]["answer"] == "" and results["tasks"]["personagym-light"]["items"]["empty_answers"] == 1
        unscored = [j for r in records for j in r.get("judgments") or [] if j.get("score") is None]
        assert unscored and all(j.get("reason") or j.get("unscored_reason") for j in unscored)
        for summary in results["tasks"]["personagym-light"]["metrics"].values():
            assert summary["mean"] in (None, GOOD_SCORE)
        assert result.incomplete and any("rubric_grading" in line for line in result.incomplete)
        assert any("generate" in line for line in result.incomplete)
        terminal = render_terminal(results)
        assert "retried after" in terminal and "INCOMPLETE" in terminal

        # Rerun against the healthy endpoint: the same ports, so the same model identities.
        second = _rerun_healthy(config, generation, judging, model_server, judge_server)
        assert _rows(second.results)["generate"]["made"] == len(generation.keys_ending("failed") | generation.keys_ending("empty"))


def test_rolebench_pairwise_ranking_against_a_faulty_endpoint(tmp_path: Path) -> None:
    generation = _generation_plans()
    judging = Plans(
        {"pairwise_ranking": {
            1: [status(503, "overloaded"), drop()],  # recovers on the 3rd backend attempt
            2: [ok("I prefer the first one.")],  # unparseable once, then a ranking
            3: [ok("")] * CONTENT_ATTEMPTS,  # stays unusable: a failed call, unscored
        }},
        {"pairwise_ranking": _judge_good("pairwise_ranking")},
        _judge_stage,
    )
    judging.expect("pairwise_ranking", 3, "failed")
    with FakeOpenAIServer(generation.script(), models=("policy",)) as model_server, \
            FakeOpenAIServer(judging.script(), models=("judge-a",)) as judge_server:
        config = _config(tmp_path, model_server, judge_server, "rolebench-zh",
                         task_options={"rolebench_dir": str(FULL)})
        result = Runner(config, log=lambda m: None).run()
        results = result.results
        _assert_counts_match(results, [generation, judging])
        task = results["tasks"]["rolebench-zh"]
        records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
        outcomes = [j["outcome"] for r in records for j in r["judgments"]]
        # The scripted ranking puts model_1 first; a fault is never a verdict.
        assert all(o in ("win", "loss", "unparsed") for o in outcomes), outcomes
        unparsed = [j for r in records for j in r["judgments"] if j["outcome"] == "unparsed"]
        assert len(unparsed) == 1 and "unusable reply" in unparsed[0]["reason"]
        assert task["items"]["empty_answers"] == 1
        judgments = task["items"]["judgments"]
        # Unscored win-rate judgments: the failed judge call's item and the failed generation's.
        assert judgments["n_unscored"] == 2 and judgments["n"] == len(records)
        assert any(why.startswith("generation failed") for why in judgments["unscored_reasons"])
        assert "judgments: 6, 4 scored, 2 unscored" in render_terminal(results)
        assert task["metrics"]["win_rate"]["n"] == 4 and task["metrics"]["win_rate"]["n_unscored"] == 2

        second = _rerun_healthy(config, generation, judging, model_server, judge_server)
        assert second.results["tasks"]["rolebench-zh"]["items"]["judgments"]["n_unscored"] == 0


def _rerun_healthy(config: RunConfig, generation: Plans, judging: Plans,
                   model_server: FakeOpenAIServer, judge_server: FakeOpenAIServer) -> RunResult:
    """Rerun against healthy scripts: exactly the failed calls are sent again (plus judge calls
    that did not exist before: judgments of new answers), none twice, and the run is complete."""
    failed_generation = generation.keys_ending("failed") | generation.keys_ending("empty")
    failed_judging = judging.keys_ending("failed")
    seen_before = {json.dumps(s.body["messages"], sort_keys=True) for s in judge_server.chat_requests}
    model_server.script, judge_server.script = _healthy(generation), _healthy(judging)
    model_mark, judge_mark = len(model_server.chat_requests), len(judge_server.chat_requests)
    second = Runner(config, log=lambda m: None).run()
    assert sorted(_resent(model_server, model_mark)) == sorted(failed_generation)
    resent_judging = _resent(judge_server, judge_mark)
    # A failed judge call asked again is resent, never reused. (One whose inputs changed, e.g. the
    # grading of an answer that failed and now succeeded, is no longer asked at all.)
    lines = [json.loads(line) for line in (second.run_dir / "calls" / "judging.jsonl").read_text().splitlines()]
    succeeded = {json.dumps(line["request"]["messages"], sort_keys=True) for line in lines if line["completion"]["error"] is None}
    assert failed_judging & succeeded <= set(resent_judging)
    assert not (set(resent_judging) - failed_judging) & seen_before
    assert len(resent_judging) == len(set(resent_judging))
    assert second.incomplete == []
    return second
