"""Judge reliability figures on hand-computed examples: agreement (exact, Spearman, Krippendorff's
alpha against the published worked example), length bias, the position-bias gap of pairwise
judges, read from the records of PersonaGym, RoleBench, PingPong and the generic fields."""

from __future__ import annotations

import math

import pytest

from rolebench_eval.analysis import judge_reliability as jr
from rolebench_eval.analysis.report import render_run_report

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units
# example with missing values: ordinal alpha 0.815 (also the `krippendorff` package's doctest).
KRIPPENDORFF_EXAMPLE = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_matches_the_published_example() -> None:
    ratings = [
        jr.Rating(f"u{i}", f"observer{o}", value)
        for o, row in enumerate(KRIPPENDORFF_EXAMPLE)
        for i, value in enumerate(row)
    ]
    entry = jr.agreement(ratings)["score"]
    assert round(entry["krippendorff_alpha"], 3) == 0.815
    assert entry["n_items"] == 11  # unit 12 has a single rating: not pairable
    first = entry["pairs"][0]
    assert first["judges"] == ["observer0", "observer1"] and first["n_both_scored"] == 9
    assert first["exact_agreement"] == pytest.approx(8 / 9)


def test_exact_agreement_and_spearman_by_hand() -> None:
    a, b = [1, 2, 3, 4], [1, 2, 4, 3]
    ratings = [jr.Rating(f"q{i}", "a", x) for i, x in enumerate(a)] + [jr.Rating(f"q{i}", "b", x) for i, x in enumerate(b)]
    ratings.append(jr.Rating("q9", "a", None))  # unscored: left out
    (pair,) = jr.agreement(ratings)["score"]["pairs"]
    assert pair["n_both_scored"] == 4 and pair["exact_agreement"] == 0.5
    assert pair["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # d^2 = 1 + 1
    assert jr.agreement([r for r in ratings if r.judge == "a"]) is None  # one judge: no agreement


def test_length_bias_is_the_rank_correlation_of_score_and_length() -> None:
    ratings = [jr.Rating("x", "j", s, length=n) for s, n in [(1, 10), (2, 30), (3, 20), (5, 40)]]
    (entry,) = jr.length_bias(ratings)["j"].values()
    assert entry == {"n": 4, "spearman": pytest.approx(0.8)}
    constant = [jr.Rating("x", "j", 3, length=n) for n in (1, 2, 3)]
    assert jr.length_bias(constant)["j"]["score"]["spearman"] is None


def rolebench_record(item: str, first: str, second: str, answer: str = "long answer", baseline: str = "short") -> dict:
    """A RoleBench record: the model's outcome when shown first, then when shown second."""
    return {
        "unit": item, "sample_id": item, "answer": answer, "baseline_answer": baseline,
        "judgments": [
            {"judge": "j", "order": "model-first", "outcome": first},
            {"judge": "j", "order": "baseline-first", "outcome": second},
        ],
    }


def test_a_judge_always_picking_slot_a_has_a_full_position_bias_gap() -> None:
    # Slot A wins: the model wins when shown first and loses when shown second.
    always_a = [rolebench_record(f"i{k}", "win", "loss") for k in range(4)]
    entry = jr.reliability(always_a)["position_bias"]["j"]
    assert entry["position_bias_gap"] == 1.0 and entry["first_slot_rate"] == 1.0
    assert entry["n_both_decisive"] == 4 and entry["n_slot_following"] == 4
    # A consistent judge (the same answer in both orders) follows no slot.
    consistent = [rolebench_record("i0", "win", "win"), rolebench_record("i1", "loss", "loss")]
    entry = jr.reliability(consistent)["position_bias"]["j"]
    assert entry["position_bias_gap"] == 0.0 and entry["first_slot_rate"] == 0.5
    # 3 of 4 decisive pairs follow a slot (two A, one B); a tie and an unparsed pair are left out.
    mixed = [rolebench_record("i0", "win", "loss"), rolebench_record("i1", "win", "loss"),
             rolebench_record("i2", "loss", "win"), rolebench_record("i3", "win", "win"),
             rolebench_record("i4", "tie", "win"), rolebench_record("i5", "unparsed", "win")]
    entry = jr.reliability(mixed)["position_bias"]["j"]
    assert (entry["n_both_orders"], entry["n_both_decisive"], entry["n_slot_following"]) == (6, 4, 3)
    assert entry["position_bias_gap"] == 0.75 and entry["n_unparsed"] == 1
    # 10 decisive verdicts; slot 1 picked by both of i0 and of i1 and by i3's first: 5 of 10.
    assert entry["n_decisive"] == 10 and entry["first_slot_rate"] == 0.5


def test_generic_pairwise_verdicts_and_pairwise_length_bias() -> None:
    records = [{"unit": f"d{k}", "pairwise_verdicts": [
        {"item": "round1", "judge": "j", "model_slot": 1, "outcome": "win", "length_difference": 10 * k},
        {"item": "round1", "judge": "j", "model_slot": 2, "outcome": "loss" if k < 2 else "win", "length_difference": 10 * k},
    ]} for k in range(4)]
    entry = jr.reliability(records)["position_bias"]["j"]
    assert entry["position_bias_gap"] == 0.5  # d0, d1 follow slot A; d2, d3 pick the model twice
    assert entry["length_bias"]["n"] == 8
    # The model's outcome rises with its length advantage: rho 1.
    longer_wins = [{"unit": f"d{k}", "pairwise_verdicts": [
        {"item": "r", "judge": "j", "model_slot": 1, "outcome": outcome, "length_difference": diff}]}
        for k, (outcome, diff) in enumerate([("loss", -10), ("tie", 0), ("win", 25)])]
    entry = jr.reliability(longer_wins)["position_bias"]["j"]
    assert entry["length_bias"] == {"n": 3, "spearman": pytest.approx(1.0)}
    assert entry["position_bias_gap"] is None  # no item judged in both slot assignments


def test_personagym_and_pingpong_records_give_ratings() -> None:
    personagym = [
        {"unit": "p1", "sample_id": f"p1-q{k}", "answer": "x" * (k + 1),
         "judgments": [{"judge": "a", "score": k + 1, "batch_position": 0}, {"judge": "b", "score": k + 1, "batch_position": 0}]}
        for k in range(3)
    ]
    section = jr.reliability(personagym)
    assert section["agreement"]["score"]["pairs"][0]["exact_agreement"] == 1.0
    assert section["agreement"]["score"]["krippendorff_alpha"] == 1.0
    assert section["length_bias"]["a"]["score"]["spearman"] == pytest.approx(1.0)
    turn = {"turn": 1, "is_refusal": False, "in_character_score": 4, "entertaining_score": 3, "fluency_score": 5}
    pingpong = [{
        "unit": "en-c0-s0", "sample_id": "en-c0-s0", "scores": {"in_character": 4.0},
        "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"},
                  {"role": "user", "text": "hm"}, {"role": "assistant", "text": "well well"}],
        "judgments": [
            {"judge": "a", "turns": [turn, {**turn, "turn": 2, "fluency_score": 4}], "means": {}},
            {"judge": "b", "turns": None, "means": None},  # unscored by b
        ],
    }]
    ratings = jr.ratings_from_records(pingpong)
    assert len(ratings) == 2 * 3 + 2 * 1  # a: 2 turns x 3 criteria; b: unscored (criteria of the record)
    fluency = sorted((r.item, r.score, r.length) for r in ratings if r.judge == "a" and r.criterion == "fluency")
    assert fluency == [("en-c0-s0/turn1", 5, 5), ("en-c0-s0/turn2", 4, 9)]
    assert jr.reliability([{"unit": "x", "judgments": []}]) is None


