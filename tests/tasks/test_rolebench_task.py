"""RoleBench tasks driven without any model: fixture data, scripted answers and judge replies.

The task is built through the registry (as the runner builds it) and its evaluate() generator is
driven by hand; every number is checked against rouge_l / hand counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rolebench_eval.errors import DataError, UsageError
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.task_api import JudgeSpec, ModelCall, RunSettings, TaskOutcome
from rolebench_eval.task_registry import build_task, discover
from rolebench_eval.tasks.rolebench import prompts
from rolebench_eval.tasks.rolebench.rouge_metrics import rouge_l

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rolebench"
FULL = str(FIXTURES / "full")
PARTIAL = str(FIXTURES / "partial")


def make(name: str, root: str | None = FULL, **settings):  # noqa: ANN201 - the task object
    options = dict(settings.pop("options", {}))
    if root is not None:
        options.setdefault("rolebench_dir", root)
    return build_task(discover().tasks[name], RunSettings(options=options, **settings))


def drive(task, answers: list[Completion] | None = None, judge=None) -> tuple[list[ModelCall], TaskOutcome]:  # noqa: ANN001
    """Run evaluate(): answers default to one distinct text per sample; `judge(call)` replies."""
    samples = task.samples()
    if answers is None:
        answers = [Completion(text=f"ANSWER-{i} 回答", finish_reason="stop") for i in range(len(samples))]
    evaluation = task.evaluate(samples, answers)
    try:
        calls = next(evaluation)
    except StopIteration as stop:
        return [], stop.value
    with pytest.raises(StopIteration) as stop:
        evaluation.send([judge(call) for call in calls])
    return calls, stop.value.value


def ranking_reply(first_rank: int, second_rank: int) -> str:
    return str(
        [
            {"model": "model_1", "reason": "r", "rank": first_rank},
            {"model": "model_2", "reason": "r", "rank": second_rank},
        ]
    )


def model_position(request: ChatRequest) -> tuple[int, int]:
    """(item number from the model's ANSWER-i text, 1 or 2: where the model's answer is shown)."""
    content = request.messages[1].content
    match = re.search(r"'model': 'model_(\d)', 'response': 'ANSWER-(\d+)", content)
    assert match, content
    return int(match.group(2)), int(match.group(1))


# -- registry, options, prompts -------------------------------------------------------------------


def test_registry_tasks_group_and_no_required_judge() -> None:
    registry = discover()
    specs = registry.resolve(["rolebench"])
    assert [s.name for s in specs] == ["rolebench-en", "rolebench-zh", "rolebench-en-rolegen"]
    assert all(s.config["requires_judge"] is False for s in specs)
    assert [s.config["split"] for s in specs] == ["en", "zh", "en-rolegen"]


def test_options_are_validated_with_suggestions() -> None:
    with pytest.raises(UsageError, match="Did you mean 'reference_policy'"):
        make("rolebench-zh", options={"reference_polcy": "first"})
    with pytest.raises(UsageError, match="'first'"):
        make("rolebench-zh", options={"reference_policy": "frist"})
    with pytest.raises(UsageError, match="win_rate_order value"):
        make("rolebench-zh", options={"win_rate_order": "listwise"})
    with pytest.raises(UsageError, match="Chinese"):
        make("rolebench-zh", options={"zh_tokenizer": "default"})  # would score Chinese 0.0
    with pytest.raises(UsageError, match="protocol"):
        make("rolebench-zh", protocol="personagym")
    with pytest.raises(UsageError, match="role-play template"):
        make("rolebench-zh", roleplay_template="personagym")
    with pytest.raises(DataError, match="does not exist"):
        make("rolebench-zh", root=str(FIXTURES / "nope"))
    with pytest.raises(DataError, match="line|:3"):
        make("rolebench-zh", root=str(FIXTURES / "malformed"))


def test_generation_request_role_prompt_and_named_settings() -> None:
    task = make("rolebench-zh")
    samples = task.samples()
    general = next(s for s in samples if s.fields["role"] == "孙悟空")
    request = task.generation_request(general)
    expected, warning = prompts.build_role_messages(
        "孙悟空", general.fields["question"], "合成描述：齐天大圣（测试用）。", template="rolellm-zh"
    )
    assert warning is None and request.messages == expected
    assert request.messages[1].content == general.fields["question"]  # sent exactly as in the file
    assert (request.params.temperature, request.params.top_p, request.params.max_tokens) == (0.0, None, 512)
    # 皇帝 has no description in the fixture: the clause is omitted, and the run says so.
    emperor = task.generation_request(samples[0])
    assert emperor.messages[0].content.startswith("你是皇帝。现在请你回答")
    assert any("皇帝" in w and "omit-clause" in w for w in task.warnings)
    manifest = task.manifest()
    assert manifest["roleplay_template"]["name"] == "rolellm-zh"
    assert manifest["roleplay_template"]["generation"] == "greedy"
    assert manifest["roleplay_template"]["answer_params"]["max_tokens"] == 512
    assert manifest["role_descriptions"]["roles_without_description"] == ["皇帝"]
    assert manifest["rouge"]["tokenizer"] == "char" and manifest["rouge"]["reference_policy"] == "max"
    assert manifest["protocol"]["name"] == "rolellm"
    assert make("rolebench-zh", answer_max_tokens=128).generation_request(general).params.max_tokens == 128
    english = make("rolebench-en")
    assert english.generation_request(english.samples()[0]).messages[0].content.startswith(
        "You are John Coffey. Now please answer"
    )
    assert english.manifest()["rouge"]["tokenizer"] == "default"


def test_limit_takes_the_first_items_of_each_test_file() -> None:
    samples = make("rolebench-zh", limit=2).samples()
    assert [s.fields["subset"] for s in samples] == ["role_specific"] * 2 + ["general"] * 2
    assert [s.fields["line"] for s in samples] == [1, 2, 1, 2]
    assert [s.fields["metrics"] for s in samples] == [["SPE"], ["SPE"], ["CUS", "RAW"], ["CUS", "RAW"]]
    full = make("rolebench-zh").samples()
    assert len(full) == 6 and len({s.sample_id for s in full}) == 6
    assert full[-1].fields["metrics"] == ["CUS"]  # no original answer for the third question


def test_data_source_option_env_and_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RBE_ROLEBENCH_DIR", raising=False)
    assert make("rolebench-zh", root=None).manifest()["data"]["source"] == "shipped"
    monkeypatch.setenv("RBE_ROLEBENCH_DIR", PARTIAL)
    env = make("rolebench-zh", root=None)
    assert env.manifest()["data"]["source"] == "env:RBE_ROLEBENCH_DIR"
    assert len(env.samples()) == 2
    option = make("rolebench-zh", root=FULL)  # the option wins over the environment
    assert option.manifest()["data"]["source"] == "task-option:rolebench_dir"
    assert len(option.samples()) == 6


def test_hub_source_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(DataError, match="RBE_ROLEBENCH_DIR"):
        make("rolebench-zh", root="hub")


# -- partial data ---------------------------------------------------------------------------------


def test_partial_directory_names_what_is_not_computed() -> None:
    task = make("rolebench-zh", root=PARTIAL, judges=(JudgeSpec("j"),))
    calls, outcome = drive(task, judge=lambda call: pytest.fail("no baseline: nothing to judge"))
    assert calls == []
    metrics = outcome.results["metrics"]
    assert list(metrics) == ["CUS", "RAW", "SPE", "avg", "win_rate", "win_rate_tie_adjusted"]
    assert metrics["SPE"]["n"] == 2 and metrics["SPE"]["mean"] is not None
    assert metrics["CUS"] == {
        "mean": None, "std": None, "n": 0, "n_unscored": 0, "ci95": None,
        "reason": "not computed: missing rolebench-zh/general/test.jsonl",
    }
    assert metrics["RAW"]["reason"] == (
        "not computed: missing rolebench-zh/general/test.jsonl, instructions-zh/instructions-general.jsonl"
    )
    assert metrics["avg"]["mean"] is None
    assert "CUS, RAW not computed" in metrics["avg"]["reason"]
    assert "instructions-zh/instructions-general.jsonl" in metrics["avg"]["reason"]
    win = metrics["win_rate"]
    assert win["mean"] is None and win["reason"].startswith("not computed: no item has a RoleGPT baseline")
    assert "missing rolebench-zh/role_specific/rolegpt_baseline.jsonl" in win["reason"]
    details = outcome.results["win_rate"]["judges"]["j"]
    assert details["n_skipped_no_baseline"] == 2 and details["n"] == 0
    assert any("profiles-zh/desc.json" in w for w in outcome.warnings)
    assert any("2 of 2 item(s) have no RoleGPT baseline" in w for w in outcome.warnings)
    assert task.manifest()["data"]["not_computable"]["CUS"] == ["rolebench-zh/general/test.jsonl"]
    assert task.manifest()["role_descriptions"]["present"] is False
    assert task.metric_kinds() == {
        "CUS": "continuous", "RAW": "continuous", "SPE": "continuous", "avg": "continuous",
        "win_rate": "verdict", "win_rate_tie_adjusted": "verdict",
    }


# -- full data: ROUGE -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "tokenizer", "policy"),
    [({}, "char", "max"), ({"reference_policy": "first", "zh_tokenizer": "jieba"}, "jieba", "first")],
)
def test_rouge_per_item_equals_rouge_l(options: dict[str, str], tokenizer: str, policy: str) -> None:
    task = make("rolebench-zh", options=options)
    samples = task.samples()
    # Answers close to the references so that scores are non-trivial.
    answers = [Completion(text=f"俺老孙{i}：" + s.fields["question"][:12]) for i, s in enumerate(samples)]
    calls, outcome = drive(task, answers)
    assert calls == []  # no judge, no win rate
    assert "win_rate" not in outcome.results["metrics"]
    by_id = {r["item_id"]: r for r in outcome.records}
    per_unit = outcome.results["per_unit"]
    raw_rows = {}
    for line in (FIXTURES / "full/instructions-zh/instructions-general.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        raw_rows[" ".join(row["instruction"].split())] = row["target"]
    expected: dict[str, list[float]] = {"CUS": [], "RAW": [], "SPE": []}
    for sample, answer in zip(samples, answers):
        record = by_id[sample.sample_id]
        item_refs = record["references"]
        for metric in sample.fields["metrics"]:
            value = rouge_l(answer.text, item_refs[metric], language="zh", tokenizer=tokenizer, reference_policy=policy)
            assert record["scores"][metric] == pytest.approx(value, abs=1e-12)
            assert per_unit[sample.sample_id][metric] == record["scores"][metric]
            expected[metric].append(value)
        if "RAW" in sample.fields["metrics"]:
            assert record["references"]["RAW"] == [raw_rows[" ".join(sample.fields["question"].split())]]
        if "CUS" in sample.fields["metrics"]:
            assert len(record["references"]["CUS"]) == 5
            assert len(record["rouge"]["CUS"]["per_reference"]) == (1 if policy == "first" else 5)
    metrics = outcome.results["metrics"]
    for metric, values in expected.items():
        assert metrics[metric]["n"] == len(values) == {"CUS": 3, "RAW": 2, "SPE": 3}[metric]
        assert metrics[metric]["mean"] == pytest.approx(sum(values) / len(values))
    assert metrics["avg"]["mean"] == pytest.approx(sum(metrics[m]["mean"] for m in ("CUS", "RAW", "SPE")) / 3)
    assert "1 of 3 general item(s) have no original answer" in metrics["RAW"]["reason"]
    assert task.manifest()["rouge"]["tokenizer"] == tokenizer
    assert outcome.results["items"]["per_metric"]["RAW"] == {"n": 2, "n_scored": 2, "n_unscored": 0}


def test_english_rouge_and_failed_generation_is_unscored() -> None:
    task = make("rolebench-en", judges=(JudgeSpec("j"),))
    samples = task.samples()
    assert len(samples) == 4  # incl. the whitespace-duplicate pair, kept as two items
    answers = [Completion(text="I heal people and I touch their souls."), Completion.failure("timeout")]
    answers += [Completion(text="Lee and I make a great team, partner."), Completion(text="")]
    calls, outcome = drive(task, answers, judge=lambda call: Completion(text=ranking_reply(1, 2)))
    assert len(calls) == 3 * 2  # the failed answer is not judged
    spe = outcome.results["metrics"]["SPE"]
    refs = [r["references"]["SPE"] for r in outcome.records]
    values = [rouge_l(a.text, r, language="en") for a, r in zip(answers, refs) if a.ok]
    assert spe["n"] == 3 and spe["n_unscored"] == 1
    assert spe["mean"] == pytest.approx(sum(values) / 3)
    failed = outcome.records[1]
    assert failed["scores"] == {"SPE": None} and failed["unscored_reason"] == "generation failed: timeout"
    assert failed["verdicts"]["j"] == {"outcome": "unscored", "inconsistent": False, "reason": "generation failed: timeout"}
    items = outcome.results["items"]
    assert (items["n"], items["n_scored"], items["n_unscored"]) == (4, 3, 1)
    assert items["unscored_reasons"] == {"generation failed: timeout": 1}
    assert outcome.results["metrics"]["CUS"]["reason"].endswith(
        "rolebench-eng/instruction-generalization/general/test.jsonl"
    )
    # Judged with the reference answer of the role-specific item (judge_reference=role-specific).
    assert "'reference answer':" in calls[0].request.messages[1].content
    assert outcome.results["per_unit"][samples[1].sample_id]["win_rate"] is None


# -- full data: win rate --------------------------------------------------------------------------


def test_win_rate_both_orders_with_disagreement_and_malformed_reply() -> None:
    task = make("rolebench-zh", judges=(JudgeSpec("gpt"),))
    # Per item (by ANSWER-i): the judge's preference in each order.
    #   0: model better both times -> win       1: baseline better both times -> loss
    #   2: always the first shown -> disagreement: tie, inconsistent
    #   3: malformed reply when the baseline is first -> unscored
    #   4: equal ranks -> tie (consistent)       5: model better -> win
    def judge(call: ModelCall) -> Completion:
        assert call.model == "judge:gpt" and call.stage == "pairwise_ranking"
        assert call.request.params.temperature == 0.0 and call.request.params.max_tokens == 1024
        item, position = model_position(call.request)
        model_first = position == 1
        if item in (0, 5):
            return Completion(text=ranking_reply(1, 2) if model_first else ranking_reply(2, 1))
        if item == 1:
            return Completion(text=ranking_reply(2, 1) if model_first else ranking_reply(1, 2))
        if item == 2:
            return Completion(text=ranking_reply(1, 2))
        if item == 3:
            return Completion(text=ranking_reply(1, 2) if model_first else "I prefer the second one.")
        return Completion(text=ranking_reply(1, 1))

    calls, outcome = drive(task, judge=judge)
    assert len(calls) == 6 * 2
    assert [model_position(c.request)[1] for c in calls[:2]] == [1, 2]  # both orders per item
    metrics = outcome.results["metrics"]
    win, adjusted = metrics["win_rate"], metrics["win_rate_tie_adjusted"]
    assert (win["n"], win["n_unscored"]) == (5, 1)
    assert win["mean"] == pytest.approx(2 / 5)
    assert adjusted["mean"] == pytest.approx((2 + 0.5 * 2) / 5)
    assert "1 inconsistent (20.0%)" in win["reason"]
    details = outcome.results["win_rate"]["judges"]["gpt"]
    assert (details["wins"], details["ties"], details["losses"], details["inconsistent"]) == (2, 2, 1, 1)
    assert details["inconsistent_share"] == pytest.approx(0.2)
    assert details["n_unscored"] == 1 and details["n_skipped_no_baseline"] == 0
    assert list(details["unscored_reasons"]) == ["baseline-first: no Python list found in the reply"]
    assert outcome.results["win_rate"]["order_policy"] == "both-orders"
    # Per-item verdicts in the records and per_unit, keyed by item_id.
    outcomes = [r["verdicts"]["gpt"]["outcome"] for r in outcome.records]
    assert outcomes == ["win", "loss", "tie", "unscored", "tie", "win"]
    assert outcome.records[2]["verdicts"]["gpt"]["inconsistent"] is True
    assert [len(r["judgments"]) for r in outcome.records] == [2] * 6
    per_unit = outcome.results["per_unit"]
    ids = [r["item_id"] for r in outcome.records]
    assert [per_unit[i]["win_rate"] for i in ids] == [1.0, 0.0, 0.0, None, 0.0, 1.0]
    assert [per_unit[i]["win_rate_tie_adjusted"] for i in ids] == [1.0, 0.0, 0.5, None, 0.5, 1.0]
    # The judge sees the description where there is one, and the baseline answer, anonymised.
    wukong = next(c for c in calls if "孙悟空" in c.request.messages[1].content)
    assert '"孙悟空"的角色描述是"合成描述：齐天大圣（测试用）。"' in wukong.request.messages[1].content
    assert "RoleGPT" not in wukong.request.messages[1].content
    assert task.manifest()["win_rate"]["judge_template"] == "rolellm-ranking-zh-v1"


def test_random_order_and_several_judges() -> None:
    task = make(
        "rolebench-zh",
        judges=(JudgeSpec("a"), JudgeSpec("b")),
        options={"win_rate_order": "random-order"},
        seed=3,
    )

    def judge(call: ModelCall) -> Completion:
        _, position = model_position(call.request)
        if call.model == "judge:a":
            return Completion(text=ranking_reply(1, 2) if position == 1 else ranking_reply(2, 1))
        return Completion.failure("HTTP 500")

    calls, outcome = drive(task, judge=judge)
    assert len(calls) == 6 * 2  # one order per item, two judges
    metrics = outcome.results["metrics"]
    assert metrics["win_rate[a]"]["mean"] == 1.0 and metrics["win_rate[a]"]["n"] == 6
    assert metrics["win_rate[b]"]["mean"] is None and metrics["win_rate[b]"]["n_unscored"] == 6
    assert "judge call failed: HTTP 500" in metrics["win_rate[b]"]["reason"]
    names = outcome.results["metric_names"]
    assert names["win_rate[a]"] == "win rate [a]"
    assert task.metric_kinds()["win_rate_tie_adjusted[b]"] == "verdict"
    assert task.manifest()["win_rate"]["seed"] == 3
    again = make("rolebench-zh", judges=(JudgeSpec("a"),), options={"win_rate_order": "random-order"}, seed=3)
    calls_again, _ = drive(again, judge=lambda call: Completion(text=ranking_reply(1, 2)))
    assert [c.request for c in calls_again] == [c.request for c in calls if c.model == "judge:a"]


def test_items_without_baseline_are_skipped_and_counted() -> None:
    # Role generalization: the fixture has no baseline files at all.
    task = make("rolebench-en-rolegen", judges=(JudgeSpec("j"),))
    calls, outcome = drive(task, judge=lambda call: pytest.fail("nothing to judge"))
    assert calls == []
    details = outcome.results["win_rate"]["judges"]["j"]
    assert details["n_skipped_no_baseline"] == 3
    assert details["skipped_reasons"] == {
        "missing rolebench-eng/role-generalization/role_specific/rolegpt_baseline.jsonl": 2,
        "missing rolebench-eng/role-generalization/general/rolegpt_baseline.jsonl": 1,
    }
    metrics = outcome.results["metrics"]
    assert metrics["CUS"]["n"] == 1 and metrics["SPE"]["n"] == 2
    assert metrics["win_rate"]["reason"].startswith("not computed: no item has a RoleGPT baseline answer")
    assert all(r["win_rate_skipped"] for r in outcome.records)


def test_judge_calls_carry_the_ranking_check_and_empty_answers_are_flagged_and_counted() -> None:
    task = make("rolebench-zh", judges=(JudgeSpec("gpt"),))
    n = len(task.samples())
    # Item 1 answered nothing even after the runner's retries: handed over as "" with a note.
    answers = [Completion(text=f"ANSWER-{i} 回答", finish_reason="stop") for i in range(n)]
    answers[1] = Completion(text="", finish_reason="stop", notes=("empty answer after 3 attempt(s)",), attempts=3)
    answers[2] = Completion.failure("HTTP 500 (gave up after 3 attempt(s))")

    def judge(call: ModelCall) -> Completion:
        if "'response': ''" in call.request.messages[1].content:
            return Completion(text=None, error="unusable reply: no parseable ranking (after 3 attempt(s))")
        return Completion(text=ranking_reply(1, 2))

    calls, outcome = drive(task, answers, judge)
    assert calls and all(c.check is not None for c in calls)
    assert calls[0].check("no ranking here") and calls[0].check(ranking_reply(1, 2)) is None
    assert [r["empty_answer"] for r in outcome.records] == [False, True] + [False] * (n - 2)
    items = outcome.results["items"]
    assert items["empty_answers"] == 1
    # Both unscored win-rate judgments are on the items line: the empty answer's failed judge
    # call and the failed generation (not judged).
    judgments = items["judgments"]
    assert (judgments["n"], judgments["n_scored"], judgments["n_unscored"]) == (n, n - 2, 2)
    assert sorted(judgments["unscored_reasons"]) == [
        "generation failed: HTTP 500 (gave up after 3 attempt(s))",
        "model-first: judge call failed: unusable reply: no parseable ranking (after 3 attempt(s))",
    ]
