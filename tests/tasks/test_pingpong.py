"""PingPong v2: requests byte-identical to the authors' pipeline on fixed replies, the judge reply
rules, scoring as the reference computes it, task options, and (through the runner, scripted
models) a failed turn, resume in the middle of a dialogue."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.requests import Completion, Usage
from rolebench_eval.running.runner import RunConfig, Runner
from rolebench_eval.task_api import MODEL_ROLE, USER_ROLE, BoundModel, JudgeSpec, ModelCall, RunSettings
from rolebench_eval.task_registry import build_task, discover
from rolebench_eval.tasks.pingpong import outcome, parsing

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pingpong" / "reference_requests.json"
USER = BoundModel(USER_ROLE, "user-x")


def make(name: str = "pingpong-en", **settings: Any):  # noqa: ANN201 - the task object
    settings.setdefault("user", USER)
    return build_task(discover().tasks[name], RunSettings(**settings))


def drive(job, reply: Callable[[ModelCall], Completion], log: list[ModelCall] | None = None) -> Any:
    """Run one job to its end, answering each call from `reply`."""
    try:
        calls = next(job)
        while True:
            if log is not None:
                log.extend(calls)
            calls = job.send([reply(c) for c in calls])
    except StopIteration as stop:
        return stop.value


# The fixed replies of make_reference_requests.py (surrounding whitespace, double spaces).
def interrogator_reply(turn: int) -> str:
    return f'  Sure!  {{"next_utterance": "Turn {turn}:  are you  \\"real\\"? *pokes*"}}  '


def player_reply(turn: int) -> str:
    return f"\n *Kurisu  sighs*   Turn {turn} answer.    Fine.  \n"


def judge_reply(n_turns: int, scores: tuple[int, int, int] = (4, 3, 5), refusal_turn: int | None = None) -> str:
    entries = [
        {"turn": t, "is_refusal_explanation": "no", "is_refusal": t == refusal_turn,
         "in_character_explanation": "ok", "in_character_score": scores[0],
         "entertaining_explanation": "ok", "entertaining_score": scores[1],
         "fluency_explanation": "ok", "fluency_score": scores[2]}
        for t in range(1, n_turns + 1)
    ]
    return "```json\n" + json.dumps({"scores": entries}, indent=1) + "\n```"


def scripted(n_turns: int) -> Callable[[ModelCall], Completion]:
    counters = {USER_ROLE: 0, MODEL_ROLE: 0}

    def reply(call: ModelCall) -> Completion:
        if call.model in counters:
            counters[call.model] += 1
            make_text = interrogator_reply if call.model == USER_ROLE else player_reply
            return Completion(make_text(counters[call.model]), "stop")
        return Completion(judge_reply(n_turns), "stop")

    return reply


@pytest.mark.parametrize("case", json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"], ids=lambda c: c["language"])
def test_requests_are_byte_identical_to_the_reference_pipeline(case: dict[str, Any]) -> None:
    task = make(f"pingpong-{case['language']}", judges=(JudgeSpec("j"),))
    sample = next(s for s in task.samples() if s.fields["character_index"] == case["character"]
                  and s.fields["situation_index"] == case["situation"])
    (job,) = task.jobs([sample])
    log: list[ModelCall] = []
    result = drive(job, scripted(sample.fields["n_turns"]), log)
    sent = [{"messages": c.request.messages_json(),
             "params": {"temperature": c.request.params.temperature, "top_p": c.request.params.top_p,
                        "max_tokens": c.request.params.max_tokens}} for c in log]
    assert sent == case["requests"]  # every message byte for byte, in the reference's order
    assert all(c.request.params.seed is None and c.request.params.stop == () for c in log)
    assert [c.model for c in log] == [USER_ROLE, MODEL_ROLE] * 4 + ["judge:j"]
    assert result.messages == case["messages"]
    record = outcome.build_record(task.name, sample, result, (JudgeSpec("j"),))
    turns = record["judgments"][0]["turns"]
    assert {c: [t[f"{c}_score"] for t in turns] for c in parsing.CRITERIA} == {
        c: case["scores"][c] for c in parsing.CRITERIA
    }


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("no json here", "judge no JSON object in the reply"),
        ('{"scores": 3}', "judge reply has no 'scores' list"),
        (judge_reply(3), "judge scored 3 turn(s), the dialogue has 4"),
        (judge_reply(4, scores=(4, 0, 5)), "judge scores entry 1: entertaining_score 0 is not an integer 1-5"),
        (re.sub(r'\s*"fluency_explanation": "ok",', "", judge_reply(4), count=1), "judge scores entry 1 lacks fluency_explanation"),
        (judge_reply(4).replace('"is_refusal": false', '"is_refusal": "no"', 1), "judge scores entry 1: is_refusal is not true/false"),
    ],
)
def test_unusable_judge_replies_are_named(reply: str, reason: str) -> None:
    assert parsing.judge_check(4)(reply) == reason
    assert parsing.judge_scores(reply, 4) == (None, reason)


def test_usable_replies_parse() -> None:
    assert parsing.judge_check(4)(judge_reply(4, scores=(1, 5, 2))) is None
    assert parsing.judge_scores(judge_reply(1).replace(": 4", ": 4.0"), 1)[0][0].scores["in_character"] == 4
    assert parsing.next_utterance('x {"next_utterance": "hi"} y') == ("hi", None)
    assert parsing.next_utterance('{"next_utterance": "hi",}')[1].startswith("interrogator reply is not valid JSON")
    assert parsing.next_utterance('{"text": "hi"}') == (None, "interrogator reply has no 'next_utterance' string")
    assert parsing.player_check(" a ") == "player reply shorter than 2 characters"


def _record(n_turns: int, judged: dict[str, tuple[tuple[int, int, int], int | None]], index: int = 0):  # noqa: ANN202
    task = make(judges=tuple(JudgeSpec(label) for label in judged), options={"max_turns": str(n_turns)})
    sample = task.samples()[index]
    (job,) = task.jobs([sample])
    labels = list(judged)

    def reply(call: ModelCall) -> Completion:
        if call.model.startswith("judge:"):
            scores, refusal = judged[call.model.removeprefix("judge:")]
            return Completion(judge_reply(n_turns, scores, refusal), "stop")
        return scripted(n_turns)(call)

    result = drive(job, reply)
    return outcome.build_record(task.name, sample, result, tuple(JudgeSpec(label) for label in labels))


def test_scores_and_refusals_as_the_reference_computes_them() -> None:
    # Judge a: 4/3/5 on 2 turns, judge b: 2/3/4 -> per dialogue means averaged with equal weights.
    record = _record(2, {"a": ((4, 3, 5), None), "b": ((2, 3, 4), None)})
    assert record["scores"] == {"in_character": 3.0, "entertaining": 3.0, "fluency": 4.5, "final": 3.5}
    assert record["refusal"] == 0.0
    # A judge flagging a refusal on any turn: that dialogue is left out of its scores.
    refused = _record(2, {"a": ((4, 3, 5), 2), "b": ((2, 3, 4), None)}, index=1)
    assert refused["scores"]["final"] == pytest.approx(3.0)  # only b: (2 + 3 + 4) / 3
    assert refused["refusal"] == 0.5
    results = outcome.task_results([record, refused], (JudgeSpec("a"), JudgeSpec("b")))
    ref_a = results["reference"]["per_judge"]["a"]
    # The reference's `save`: a's non-refused turns pooled (one dialogue, 2 turns).
    assert ref_a == {"n_dialogues": 2, "n_refusals": 1, "refusal_ratio": 0.5, "in_character": 4.0,
                     "entertaining": 3.0, "fluency": 5.0, "final_score": 4.0}
    assert results["reference"]["per_judge"]["b"]["final_score"] == pytest.approx(3.0)
    assert results["reference"]["combined"]["final_score"] == pytest.approx(3.5)
    assert results["metrics"]["final"]["mean"] == pytest.approx(3.25)
    assert results["metrics"]["refusal"]["mean"] == pytest.approx(0.25)
    all_refused = _record(2, {"a": ((4, 3, 5), 1)})
    assert all_refused["score"] is None
    assert all_refused["unscored_reason"] == "refusal flagged by a (left out, as the reference does)"


def test_options_select_dialogues_and_turns() -> None:
    task = make()
    assert len(task.samples()) == 64
    assert {s.fields["n_turns"] for s in task.samples()} == {4, 8}
    kept = make(options={"exclude_tags": "possible_censoring,long"}).samples()
    assert len(kept) == 8 * 5  # fight, rude (possible_censoring) and bio (long) left out
    assert not any({"possible_censoring", "long"} & set(s.fields["situation_tags"]) for s in kept)
    # Russian: a character (Аква) carries possible_censoring too.
    assert len(make("pingpong-ru", options={"exclude_tags": "possible_censoring"}).samples()) == 7 * 6
    limited = make(limit=3, options={"max_turns": "2"})
    assert [s.sample_id for s in limited.samples()] == ["en-c0-s0", "en-c0-s1", "en-c0-s2"]
    assert {s.fields["n_turns"] for s in limited.samples()} == {2}
    assert limited.manifest()["dialogue"]["max_turns"] == 2
    with pytest.raises(UsageError, match="unknown exclude_tags tag 'censoring'"):
        make(options={"exclude_tags": "censoring"})
    with pytest.raises(UsageError, match="max_turns=0"):
        make(options={"max_turns": "0"})
    with pytest.raises(UsageError, match="no model plays the user"):
        make(user=None)


# -- through the runner: scripted models ------------------------------------------------------

JUDGE = "openai:judge-a,base_url=http://127.0.0.1:9/v1"
USER_MODEL = "openai:user-x,base_url=http://127.0.0.1:9/v1"


def _turn_of(request) -> int:  # noqa: ANN001
    """The turn an interrogator request asks for: 1 + the player messages shown."""
    return request.messages[1].content.count("\nplayer: ") + 1


def user_reply(request) -> str:  # noqa: ANN001
    """The fixed reply, with the situation's first words: each dialogue's transcript differs."""
    situation = re.search(r'conversation:\n"(\w+ \w+)', request.messages[1].content).group(1)
    return interrogator_reply(_turn_of(request)).replace("*pokes*", f"({situation})")


def model_reply(request) -> str:  # noqa: ANN001
    return player_reply(len(request.messages) // 2)


def judge_a(request) -> str:  # noqa: ANN001
    return judge_reply(request.messages[1].content.count("\nplayer: "))


def run_config(tmp_path: Path, **kwargs: Any) -> RunConfig:
    kwargs.setdefault("judges", [JUDGE])
    kwargs.setdefault("user_model", USER_MODEL)
    return RunConfig(tasks=["pingpong-en"], limit=3, results_dir=tmp_path / "results", progress=False,
                     max_tokens=16, task_options={"max_turns": "3"}, write_leaderboard=False, **kwargs)


def test_a_failed_turn_stops_that_dialogue_only(tmp_path: Path, scripted_backends) -> None:
    def user(request) -> str:  # noqa: ANN001 - dialogue en-c0-s1 (the environment situation) breaks at turn 2
        if "Break the character's reality" in request.messages[1].content and _turn_of(request) == 2:
            return "I will not answer in JSON"
        return user_reply(request)

    backends = scripted_backends({"embedded": model_reply, "judge-a": judge_a, "user-x": user})
    result = Runner(run_config(tmp_path)).run()
    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    by_id = {r["sample_id"]: r for r in records}
    broken = by_id["en-c0-s1"]
    assert broken["score"] is None and broken["failed_turn"] == 2 and broken["n_turns_done"] == 1
    assert broken["unscored_reason"].startswith("interrogator call failed at turn 2: unusable reply: interrogator no JSON object")
    assert broken["judgments"] == []
    assert [by_id[i]["score"] for i in ("en-c0-s0", "en-c0-s2")] == [4.0, 4.0]  # (4 + 3 + 5) / 3
    assert by_id["en-c0-s0"]["turns"][1] == {"round": 1, "speaker": "model", "role": "assistant",
                                             "text": "*Kurisu sighs*  Turn 1 answer.  Fine.", "note": "in character"}
    assert by_id["en-c0-s0"]["messages"][1] == {"role": "assistant", "content": "*Kurisu sighs*  Turn 1 answer.  Fine."}
    task = result.results["tasks"]["pingpong-en"]
    assert task["items"]["n_scored"] == 2 and task["items"]["dialogues_stopped"] == 1
    # The unusable reply was asked 3 times (bounded), the broken dialogue was never judged.
    assert len(backends["user-x"].requests) == 2 * 3 + 1 + 3  # 2 full dialogues, turn 1 and 3 tries of turn 2
    assert len(backends["judge-a"].requests) == 2
    assert result.incomplete  # a failed call: the run says so


def test_resume_in_the_middle_of_a_dialogue_repeats_no_turn(tmp_path: Path, scripted_backends) -> None:
    # Killed after 4 interrogator turns: dialogues 1 and 2 are part-way through.
    scripted_backends({"embedded": model_reply, "judge-a": judge_a, "user-x": user_reply}, fail_after={"user-x": 4})
    with pytest.raises(KeyboardInterrupt):
        Runner(run_config(tmp_path)).run()
    backends = scripted_backends({"embedded": model_reply, "judge-a": judge_a, "user-x": user_reply})
    result = Runner(run_config(tmp_path)).run()
    assert len(backends["user-x"].requests) == 9 - 4  # 3 dialogues x 3 turns, 4 stored
    sent = [_turn_of(r) for r in backends["user-x"].requests]
    assert len(set(map(str, backends["user-x"].requests))) == len(sent)  # no turn asked twice
    assert result.results["tasks"]["pingpong-en"]["items"]["n_scored"] == 3
    again = scripted_backends({"embedded": model_reply, "judge-a": judge_a, "user-x": user_reply})
    Runner(run_config(tmp_path)).run()
    assert sum(len(b.requests) for b in again.values()) == 0


def test_results_carry_reliability_and_user_models_block_compare(tmp_path: Path, scripted_backends, capsys) -> None:
    from rolebench_eval.cli import main

    other_user = "openai:user-y,base_url=http://127.0.0.1:9/v1"
    judge_b = "openai:judge-b,base_url=http://127.0.0.1:9/v1"
    replies = {"embedded": model_reply, "judge-a": judge_a, "judge-b": judge_a, "user-x": user_reply, "user-y": user_reply}
    scripted_backends(replies)
    first = Runner(run_config(tmp_path, judges=[JUDGE, judge_b])).run()
    task = first.results["tasks"]["pingpong-en"]
    reliability = task["reliability"]
    # Two judges giving the same scores: full agreement on every criterion; 3 dialogues x 3 turns.
    fluency = reliability["agreement"]["fluency"]
    assert fluency["n_items"] == 9 and fluency["pairs"][0]["exact_agreement"] == 1.0
    assert fluency["krippendorff_alpha"] is None  # one value only (5): alpha is undefined, not invented
    assert reliability["length_bias"]["judge-a"]["fluency"] == {"n": 9, "spearman": None}
    assert "judge agreement (fluency)" in (first.run_dir / "report.md").read_text()
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["tasks"]["pingpong-en"]["dialogue_roles"] == ["user"]
    scripted_backends(replies)
    second = Runner(run_config(tmp_path, judges=[JUDGE, judge_b], user_model=other_user)).run()
    assert second.run_dir != first.run_dir
    capsys.readouterr()
    # The same model under two simulated users: refused by default, named, allowed with the flag.
    code = main(["compare", str(first.run_dir), str(second.run_dir), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "user model (the simulated user" in err and "simulator-sensitivity" in err
    code = main(["compare", str(first.run_dir), str(second.run_dir), "--allow-mismatch",
                 "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0 and "user model" in out