def test_the_report_shows_the_figures() -> None:
    section = jr.reliability([rolebench_record(f"i{k}", "win", "loss") for k in range(2)])
    results = {"run_id": "r", "model": {"label": "m", "backend": "hf"}, "judges": [], "config_hash": "h",
               "tasks": {"t": {"metrics": {}, "reliability": section}}}
    text = render_run_report(results)
    assert "- position bias of j: gap 1.000 (2 of 2 both-order pair(s) follow the slot), first-slot rate 1.000 (n=4)" in text


def test_rolebench_records_of_a_slot_a_judge_give_a_full_gap() -> None:
    """RoleBench's own records (both orders by default): a judge always ranking model_1 first."""
    from pathlib import Path

    from rolebench_eval.requests import Completion
    from rolebench_eval.task_api import MODEL_ROLE, JudgeSpec, RunSettings
    from rolebench_eval.task_registry import build_task, discover

    root = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
    task = build_task(discover().tasks["rolebench-en"],
                      RunSettings(options={"rolebench_dir": str(root)}, judges=(JudgeSpec("j"),), limit=3))
    samples = task.samples()
    ranked_first = str([{"model": "model_1", "reason": "r", "rank": 1}, {"model": "model_2", "reason": "r", "rank": 2}])
    results = []
    for job in task.jobs(samples):
        calls = next(job)
        try:
            while True:
                calls = job.send([Completion(f"answer {len(c.request.messages)}" if c.model == MODEL_ROLE else ranked_first, "stop")
                                  for c in calls])
        except StopIteration as stop:
            results.append(stop.value)
    records = task.finish(samples, results).records
    entry = jr.reliability(records)["position_bias"]["j"]
    judged = sum(1 for r in records if r["judgments"])
    assert judged >= 2
    assert entry["n_both_decisive"] == judged and entry["position_bias_gap"] == 1.0
    assert entry["first_slot_rate"] == 1.0
