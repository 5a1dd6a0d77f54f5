"""Pairwise ranking judge: prompt bytes, order policies, reply parsing and aggregation."""

from __future__ import annotations

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.judges import pairwise_ranking as judge
from rolebench_eval.requests import Completion

SYSTEM = (
    "You are a role-playing performance comparison assistant. You should rank the models based on "
    "the role characteristics and text quality of their responses. The rankings are then output "
    "using Python dictionaries and lists."
)
USER = """The models below are to play the role of "Jack Sparrow". The role description of "Jack Sparrow" is "A pirate {captain}". I need to rank the following models based on the two criteria below:
1. Which one has more pronounced role speaking style, and speaks more in line with the role description. The more distinctive the speaking style, the better.
2. Which one's output contains more knowledge and memories related to the role; the richer, the better. (If the question contains reference answers, then the role-specific knowledge and memories are based on the reference answer.)
The question provided to each model is:
{'question': 'Where is the {treasure}?'}
The respective answers from the models to this question are:
[{'model': 'model_1', 'response': 'Mine.'}, {'model': 'model_2', 'response': "Baseline's."}]
Now, based on the above two criteria, please rank the models. Avoid any positional biases and ensure that the order in which the responses are presented does not influence your decision. Do not favor certain model names.
Then, use a list containing the model's name, its rank, and the reason for its ranking to return the results, i.e., please ensure to use the following format to return the results:
[{"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}, {"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}]
Your answer must be a valid Python list of dictionaries to ensure I can directly parse it using Python. Do not include any extraneous content! Please provide a ranking that is as accurate as possible and aligns with the intuition of most people."""


def test_prompt_bytes_and_rendering() -> None:
    messages, warning = judge.build_ranking_messages(
        "Jack Sparrow", "A pirate {captain}", "Where is the {treasure}?", "Mine.", "Baseline's."
    )
    assert warning is None
    assert messages[0].role == "system" and messages[0].content == SYSTEM
    assert messages[1].role == "user" and messages[1].content == USER


def test_missing_description_and_chinese_template() -> None:
    messages, warning = judge.build_ranking_messages("Jack Sparrow", None, "Q", "a", "b")
    assert ' The role description of "Jack Sparrow"' not in messages[1].content
    assert messages[1].content.startswith(
        'The models below are to play the role of "Jack Sparrow". I need to rank'
    )
    assert warning is not None and "'omit-sentence'" in warning
    messages, _ = judge.build_ranking_messages(
        "Jack Sparrow", None, "Q", "a", "b", missing_description="empty-description"
    )
    assert 'The role description of "Jack Sparrow" is "".' in messages[1].content
    zh, _ = judge.build_ranking_messages(
        "孙悟空", "齐天大圣", "你好", "甲", "乙", template="rolellm-ranking-zh-v1"
    )
    assert zh[0].content.startswith("你是一个角色扮演表现比较助手。")
    assert zh[1].content.startswith('下面的模型要扮演"孙悟空"这个角色。"孙悟空"的角色描述是"齐天大圣"。')
    assert "{'question': '你好'}" in zh[1].content
    assert '[{"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}' in zh[1].content
    with pytest.raises(UsageError):
        judge.build_ranking_messages("X", None, "Q", "a", "b", template="nope")


def test_both_orders_requests() -> None:
    requests, _ = judge.build_ranking_requests("id1", "R", "d", "Q", "MODEL", "BASE")
    assert [(r.order, r.model_label) for r in requests] == [
        ("model-first", "model_1"),
        ("baseline-first", "model_2"),
    ]
    first, second = (r.request.messages[1].content for r in requests)
    assert "'model_1', 'response': 'MODEL'" in first and "'model_2', 'response': 'BASE'" in first
    assert "'model_1', 'response': 'BASE'" in second and "'model_2', 'response': 'MODEL'" in second
    assert all(r.request.params.temperature == 0.0 for r in requests)


def test_random_order_is_seeded_per_item() -> None:
    def order(item_id: str, seed: int) -> str:
        requests, _ = judge.build_ranking_requests(
            item_id, "R", "d", "Q", "M", "B", policy="random-order", seed=seed
        )
        assert len(requests) == 1
        return requests[0].order

    orders = [order(f"item{i}", 0) for i in range(40)]
    assert orders == [order(f"item{i}", 0) for i in range(40)]  # stable
    assert set(orders) == {"model-first", "baseline-first"}  # both positions occur
    with pytest.raises(UsageError):
        judge.build_ranking_requests("i", "R", "d", "Q", "M", "B", policy="listwise")


GOOD = (
    '[{"model": "model_1", "reason": "more in character", "rank": 1}, '
    '{"model": "model_2", "reason": "bland", "rank": 2}]'
)


