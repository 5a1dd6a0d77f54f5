"""--max-calls and --budget-usd: refused exactly when the next call would exceed the limit."""

from __future__ import annotations

import pytest

from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message, Usage
from rolebench_eval.scheduling.budget import Budget
from rolebench_eval.scheduling.pricing import estimate_prompt_tokens, price_table


def request(text: str = "x" * 297, max_tokens: int = 100) -> ChatRequest:
    return ChatRequest((Message("user", text),), GenerationParams(max_tokens=max_tokens))


def test_prompt_estimate_is_high_for_english_and_counts_cjk_per_character() -> None:
    # 3 framing + 4 per message + 297 / 3
    assert estimate_prompt_tokens(request()) == 3 + 4 + 99
    assert estimate_prompt_tokens(request("角色扮演ab")) == 3 + 4 + 4 + 1


def test_max_calls_refuses_the_call_after_the_limit() -> None:
    budget = Budget(max_calls=2)
    assert budget.refuse("model", "m", request()) is None
    assert budget.refuse("model", "m", request()) is None
    assert budget.refuse("judge:j", "j", request()) == "--max-calls 2 reached"
    assert budget.refuse("model", "m", request()) == "--max-calls 2 reached"
    assert budget.incomplete_line() == (
        "stopped at --max-calls 2: 2 call(s) refused; rerun to continue "
        "(stored calls are reused; each run makes at most 2 new calls)"
    )


def test_budget_refuses_exactly_when_the_next_call_would_exceed_it() -> None:
    # Prices of 1 USD per million in and out: a call costs up to (106 + 100) / 1e6 USD by estimate.
    prices = price_table(["m=1,1"])
    budget = Budget(budget_usd=3 * 206e-6 + 1e-9, prices=prices)
    budget.register("m", "openai", "m")
    assert budget.estimate("m", request()) == pytest.approx(206e-6)
    # Three estimates fit while in flight; the fourth would exceed.
    assert [budget.refuse("model", "m", request()) for _ in range(3)] == [None, None, None]
    assert budget.reserved_usd == pytest.approx(3 * 206e-6)
    assert budget.refuse("model", "m", request()) is not None
    assert budget.incomplete_line() is not None and budget.incomplete_line().startswith(
        "stopped before exceeding --budget-usd 0.00"
    )


def test_spent_replaces_the_estimate_with_the_reported_cost() -> None:
    budget = Budget(budget_usd=0.001, prices=price_table(["m=1,1"]))
    budget.register("m", "openai", "m")
    assert budget.refuse("model", "m", request()) is None
    budget.spent("model", "m", Completion(text="a", usage=Usage(100, 6)))
    assert budget.spent_usd == pytest.approx(106e-6) and budget.reserved_usd == 0
    # Without usage the estimate is kept as the cost: unknown is never $0.
    assert budget.refuse("model", "m", request()) is None
    budget.spent("model", "m", Completion(text="a"))
    assert budget.spent_usd == pytest.approx(106e-6 + 206e-6)
    # 0.001 - 312e-6 = 688e-6 left: 3 more calls fit (618e-6), a 4th would not.
    assert [budget.refuse("model", "m", request()) is None for _ in range(4)] == [True, True, True, False]
    # Once stopped, a smaller call is refused too: the run stops rather than trickling on.
    assert budget.refuse("model", "m", request("x", max_tokens=1)) is not None
    assert budget.refused_calls == 2
    line = budget.incomplete_line()
    assert line == ("stopped before exceeding --budget-usd 0.00 (spent ~$0.00 estimated): 2 call(s) refused; "
                    "rerun with a higher budget to continue (stored calls are reused)")


def test_unpriced_models_are_not_limited_and_warned_once() -> None:
    warned: list[str] = []
    budget = Budget(budget_usd=1e-9, prices=price_table([]), warn=warned.append)
    budget.register("local", "vllm", "/models/qwen")
    budget.register("api", "openai", "my-finetune")
    assert all(budget.refuse("model", "local", request()) is None for _ in range(5))
    assert budget.refuse("judge:api", "api", request()) is None
    assert len(warned) == 2 and len(budget.warnings) == 2
    assert warned == [
        "--budget-usd does not limit calls to local (vllm /models/qwen): a local engine has no per-token price",
        "--budget-usd does not limit calls to api (openai my-finetune): no price is known for it; "
        "give one with --price my-finetune=IN,OUT to count it",
    ]
    assert budget.incomplete_line() is None


def test_no_limits_refuse_nothing() -> None:
    budget = Budget()
    assert all(budget.refuse("model", "m", request()) is None for _ in range(100))
    assert budget.sent == 100 and budget.incomplete_line() is None


def test_a_retry_without_usage_is_charged_at_the_last_estimate() -> None:
    budget = Budget(budget_usd=1.0, prices=price_table(["m=1,1"]))
    budget.register("m", "openai", "m")
    assert budget.refuse("model", "m", request()) is None
    budget.spent("model", "m", Completion(text=" "))  # unusable, asked again (no new refuse)
    budget.spent("model", "m", Completion(text="b"))
    assert budget.spent_usd == pytest.approx(2 * 206e-6)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--price", "gpt-4o=1"], "rbe: error: --price 'gpt-4o=1': expected MODEL=IN,OUT"),
        (["--price", "m=1,2", "--price", "m=3,4"], "rbe: error: --price 'm=3,4': model 'm' is priced twice"),
        (["--budget-usd", "0"], "argument --budget-usd: expected a positive number, got 0"),
        (["--max-calls", "0"], "argument --max-calls: expected a positive number, got 0"),
    ],
)
def test_bad_cost_flags_exit_2_with_one_line(flags: list[str], words: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from rolebench_eval.cli import main

    try:
        code = main(["run", "--tasks", "personagym-light", "--results-dir", str(tmp_path), *flags])
    except SystemExit as exit_:  # argparse's own type errors
        code = exit_.code
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in last and "Traceback" not in last
