"""The calls section: tokens, cost, wall time and throughput per role and stage, from a scripted
sequence of observer events (the scheduler's hooks) on a fake clock."""

from __future__ import annotations

import pytest

from rolebench_eval.running.call_accounting import CallTally
from rolebench_eval.analysis.report import calls_lines
from rolebench_eval.requests import Completion, Usage
from rolebench_eval.scheduling.pricing import price_table


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ok(prompt: int | None, completion: int | None, text: str = "reply", **kw: object) -> Completion:
    return Completion(text=text, usage=Usage(prompt, completion), **kw)  # type: ignore[arg-type]


def scripted_tally(prices: list[str] | None = None) -> CallTally:
    clock = Clock()
    tally = CallTally(3, prices=price_table(prices or []), clock=clock)
    tally.register("qwen", "vllm", "/models/qwen")  # local: no price
    tally.register("gpt", "openai", "gpt-4o-2024-08-06")
    events = [
        # (time, hook, role, label, stage, completion, made, latency)
        (0.0, "started", "model", "qwen", "generate"),
        (0.5, "started", "model", "qwen", "generate"),
        (1.0, "started", "examples", "gpt", "score_examples"),
        (2.0, "finished", "model", "qwen", "generate", ok(100, 40), True, 2.0),
        (4.0, "finished", "model", "qwen", "generate", ok(None, None), True, 3.5),  # no usage
        (4.0, "finished", "model", "qwen", "generate", ok(7, 7), False, None),  # reused: not counted
        (5.0, "finished", "examples", "gpt", "score_examples", ok(1000, 500), True, 4.0),
        (5.0, "started", "judge:gpt", "gpt", "rubric_grading"),
        (6.0, "started", "judge:gpt", "gpt", "rubric_grading"),
        (9.0, "finished", "judge:gpt", "gpt", "rubric_grading",
         ok(2000, 300, attempts=2, attempt_errors=("HTTP 429",)), True, 3.0),
        (11.0, "finished", "judge:gpt", "gpt", "rubric_grading", Completion.failure("HTTP 400 bad request"), True, 1.0),
        (11.0, "finished", "judge:gpt", "gpt", "rubric_grading", Completion.failure("not sent: --max-calls 5 reached"), False, None),
    ]
    for time_s, hook, *args in events:
        clock.now = 100.0 + time_s
        getattr(tally, hook)(*args)
    return tally


def rows(section: dict) -> dict:
    return {(r["role"], r["stage"]): r for r in section["by_role"]}


def test_tokens_cost_and_time_per_role_and_stage() -> None:
    section = scripted_tally().section()
    by = rows(section)
    gen = by[("model under test", "generate")]
    assert (gen["made"], gen["reused"], gen["prompt_tokens"], gen["completion_tokens"]) == (2, 1, 100, 40)
    assert gen["usage_missing"] == 1  # a reply without usage is counted, not added as 0 tokens
    assert gen["wall_s"] == 4.0 and gen["calls_per_s"] == 0.5 and gen["completion_tokens_per_s"] == 10.0
    assert gen["mean_latency_s"] == 2.75
    assert gen["cost_usd"] is None and gen["priced_as"] is None  # local model: no price, not $0

    grading = by[("judge:gpt", "rubric_grading")]
    assert (grading["made"], grading["failed"], grading["not_sent"], grading["retried_attempts"]) == (2, 1, 1, 1)
    assert grading["prompt_tokens"] == 2000 and grading["completion_tokens"] == 300
    assert grading["usage_missing"] == 0  # the HTTP 400 got no reply: a failure, not missing usage
    assert grading["wall_s"] == 6.0
    # 2000 * 2.50 / 1e6 + 300 * 10.00 / 1e6
    assert grading["cost_usd"] == pytest.approx(0.008)
    examples = by[("examples", "score_examples")]
    assert examples["cost_usd"] == pytest.approx(1000 * 2.5e-6 + 500 * 1e-5)

    roles = {(r["role"], r["model"]): r for r in section["roles"]}
    assert set(roles) == {("model under test", "qwen"), ("examples", "gpt"), ("judge:gpt", "gpt")}
    assert roles[("judge:gpt", "gpt")]["wall_s"] == 6.0  # first send 5.0 -> last completion 11.0
    total = section["total"]
    assert (total["made"], total["reused"], total["failed"], total["not_sent"]) == (5, 1, 1, 1)
    assert (total["prompt_tokens"], total["completion_tokens"], total["usage_missing"]) == (3100, 840, 1)
    assert total["cost_usd"] == pytest.approx(0.008 + 0.0075)
    assert total["no_price"] == ["qwen"]
    # A call the budget refused is not an endpoint failure.
    assert scripted_tally().failure_lines() == [
        "1 rubric_grading call(s) of judge:gpt (gpt) failed after their retries: 1x HTTP 400 bad request"
    ]