@pytest.mark.parametrize(
    ("reply", "label", "outcome"),
    [
        (GOOD, "model_1", "win"),
        (GOOD, "model_2", "loss"),
        ("```python\n" + GOOD + "\n```", "model_1", "win"),
        ("Here is my ranking:\n" + GOOD + "\nHope this helps [really].", "model_1", "win"),
        ("Note [1]: see below.\n" + GOOD, "model_1", "win"),  # an earlier non-dict list
        (GOOD.replace("rank\": 1", "rank\": \"2\"").replace("rank\": 2", "rank\": \"1\""), "model_1", "loss"),
        (GOOD.replace('"rank": 2', '"rank": 1'), "model_1", "tie"),
        (GOOD.replace("model_1", "Model 1"), "model_1", "win"),
        (GOOD.replace("bland", "uses ] and [ oddly"), "model_2", "loss"),
        ("[{'model': 'model_2', 'rank': '1st'}, {'model': 'model_1', 'rank': '2nd'}]", "model_1", "loss"),
    ],
)
def test_parse_good_replies(reply: str, label: str, outcome: str) -> None:
    assert judge.parse_ranking(reply, label) == judge.Verdict(outcome)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I prefer the first answer.", "no Python list found"),
        ('[{"model": "model_1", "reason": "cut off', "no Python list found"),
        ('[{"model": "model_1", "rank": 1}]', "instead of both models"),
        ('[{"model": "model_1", "rank": 1}, {"model": "model_3", "rank": 2}]', "unknown model name"),
        ('[{"model": "model_1", "rank": "first"}, {"model": "model_2", "rank": 2}]', "not an integer"),
        ('[{"model": "model_1"}, {"model": "model_2", "rank": 2}]', "without 'model' and 'rank'"),
        ('[{"model": "model_1", "rank": 1}, {"model": "model_1", "rank": 2}]', "ranked twice"),
    ],
)
def test_parse_malformed_and_partial_replies(reply: str, reason: str) -> None:
    verdict = judge.parse_ranking(reply, "model_1")
    assert verdict.outcome == "unparsed" and verdict.reason is not None and reason in verdict.reason


def test_failed_judge_call_is_unparsed() -> None:
    verdict = judge.verdict_from_completion(Completion.failure("timeout"), "model_1")
    assert verdict == judge.Verdict("unparsed", "judge call failed: timeout")
    assert judge.verdict_from_completion(Completion(text=GOOD), "model_1") == judge.Verdict("win")


def test_combine_orders() -> None:
    win, loss, tie = judge.Verdict("win"), judge.Verdict("loss"), judge.Verdict("tie")
    bad = judge.Verdict("unparsed", "no Python list found in the reply")
    assert judge.combine_orders(win, win) == judge.ItemVerdict("win")
    assert judge.combine_orders(loss, loss) == judge.ItemVerdict("loss")
    assert judge.combine_orders(tie, tie) == judge.ItemVerdict("tie")
    assert judge.combine_orders(win, loss) == judge.ItemVerdict("tie", inconsistent=True)
    assert judge.combine_orders(win, tie) == judge.ItemVerdict("tie", inconsistent=True)
    assert judge.combine_orders(win, bad) == judge.ItemVerdict(
        "unscored", reason="baseline-first: no Python list found in the reply"
    )
    assert judge.combine_orders(bad, win).reason == "model-first: no Python list found in the reply"
    assert judge.single_order(win) == judge.ItemVerdict("win")
    assert judge.single_order(bad).outcome == "unscored"


def test_aggregate() -> None:
    verdicts = [
        judge.ItemVerdict("win"),
        judge.ItemVerdict("win"),
        judge.ItemVerdict("loss"),
        judge.ItemVerdict("tie", inconsistent=True),
        judge.ItemVerdict("tie"),
        judge.ItemVerdict("unscored", reason="model-first: no Python list found in the reply"),
    ]
    summary = judge.aggregate(verdicts, n_skipped_no_baseline=3)
    assert (summary.n, summary.wins, summary.ties, summary.losses) == (5, 2, 2, 1)
    assert summary.win_rate == pytest.approx(2 / 5)
    assert summary.tie_adjusted_win_rate == pytest.approx(3 / 5)
    assert summary.inconsistent == 1 and summary.inconsistent_share == pytest.approx(1 / 5)
    assert summary.n_unscored == 1
    assert summary.unscored_reasons == {"model-first: no Python list found in the reply": 1}
    assert summary.n_skipped_no_baseline == 3
    empty = judge.aggregate([])
    assert empty.win_rate is None and empty.n == 0


def test_reply_check_rejects_a_reply_without_a_ranking() -> None:
    assert judge.reply_check("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]") is None
    assert judge.reply_check("") == "no parseable ranking: no Python list found in the reply"
    assert "instead of both models" in (judge.reply_check("[{'model': 'model_1', 'rank': 1}]") or "")
