"""Guided judge output (--judge-output guided): the format regexes, the request hash, the
roles that are guided, the task manifests, and the OpenAI-compatible backend's request body.

The regexes are checked against judge replies written the way the protocols' prompts ask for
them (GPT-style: markdown, parentheses, several paragraphs) and against malformed ones; every
reply a regex accepts must give a verdict under the task's own parser.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.backends.guided import reply_matches, unguided_reply_problem
from rolebench_eval.backends.openai_backend import OpenAIBackend
from rolebench_eval.errors import BackendError, UsageError
from rolebench_eval.judges.pairwise_ranking import ANONYMOUS_NAMES, parse_ranking
from rolebench_eval.judges.rubric_judge import parse_grading_reply, process_examples
from rolebench_eval.models import ModelSpec
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message
from rolebench_eval.running import judge_output
from rolebench_eval.task_api import JudgeSpec, RunSettings
from rolebench_eval.tasks.personagym.protocols import examples_regex, grading_regex
from rolebench_eval.tasks.rolebench.prompts import ranking_regex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import FakeOpenAIServer, always, ok, status  # noqa: E402

GPT_STYLE_ONE = (
    "(1) Evaluation: The response stays in character as a retired sailor (he mentions the "
    "harbour, his knees, and \"the old days\").\n\n**Strengths:** vivid, specific.\n"
    "**Weaknesses:** it drifts into a lecture; see rubric item 3 (tone).\n\n"
    "Therefore, the final score is 4"
)
GRADING_REPLIES = [
    (GPT_STYLE_ONE, 1, [4]),
    ("(1) Evaluation: Therefore, the final score is 5.", 1, [5]),
    ("(1) Evaluation:\nShort and flat. Therefore, the final score is 2.\n", 1, [2]),
    (
        "".join(
            f"({k}) Evaluation: Answer {k} (of five) is judged on its own merits: "
            f"it fits the persona. Therefore, the final score is {k}.\n\n"
            for k in range(1, 6)
        ),
        5,
        [1, 2, 3, 4, 5],
    ),
]
MALFORMED_GRADING = [
    ("I would give it a 4.", 1),  # no segment
    ("(1) Evaluation: good, a 4.", 1),  # no score sentence
    ("(1) Evaluation: Therefore, the final score is 7", 1),  # outside 1..5
    ("(1) Evaluation: Therefore, the final score is 0", 1),
    ("Here are my evaluations:\n(1) Evaluation: Therefore, the final score is 3", 1),  # preamble
    ("(1) Evaluation:\n(2) Evaluation:\n(3) Evaluation:\n(4) Evaluation:\n(5) Evaluation:\n", 1),  # echo
    ("(1) Evaluation: fine. Therefore, the final score is 3", 2),  # segment (2) missing
    ("(2) Evaluation: x. Therefore, the final score is 3 (1) Evaluation: y. Therefore, the final score is 4", 2),
    ("(1) Evaluation: see (2) Evaluation: below. Therefore, the final score is 3", 1),  # a label inside
]


@pytest.mark.parametrize(("reply", "n", "scores"), GRADING_REPLIES)
def test_grading_regex_accepts_replies_in_the_protocols_format(reply: str, n: int, scores: list[int]) -> None:
    assert re.fullmatch(grading_regex(n, 3000), reply)
    assert [s.score for s in parse_grading_reply(reply, n)] == scores


@pytest.mark.parametrize(("reply", "n"), MALFORMED_GRADING)
def test_grading_regex_rejects_malformed_replies(reply: str, n: int) -> None:
    assert re.fullmatch(grading_regex(n, 3000), reply) is None


def test_grading_regex_bounds_each_evaluation_to_the_token_budget() -> None:
    long = "(1) Evaluation: " + "word " * 250 + "Therefore, the final score is 3"
    assert re.fullmatch(grading_regex(1, 3000), long)
    # 128 tokens (the smoke judge's limit) leave room for 52 to 104 characters of evaluation.
    assert re.fullmatch(grading_regex(1, 128), long) is None


EXAMPLES_REPLY = (
    'Score 1:  Response - "Cats? Never heard of them."\n\n'
    "Score 2:  Response - I like cats, I guess.\n\n"
    "Score 3:  Response - As a vet I see many cats (and dogs).\n\n"
    "Score 4:  Response - After twenty years of treating cats, I adore their independence.\n\n"
    "Score 5:  Response - My clinic's cat, Miso, sleeps on the X-ray table; twenty years in, cats still teach me patience.\n"
)


def test_examples_regex_accepts_the_prompts_format_and_it_processes() -> None:
    regex = examples_regex(1, 3000, one_at_a_time=True)
    for reply in (EXAMPLES_REPLY, "Rubric 1 Examples:\n" + EXAMPLES_REPLY):
        assert re.fullmatch(regex, reply)
        processed = process_examples(reply)
        assert [line.split(":")[0] for line in processed.split("\n\n")] == [f"Score {k}" for k in range(1, 6)]
    batched = "\n".join(f"Rubric {i} Examples:\n{EXAMPLES_REPLY}" for i in (1, 2))
    assert re.fullmatch(examples_regex(2, 3000, one_at_a_time=False), batched)


@pytest.mark.parametrize(
    "reply",
    [
        EXAMPLES_REPLY.replace("Score 4", "Score 6"),  # wrong score
        EXAMPLES_REPLY.split("Score 5")[0],  # a score missing
        "Score 1: Response - \n",  # empty example
        "Here you go:\n" + EXAMPLES_REPLY,
    ],
)
def test_examples_regex_rejects_malformed_replies(reply: str) -> None:
    assert re.fullmatch(examples_regex(1, 3000, one_at_a_time=True), reply) is None


def ranking(first: str, second: str, rank_first: int = 1, rank_second: int = 2) -> str:
    return (
        f'[{{"model": "{first}", "reason": "Speaks like the captain, with his catchphrase (\'Arr!\')", '
        f'"rank": {rank_first}}}, {{"model": "{second}", "reason": "Generic; no role knowledge", "rank": {rank_second}}}]'
    )


@pytest.mark.parametrize(
    ("reply", "label", "outcome"),
    [
        (ranking("model_1", "model_2"), "model_1", "win"),
        (ranking("model_2", "model_1"), "model_1", "loss"),
        (ranking("model_1", "model_2", 1, 1), "model_2", "tie"),
    ],
)
def test_ranking_regex_accepts_rolellms_format_and_it_parses(reply: str, label: str, outcome: str) -> None:
    assert re.fullmatch(ranking_regex(ANONYMOUS_NAMES, 1024), reply)
    assert parse_ranking(reply, label).outcome == outcome


@pytest.mark.parametrize(
    "reply",
    [
        ranking("model_1", "model_1"),  # one model twice: unparsed
        ranking("model_1", "model_2", 1, 3),  # rank outside 1..2
        ranking("model_1", "model_3"),
        'Sure! [{"model": "model_1", "reason": "x", "rank": 1}, {"model": "model_2", "reason": "y", "rank": 2}]',
        '[{"model": "model_1", "reason": "a "quoted" word", "rank": 1}, {"model": "model_2", "reason": "y", "rank": 2}]',
    ],
)
def test_ranking_regex_rejects_malformed_replies(reply: str) -> None:
    assert re.fullmatch(ranking_regex(ANONYMOUS_NAMES, 1024), reply) is None


# -- the request hash ------------------------------------------------------------------------------

REQUEST = ChatRequest((Message("system", "s"), Message("user", "u")), GenerationParams(max_tokens=7))


def test_request_hash_is_unchanged_without_a_guided_regex() -> None:
    # The key as every stored call was written: the request without any guided field.
    old_payload = {
        "model": "m",
        "request": {
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "params": {"temperature": 0.0, "top_p": None, "max_tokens": 7, "seed": None, "stop": []},
        },
    }
    text = json.dumps(old_payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert REQUEST.cache_key("m") == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert "guided_regex" not in REQUEST.to_json()


def test_a_guided_regex_is_part_of_the_hash_and_round_trips() -> None:
    guided = ChatRequest(REQUEST.messages, REQUEST.params, guided_regex="a+")
    other = ChatRequest(REQUEST.messages, REQUEST.params, guided_regex="b+")
    assert len({REQUEST.cache_key("m"), guided.cache_key("m"), other.cache_key("m")}) == 3
    assert ChatRequest.from_json(guided.to_json()) == guided
    assert ChatRequest.from_json(REQUEST.to_json()) == REQUEST


def test_unguided_reply_problem_checks_only_replies_that_ended_normally() -> None:
    guided = ChatRequest(REQUEST.messages, REQUEST.params, guided_regex="a+")
    assert unguided_reply_problem(guided, Completion("aaa", finish_reason="stop")) is None
    assert "ignored `structured_outputs`" in unguided_reply_problem(guided, Completion("free text", finish_reason="stop"))
    assert unguided_reply_problem(guided, Completion("free te", finish_reason="length")) is None
    assert unguided_reply_problem(REQUEST, Completion("anything", finish_reason="stop")) is None
    assert reply_matches(REQUEST, "x") and not reply_matches(guided, "b")


# -- which roles are guided --------------------------------------------------------------------------

EMBEDDED = ModelSpec("hf", "/m.gguf", "embedded", smoke=True)
API = ModelSpec("openai", "gpt-4o-2024-08-06", "gpt")
LM_EVAL = ModelSpec("lm-eval", "/ckpt", "local")


def test_default_guides_only_the_embedded_smoke_judge() -> None:
    deviations: list[str] = []
    roles = judge_output.guided_roles(None, [("judge:embedded", EMBEDDED)], EMBEDDED, deviations)
    assert roles == ("judge:embedded", "examples")
    assert "guided judge output for judge:embedded, examples" in deviations[0]
    assert "--judge-output free to turn it off" in deviations[0]
    deviations = []
    assert judge_output.guided_roles(None, [("judge:gpt", API)], API, deviations) == ()
    assert deviations == []  # never the default for an API judge


def test_guided_on_request_and_free_on_request() -> None:
    deviations: list[str] = []
    roles = judge_output.guided_roles("guided", [("judge:gpt", API)], API, deviations)
    assert roles == ("judge:gpt", "examples") and "(--judge-output guided)" in deviations[0]
    assert judge_output.guided_roles("free", [("judge:embedded", EMBEDDED)], EMBEDDED, []) == ()
    with pytest.raises(UsageError, match="uses the lm-eval backend, which cannot constrain"):
        judge_output.guided_roles("guided", [("judge:local", LM_EVAL)], LM_EVAL, [])


def test_a_judged_task_without_guided_formats_is_refused_when_guided_is_asked_for() -> None:
    manifests = {"a": {"judge_output": {"judge:gpt": "guided"}}, "b": {}}
    with pytest.raises(UsageError, match="task b has no guided format"):
        judge_output.check_tasks("guided", ("judge:gpt",), manifests, ["a", "b"], [])
    deviations: list[str] = []
    judge_output.check_tasks(None, ("judge:embedded",), manifests, ["a", "b"], deviations)
    assert deviations == ["judge replies of b are free text (no guided format)"]


def test_personagym_requests_and_manifest_follow_the_guided_roles() -> None:
    from rolebench_eval.task_registry import build_task, discover

    spec = discover([]).resolve(["personagym-light"])[0]
    judges = (JudgeSpec("gpt"),)
    free = build_task(spec, RunSettings(judges=judges, limit=1))
    guided = build_task(spec, RunSettings(judges=judges, limit=1, guided_roles=("judge:gpt", "examples")))
    assert "judge_output" not in free.manifest()
    assert guided.manifest()["judge_output"] == {"judge:gpt": "guided", "examples": "guided"}

    samples = guided.samples()[:1]
    job = guided.jobs(samples)[0]
    first = next(job)
    examples = [c for c in first if c.stage == "score_examples"]
    assert examples and all(c.request.guided_regex == examples_regex(1, 3000, one_at_a_time=True) for c in examples)
    reply = Completion(EXAMPLES_REPLY, finish_reason="stop")
    answers = [Completion("Aye, the sea.", finish_reason="stop") if c.stage == "generate" else reply for c in first]
    grading = job.send(answers)
    assert [c.request.guided_regex for c in grading] == [grading_regex(1, 3000)]
    # The free task asks the same calls with no regex: their stored keys are unchanged.
    free_first = next(free.jobs(samples)[0])
    assert all(c.request.guided_regex is None for c in free_first)


# -- the OpenAI-compatible backend -------------------------------------------------------------------

OPTIONS = BackendOptions(request_timeout_s=5, max_retry_time_s=3, max_attempts=2, concurrency=2)
GUIDED = ChatRequest((Message("user", "judge"),), GenerationParams(max_tokens=64), guided_regex=r"\(1\) Evaluation: [a-z ]{0,20}Therefore, the final score is [1-5]")


def results_of(backend: OpenAIBackend, requests: list[ChatRequest]) -> dict[int, Completion]:
    out: dict[int, Completion] = {}
    backend.generate(requests, lambda i, c: out.__setitem__(i, c))
    return out


def test_openai_backend_sends_the_regex_only_when_guided(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-guided")
    reply = "(1) Evaluation: fine Therefore, the final score is 4"
    with FakeOpenAIServer(always(ok(reply))) as server:
        backend = OpenAIBackend("fake-model", OPTIONS, base_url=server.base_url)
        out = results_of(backend, [GUIDED, REQUEST])
    by_tokens = {r.body["max_tokens"]: r.body for r in server.chat_requests}
    assert by_tokens[64]["structured_outputs"] == {"regex": GUIDED.guided_regex}
    assert "structured_outputs" not in by_tokens[7] and "guided_regex" not in by_tokens[7]
    assert out[0].text == reply and out[0].ok


def test_openai_backend_refuses_a_server_that_ignores_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-guided")
    with FakeOpenAIServer(always(ok("I would give it a 4."))) as server:
        backend = OpenAIBackend("fake-model", OPTIONS, base_url=server.base_url)
        with pytest.raises(BackendError, match="ignored `structured_outputs`.*--judge-output free") as info:
            results_of(backend, [GUIDED])
    assert "\n" not in str(info.value)


def test_openai_backend_refuses_a_server_that_rejects_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-guided")
    rejection = status(400, "Unrecognized request argument supplied: structured_outputs")
    with FakeOpenAIServer(always(rejection)) as server:
        backend = OpenAIBackend("fake-model", OPTIONS, base_url=server.base_url)
        with pytest.raises(BackendError, match="rejected a guided-output request.*HTTP 400") as info:
            results_of(backend, [GUIDED])
        # The same 400 on a free request stays that request's failure, as before.
        assert results_of(backend, [REQUEST])[0].error.startswith("HTTP 400")
    assert "\n" not in str(info.value)


def test_compare_refuses_to_mix_guided_and_free_runs() -> None:
    from rolebench_eval.analysis.comparability import differences, measurement_settings, non_blocking_patterns
    from rolebench_eval.task_registry import build_task, discover

    spec = discover([]).resolve(["personagym-light"])[0]
    judges = (JudgeSpec("gpt"),)
    free = build_task(spec, RunSettings(judges=judges, limit=1)).manifest()
    guided = build_task(spec, RunSettings(judges=judges, limit=1, guided_roles=("judge:gpt",))).manifest()
    run = {"judges": [{"label": "gpt", "identity": "openai:gpt"}]}
    found = differences(
        measurement_settings(free, run, ["gpt"]), measurement_settings(guided, run, ["gpt"]),
        non_blocking_patterns(free, guided),
    )
    assert [(d.path, d.a, d.b, d.blocking) for d in found] == [("judge_output.judge:gpt", None, "guided", True)]