def test_price_override_changes_the_estimate() -> None:
    section = scripted_tally(["gpt-4o-2024-08-06=1,2", "/models/qwen=5,5"]).section()
    by = rows(section)
    grading = by[("judge:gpt", "rubric_grading")]
    assert grading["cost_usd"] == pytest.approx((2000 * 1 + 300 * 2) / 1e6)
    assert grading["priced_as"]["source"] == "--price (user override)"
    # A local engine is never priced, whatever its path is called.
    assert by[("model under test", "generate")]["cost_usd"] is None


def test_unregistered_or_unknown_model_has_no_cost() -> None:
    tally = CallTally(3)
    tally.register("mine", "openai", "my-finetune")
    tally.finished("judge:mine", "mine", "rubric_grading", ok(10, 10), True, 1.0)
    tally.finished("judge:other", "other", "rubric_grading", ok(10, 10), True, 1.0)
    section = tally.section()
    assert [r["cost_usd"] for r in section["by_role"]] == [None, None]
    assert section["total"]["cost_usd"] is None and section["total"]["no_price"] == ["mine", "other"]


def test_empty_answer_is_read_from_the_stored_completion() -> None:
    tally = CallTally(3)
    empty = Completion(text=" ", usage=Usage(5, 1), error="unusable reply: empty answer (after 3 attempt(s))", attempts=3)
    tally.finished("model", "m", "generate", empty, True, 0.1)
    row = tally.section()["by_role"][0]
    assert (row["empty_answers"], row["failed"], row["retried_attempts"], row["completion_tokens"]) == (1, 0, 2, 1)


def test_terminal_and_markdown_lines_show_tokens_and_cost() -> None:
    section = scripted_tally().section()
    lines = calls_lines({"calls": section, "incomplete": []})
    assert lines[0].startswith("calls: 5 made, 1 reused, 1 failed, 1 retried attempt(s), 1 not sent")
    assert "tokens: 3,100 prompt + 840 completion (1 call(s) without usage)" in lines[1]
    assert "estimated cost: $0.0155 (prices as of 2024-10-01; no price: qwen)" in lines[1]
    grading = next(line for line in lines if "rubric_grading" in line)
    assert "2,000+300 tokens" in grading and "$0.0080" in grading and "6.0s" in grading
    generate = next(line for line in lines if "generate" in line)
    assert "no price" in generate and "1 without usage" in generate and "10.0 tok/s" in generate


def test_html_run_page_shows_tokens_and_cost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from rolebench_eval.analysis import html_report
    from tests import run_fixtures as fx

    root = tmp_path / "results"
    fx.write_run(root, "model-a__personagym-light__aaaa", [fx.personagym_task(fx.persona_values(n=3, seed=1))], model="model-a")
    run = root / "runs" / "model-a__personagym-light__aaaa"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results["calls"] = scripted_tally().section()
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    html = html_report.render_run_html(run)
    assert "tokens: 3,100 prompt + 840 completion (1 call(s) without usage)" in html
    assert "<td>2,000 + 300</td><td>$0.0080</td><td>6.0s</td><td>50.0 tok/s, 0.33 calls/s</td>" in html
    assert "<td>100 + 40 (1 without usage)</td><td>no price</td>" in html
