"""Dialogue roles in the runner: --user-model / --baseline-model bound like judges, a dialogue as a
job yielding once per round, resume in the middle of a dialogue, a failed turn stopping only its
own dialogue, and the roles' identities in the manifest and configuration hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import UsageError
from rolebench_eval.running.runner import RunConfig, Runner

USER = "openai:sim-user,base_url=http://127.0.0.1:9/v1"
BASELINE = "openai:base-line,base_url=http://127.0.0.1:9/v1"

# A plugin whose dialogues run ROUNDS rounds: the user speaks, then the model under test and the
# baseline answer the same history. A user turn containing "BAD" fails its check.
DIALOGUE_TASK = '''
from rolebench_eval.analysis.statistics import summarize
from rolebench_eval.requests import ChatRequest, GenerationParams, Message
from rolebench_eval.task_api import BASELINE_ROLE, MODEL_ROLE, USER_ROLE, ModelCall, Sample, Task, TaskOutcome

ROUNDS = 3


def no_bad(text):
    return "the user turn says BAD" if "BAD" in text else None


class Chat(Task):
    def samples(self):
        return [Sample(f"d{i}", f"d{i}", {"topic": t}) for i, t in enumerate(["tea", "boats", "rain"])]

    def generation_request(self, sample):
        raise NotImplementedError

    def evaluate(self, samples, answers):
        raise NotImplementedError

    def jobs(self, samples):
        assert self.settings.user is not None and self.settings.baseline is not None
        return [self.dialogue(s) for s in samples]

    def dialogue(self, sample):
        history = [Message("system", "Talk about " + sample.fields["topic"])]
        turns = []
        for number in range(ROUNDS):
            user_request = ChatRequest(tuple(history) + (Message("user", "next question"),), GenerationParams(max_tokens=8))
            (user,) = yield [ModelCall(USER_ROLE, "user_turn", user_request, check=no_bad)]
            if not user.ok:
                return {"sample": sample, "turns": turns, "reason": user.error}
            history.append(Message("user", user.text))
            turns.append({"speaker": "user", "text": user.text})
            request = ChatRequest(tuple(history), GenerationParams(max_tokens=8))
            mine, base = yield [ModelCall(MODEL_ROLE, "reply", request), ModelCall(BASELINE_ROLE, "baseline_reply", request)]
            history.append(Message("assistant", mine.text))
            turns += [{"speaker": "model", "text": mine.text}, {"speaker": "baseline", "text": base.text}]
        return {"sample": sample, "turns": turns, "reason": None}

    def finish(self, samples, results):
        values = [None if r["reason"] else float(len(r["turns"])) for r in results]
        records = [{"sample_id": r["sample"].sample_id, "unit": r["sample"].unit, "turns": r["turns"],
                    "score": v, "unscored_reason": r["reason"]} for r, v in zip(results, values)]
        scored = [v for v in values if v is not None]
        return TaskOutcome(records, {"metrics": {"turns": summarize(scored, len(values) - len(scored))},
                                     "per_unit": {r["sample"].unit: {"turns": v} for r, v in zip(results, values)}})

    def manifest(self):
        return {"task": self.name, "version": self.version, "data": {"topics": 3}}


def make(spec, settings):
    return Chat(spec.name, spec.version, settings)
'''


def plugin(tmp_path: Path, extra: str = 'roles = ["user", "baseline"]\ndefault_user_model = "openai:paper-user"\n') -> str:
    folder = tmp_path / "plugins" / "chat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tasks.toml").write_text(
        '[[task]]\nname = "chat"\nfactory = "impl:make"\nversion = "1"\nrequires_judge = false\n' + extra
    )
    (folder / "impl.py").write_text(DIALOGUE_TASK)
    return str(tmp_path / "plugins")


def config(tmp_path: Path, **kwargs) -> RunConfig:
    values = {"user_model": USER, "baseline_model": BASELINE, **kwargs}
    return RunConfig(tasks=["chat"], results_dir=tmp_path / "results", progress=False,
                     include_paths=[plugin(tmp_path)], write_leaderboard=False, **values)


def user_reply(request) -> str:
    # The round is the number of user turns so far: deterministic, so a rerun asks the same.
    return f"user turn {sum(m.role == 'user' for m in request.messages)}"


def replies(**overrides):
    base = {"embedded": lambda r: f"model says {len(r.messages)}", "sim-user": user_reply,
            "base-line": lambda r: f"baseline says {len(r.messages)}"}
    return {**base, **overrides}


def test_a_dialogue_runs_its_rounds_through_the_bound_roles(tmp_path: Path, scripted_backends) -> None:
    backends = scripted_backends(replies())
    result = Runner(config(tmp_path), log=lambda m: None).run()
    assert len(backends["sim-user"].requests) == 9 and len(backends["base-line"].requests) == 9
    assert len(backends["embedded"].requests) == 9
    assert result.calls_made == {"generation": 9, "judging": 18}
    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    assert [t["speaker"] for t in records[0]["turns"]][:3] == ["user", "model", "baseline"]
    assert records[0]["turns"][0]["text"] == "user turn 1"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["user_model"]["identity"].endswith(":sim-user")
    assert manifest["baseline_model"]["label"] == "base-line"
    # The user's and the baseline's calls are judging-side: generation holds only the model's answers.
    generation = (result.run_dir / "calls" / "generation.jsonl").read_text().splitlines()
    judging = [json.loads(c) for c in (result.run_dir / "calls" / "judging.jsonl").read_text().splitlines()]
    assert len(generation) == 9 and {c["stage"] for c in judging} == {"user_turn", "baseline_reply"}


def test_resume_in_the_middle_of_a_dialogue_repeats_no_turn(tmp_path: Path, scripted_backends) -> None:
    scripted_backends(replies(), fail_after={"sim-user": 4})  # killed while asking the 5th user turn
    with pytest.raises(KeyboardInterrupt):
        Runner(config(tmp_path), log=lambda m: None).run()
    backends = scripted_backends(replies())
    result = Runner(config(tmp_path), log=lambda m: None).run()
    assert len(backends["sim-user"].requests) == 9 - 4
    stored_user = [json.loads(c) for c in (result.run_dir / "calls" / "judging.jsonl").read_text().splitlines()
                   if json.loads(c)["stage"] == "user_turn"]
    assert len(stored_user) == 9 and len({c["key"] for c in stored_user}) == 9
    assert result.results["tasks"]["chat"]["metrics"]["turns"]["mean"] == 9.0


def test_a_failed_turn_stops_only_its_dialogue_unscored(tmp_path: Path, scripted_backends) -> None:
    def user(request):
        topic = request.messages[0].content
        if "boats" in topic and sum(m.role == "user" for m in request.messages) == 2:
            return "BAD turn"
        return user_reply(request)

    backends = scripted_backends(replies(**{"sim-user": user}))
    result = Runner(config(tmp_path), log=lambda m: None).run()
    records = {r["sample_id"]: r for r in map(json.loads, (result.run_dir / "samples.jsonl").read_text().splitlines())}
    assert records["d1"]["score"] is None
    assert "the user turn says BAD" in records["d1"]["unscored_reason"]
    assert len(records["d1"]["turns"]) == 3  # the first round, then the failed user turn
    assert records["d0"]["score"] == 9.0 and records["d2"]["score"] == 9.0
    # the failed user turn was tried 3 times (the scheduler's content attempts), the others once
    assert len(backends["sim-user"].requests) == 3 + 3 + 1 + 3  # d0, d2; d1: round 1, then its failed turn 3 times
    assert result.incomplete  # a failed call: a rerun retries it


def test_dialogue_models_are_part_of_the_configuration(tmp_path: Path, scripted_backends) -> None:
    scripted_backends(replies(**{"other-user": user_reply}))
    first = Runner(config(tmp_path), log=lambda m: None).run()
    second = Runner(config(tmp_path, user_model="openai:other-user,base_url=http://127.0.0.1:9/v1"), log=lambda m: None).run()
    assert first.run_dir != second.run_dir
    first_manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert json.loads((second.run_dir / "manifest.json").read_text())["config_hash"] != first_manifest["config_hash"]
    # Another user model, same words: every user turn is asked again (its own identity), while the
    # model's and the baseline's replies to identical histories are reused from the first run.
    assert second.calls_made == {"generation": 0, "judging": 9}
    assert json.loads((second.run_dir / "manifest.json").read_text())["judgments_reused_from"] == [first.run_dir.name]


def test_role_defaults_and_refusals(tmp_path: Path, scripted_backends) -> None:
    scripted_backends(replies(**{"paper-user": user_reply}))
    run = Runner(config(tmp_path, user_model=None), log=lambda m: None).run()
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["user_model"]["model"] == "paper-user"  # no judge is embedded: the paper's default
    with pytest.raises(UsageError, match="--baseline-model: chat need a model that is the baseline"):
        Runner(config(tmp_path, baseline_model=None), log=lambda m: None).run()


def test_flag_for_a_role_no_task_uses_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["run", "--tasks", "personagym-light", "--user-model", "embedded", "--limit", "1",
                 "--results-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "--user-model: none of the tasks (personagym-light) has a model that plays the user" in capsys.readouterr().err


def test_smoke_run_binds_the_embedded_model_with_a_deviation(tmp_path: Path) -> None:
    from rolebench_eval.running.dialogue_roles import resolve_dialogue_models
    from rolebench_eval.task_registry import discover

    specs = discover([plugin(tmp_path)]).resolve(["chat"])
    deviations: list[str] = []
    models = resolve_dialogue_models(specs, None, None, True, None, deviations)
    assert models.user is not None and models.user.smoke and models.baseline is not None and models.baseline.smoke
    assert any("embedded model plays the user" in d and "paper-user" in d for d in deviations)


def test_an_embedded_model_in_a_dialogue_role_gets_the_smoke_token_limits(tmp_path: Path) -> None:
    from rolebench_eval.running.dialogue_roles import resolve_dialogue_models, smoke_limits
    from rolebench_eval.task_api import RunSettings
    from rolebench_eval.task_registry import discover

    specs = discover([plugin(tmp_path)]).resolve(["chat"])
    deviations: list[str] = []
    models = resolve_dialogue_models(specs, None, None, True, None, deviations)
    limited = smoke_limits(models, RunSettings(), 128, 96, deviations)
    assert (limited.answer_max_tokens, limited.judge_max_tokens) == (128, 96)
    assert any("embedded baseline's smoke-test limit" in d for d in deviations)
    given = smoke_limits(models, RunSettings(answer_max_tokens=7, judge_max_tokens=9), 128, 96, [])
    assert (given.answer_max_tokens, given.judge_max_tokens) == (7, 9)  # the user's limits win
