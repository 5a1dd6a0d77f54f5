"""Paired statistics: every p-value is checked against scipy called directly, or against a hand value."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rolebench_eval.analysis import comparison_render as render
from rolebench_eval.analysis import multiple_comparisons as mc
from rolebench_eval.analysis import paired_stats as ps
from rolebench_eval.analysis import regression_gates as gates
from rolebench_eval.errors import UsageError

PERSONAS = [f"persona-{i}" for i in range(20)]
# Likert scores with ties and half the personas unchanged (zero differences), as judge scores are;
# n = 20 > 13, so scipy's "auto" uses the normal approximation, where the zero handling matters.
LIKERT_A = pd.Series([4, 3, 5, 2, 4, 4, 3, 5, 1, 4, 3, 2, 5, 4, 3, 4, 2, 5, 3, 4], index=PERSONAS, dtype=float)
LIKERT_B = pd.Series([5, 3, 4, 4, 4, 5, 4, 5, 3, 5, 3, 3, 5, 4, 4, 5, 2, 5, 3, 4], index=PERSONAS, dtype=float)


def test_likert_uses_wilcoxon_pratt_and_matches_scipy() -> None:
    result = ps.compare_metric(LIKERT_A, LIKERT_B, "PC", "likert")
    expected = stats.wilcoxon(
        LIKERT_B.to_numpy() - LIKERT_A.to_numpy(), zero_method="pratt", method="auto"
    )
    assert result.test == "wilcoxon(zero_method=pratt, method=auto)"
    assert result.statistic == pytest.approx(float(expected.statistic))
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)
    # The zero handling is a real choice: scipy's default would give another p on these data.
    default = stats.wilcoxon(LIKERT_B.to_numpy() - LIKERT_A.to_numpy(), zero_method="wilcox")
    assert result.p_value != pytest.approx(float(default.pvalue), rel=1e-6)
    assert result.n_paired == 20 and result.n_only_a == 0 and result.n_only_b == 0
    assert result.mean_a == pytest.approx(LIKERT_A.mean())
    assert result.mean_b == pytest.approx(LIKERT_B.mean())
    assert result.diff == pytest.approx(LIKERT_B.mean() - LIKERT_A.mean())
    assert result.p_adjusted == result.p_value  # single metric: nothing to correct


def test_likert_all_zero_differences_give_p_one_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ps.compare_metric(LIKERT_A, LIKERT_A.copy(), "PC", "likert")
    assert result.p_value == 1.0
    assert result.statistic == 0.0
    assert result.significant is False
    assert result.ci95 == (0.0, 0.0)
    assert result.ci_method == "degenerate"
    assert "zero" in result.note


def test_pairing_on_common_index_counts_units_only_on_one_side_and_drops_nan() -> None:
    a = pd.Series([4.0, 3.0, 5.0, 2.0, np.nan], index=["p1", "p2", "p3", "p4", "p5"])
    b = pd.Series([5.0, 3.0, 4.0, 3.0, 1.0], index=["p2", "p1", "p3", "p5", "p6"])
    result = ps.compare_metric(a, b, "EA", "likert", n_resamples=999)
    # common after dropping a's NaN for p5: p1, p2, p3; only in a: p4; only in b: p5, p6.
    assert (result.n_paired, result.n_only_a, result.n_only_b) == (3, 1, 2)
    # Paired by id, not by position: p1 4->3, p2 3->5, p3 5->4.
    assert result.mean_a == pytest.approx(4.0)
    assert result.mean_b == pytest.approx(4.0)
    assert result.diff == pytest.approx(0.0)


def test_continuous_uses_paired_t_test_matching_scipy() -> None:
    rng = np.random.default_rng(7)
    items = [f"item-{i}" for i in range(40)]
    a = pd.Series(rng.uniform(0.1, 0.6, 40), index=items)
    b = pd.Series(a.to_numpy() + rng.normal(0.02, 0.05, 40), index=items)
    result = ps.compare_metric(a, b.sample(frac=1.0, random_state=1), "SPE", "continuous")
    expected = stats.ttest_rel(b.to_numpy(), a.to_numpy())
    assert result.test == "ttest_rel"
    assert result.statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)


def test_continuous_constant_nonzero_difference_is_stated_not_nan() -> None:
    a = pd.Series([0.1, 0.2, 0.3, 0.4])
    b = a + 0.25
    result = ps.compare_metric(a, b, "CUS", "continuous")
    assert result.p_value == 0.0 and result.statistic == math.inf
    assert result.ci95 == (pytest.approx(0.25), pytest.approx(0.25))
    assert result.ci_method == "degenerate"
    assert "same non-zero" in result.note


def test_bootstrap_ci_is_scipy_bootstrap_of_differences_with_fixed_seed() -> None:
    result = ps.compare_metric(LIKERT_A, LIKERT_B, "PC", "likert", seed=123, n_resamples=2000)
    differences = LIKERT_B.to_numpy() - LIKERT_A.to_numpy()
    expected = stats.bootstrap(
        (differences,), np.mean, n_resamples=2000, batch=500, method="BCa",
        confidence_level=0.95, rng=np.random.default_rng(123),
    ).confidence_interval
    assert result.ci_method == "BCa"
    assert result.ci95 == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert result.ci95[0] <= result.diff <= result.ci95[1]
    assert (result.n_resamples, result.seed) == (2000, 123)
    again = ps.compare_metric(LIKERT_A, LIKERT_B, "PC", "likert", seed=123, n_resamples=2000)
    assert again == result  # same seed, same interval


def test_verdict_sign_test_excludes_ties_and_matches_hand_binomial() -> None:
    # b better on 8 items, worse on 2, 3 ties. Two-sided sign test:
    # p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    a = pd.Series(["loss"] * 8 + ["win"] * 2 + ["tie", "win", "loss"])
    b = pd.Series(["win"] * 6 + ["tie"] * 2 + ["loss"] * 2 + ["tie", "win", "loss"])
    result = ps.compare_metric(a, b, "win rate", "verdict", n_resamples=999)
    assert result.p_value == pytest.approx(112 / 1024, rel=1e-12)
    assert result.statistic == pytest.approx(8 / 10)
    assert "ties excluded" in result.test
    assert result.note == "b better on 8, worse on 2, 3 ties excluded"
    # Means are tie-adjusted win rates (win 1, tie 0.5, loss 0): a has 3 wins and 1 tie of 13,
    # b has 7 wins and 3 ties.
    assert result.mean_a == pytest.approx((3 + 0.5) / 13)
    assert result.mean_b == pytest.approx((7 + 1.5) / 13)


def test_verdict_accepts_numbers_and_all_ties_give_p_one() -> None:
    a = pd.Series([1, 0.5, 0])
    result = ps.compare_metric(a, a.copy(), "win rate", "verdict")
    assert result.p_value == 1.0 and result.ci95 == (0.0, 0.0)
    with pytest.raises(UsageError, match="expected 'win', 'tie', 'loss'"):
        ps.compare_metric(pd.Series(["win", "draw"]), pd.Series(["win", "tie"]), "w", "verdict")


def test_head_to_head_verdicts() -> None:
    verdicts = pd.Series(["win"] * 9 + ["loss"] + ["tie"] * 5)
    result = ps.compare_head_to_head(verdicts, "h2h", n_resamples=999)
    assert result.p_value == pytest.approx(float(stats.binomtest(9, 10).pvalue))
    assert result.mean_a == 0.5
    assert result.mean_b == pytest.approx((9 + 2.5) / 15)


def test_holm_adjustment_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone: 0.03, 0.06, 0.06.
    adjusted = mc.holm_adjust([0.01, 0.04, 0.03])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert mc.holm_adjust([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1


def test_bh_adjustment_is_scipy_and_by_hand() -> None:
    # BH: p_(i) * m / i = 0.03, 0.045, 0.04 -> step-up minimum: 0.03, 0.04, 0.04.
    adjusted = mc.adjust_p_values([0.01, 0.04, 0.03], "bh")
    assert adjusted.tolist() == pytest.approx([0.03, 0.04, 0.04])
    with pytest.raises(UsageError, match="Known corrections: bh, holm"):
        mc.adjust_p_values([0.1], "bonferroni")


def _three_metric_runs() -> tuple[dict[str, pd.Series], dict[str, pd.Series], dict[str, str]]:
    rng = np.random.default_rng(3)
    items = [f"item-{i}" for i in range(60)]
    rouge_a = pd.Series(rng.uniform(0.2, 0.5, 60), index=items)
    rouge_b = rouge_a + rng.normal(0.01, 0.04, 60)
    verdict_a = pd.Series(rng.choice(["win", "tie", "loss"], 60), index=items)
    verdict_b = pd.Series(rng.choice(["win", "tie", "loss"], 60), index=items)
    a = {"PC": LIKERT_A, "SPE": rouge_a, "win rate": verdict_a}
    b = {"PC": LIKERT_B, "SPE": rouge_b, "win rate": verdict_b}
    kinds = {"PC": "likert", "SPE": "continuous", "win rate": "verdict"}
    return a, b, kinds


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_compare_corrects_across_metrics(correction: str) -> None:
    a, b, kinds = _three_metric_runs()
    comparison = ps.compare(a, b, kinds, label_a="base", label_b="cand", correction=correction, n_resamples=999)
    assert comparison.metric_names == ("PC", "SPE", "win rate")
    raw = [m.p_value for m in comparison.metrics]
    expected = mc.holm_adjust(raw) if correction == "holm" else stats.false_discovery_control(raw, method="bh")
    assert [m.p_adjusted for m in comparison.metrics] == pytest.approx(list(expected))
    for m in comparison.metrics:
        assert m.significant == (m.p_adjusted <= comparison.alpha)
        assert m.p_adjusted >= m.p_value
    assert comparison.metric("SPE").kind == "continuous"
    with pytest.raises(UsageError, match="Known metrics"):
        comparison.metric("SPEC")


def test_compare_accepts_dataframes_and_reports_missing_metrics() -> None:
    frame_a = pd.DataFrame({"EA": LIKERT_A, "PC": LIKERT_A})
    frame_b = pd.DataFrame({"EA": LIKERT_B, "PC": LIKERT_B})
    comparison = ps.compare(frame_a, frame_b, {"EA": "likert", "PC": "likert"}, n_resamples=999)
    assert comparison.metric("EA").p_value == comparison.metric("PC").p_value
    with pytest.raises(UsageError, match=r"run b has no values for metric\(s\) \['LH'\]"):
        ps.compare(frame_a.assign(LH=1.0), frame_b, {"EA": "likert", "LH": "likert"})


def test_input_errors_are_clear() -> None:
    with pytest.raises(UsageError, match="Known metric kinds: continuous, likert, verdict"):
        ps.compare_metric(LIKERT_A, LIKERT_B, "PC", "ordinal")
    with pytest.raises(UsageError, match="share no unit id"):
        ps.compare_metric(pd.Series([1.0], index=["x"]), pd.Series([1.0], index=["y"]), "PC", "likert")
    with pytest.raises(UsageError, match="duplicated unit ids"):
        ps.compare_metric(pd.Series([1.0, 2.0], index=["x", "x"]), LIKERT_B, "PC", "likert")
    with pytest.raises(UsageError, match="must hold numbers"):
        ps.compare_metric(pd.Series(["4"]), pd.Series(["5"]), "PC", "likert")


# --------------------------------------------------------------------------------------------------
# Regression gate


def _metric(name: str, mean_a: float, mean_b: float, p_adjusted: float) -> ps.MetricComparison:
    return ps.MetricComparison(
        metric=name, kind="likert", n_paired=200, n_only_a=0, n_only_b=0, mean_a=mean_a, mean_b=mean_b,
        diff=mean_b - mean_a, ci95=(mean_b - mean_a - 0.1, mean_b - mean_a + 0.1), ci_method="BCa",
        n_resamples=999, seed=0, test="wilcoxon(zero_method=pratt, method=auto)", statistic=1.0,
        p_value=p_adjusted, p_adjusted=p_adjusted, significant=p_adjusted <= 0.05,
    )


GATE_COMPARISON = ps.Comparison(
    label_a="main",
    label_b="branch",
    alpha=0.05,
    correction="holm",
    metrics=(
        _metric("PersonaScore", 4.60, 4.50, 0.001),  # drop 0.10, significant
        _metric("PC", 4.60, 4.50, 0.30),  # drop 0.10, not significant
        _metric("EA", 4.60, 4.57, 0.001),  # drop 0.03, significant
        _metric("LH", 4.00, 4.30, 0.001),  # significant improvement
    ),
)


def test_gate_fails_only_on_significant_drop_beyond_delta() -> None:
    gate = gates.regression_gate(GATE_COMPARISON, {"PersonaScore": 0.05, "PC": 0.05, "EA": 0.05, "LH": 0.0})
    decisions = {d.metric: d for d in gate.decisions}
    assert decisions["PersonaScore"].passed is False
    assert decisions["PersonaScore"].drop == pytest.approx(0.10)
    assert "significant" in decisions["PersonaScore"].reason
    assert decisions["PC"].passed is True and "not significant" in decisions["PC"].reason
    assert decisions["EA"].passed is True and "within" in decisions["EA"].reason
    assert decisions["LH"].passed is True
    assert gate.passed is False
    assert gates.regression_gate(GATE_COMPARISON, {"PC": 0.05, "EA": 0.05}).passed is True
    assert gates.regression_gate(GATE_COMPARISON, {"PersonaScore": 0.2}).passed is True
    assert json.loads(json.dumps(render.gate_to_dict(gate)))["passed"] is False


def test_gate_rejects_unknown_metrics_listing_known_ones_and_bad_deltas() -> None:
    with pytest.raises(UsageError, match="unknown metric.*'Persona'.*PersonaScore, PC, EA, LH"):
        gates.regression_gate(GATE_COMPARISON, {"Persona": 0.05})
    # Short codes and paper names are aliases (rolebench_eval.naming), in any case.
    gate = gates.regression_gate(GATE_COMPARISON, {"pscore": 0.05, "Expected Action": 0.05})
    assert [d.metric for d in gate.decisions] == ["PersonaScore", "EA"]
    with pytest.raises(UsageError, match=">= 0"):
        gates.regression_gate(GATE_COMPARISON, {"PC": -0.1})


def test_gate_on_a_real_comparison() -> None:
    rng = np.random.default_rng(11)
    personas = [f"p{i}" for i in range(200)]
    base = pd.Series(rng.integers(3, 6, 200).astype(float), index=personas)
    worse = (base - rng.choice([0.0, 1.0], 200, p=[0.6, 0.4])).clip(1, 5)
    comparison = ps.compare({"PersonaScore": base}, {"PersonaScore": worse}, {"PersonaScore": "likert"}, n_resamples=999)
    assert comparison.metric("PersonaScore").significant
    assert gates.regression_gate(comparison, {"PersonaScore": 0.05}).passed is False
    assert gates.regression_gate(comparison, {"PersonaScore": 1.0}).passed is True


# --------------------------------------------------------------------------------------------------
# Rendering


def test_renderings() -> None:
    a, b, kinds = _three_metric_runs()
    comparison = ps.compare(a, b, kinds, label_a="base", label_b="cand", n_resamples=999)
    markdown = render.comparison_to_markdown(comparison)
    lines = markdown.splitlines()
    assert lines[0].startswith("| metric | kind | n | a: base | b: cand | diff | 95% CI | test | p | p_adj (holm) | sig |")
    assert lines[2].startswith(f"| PC | likert | 20 | {LIKERT_A.mean():.4f} | {LIKERT_B.mean():.4f} |")
    assert "| win rate | verdict | 60 |" in markdown
    assert "holm correction" in markdown

    text = render.comparison_to_text(comparison)
    assert "ttest_rel" in text and "sign test" in text and "|" not in text.splitlines()[0]

    as_dict = json.loads(json.dumps(render.comparison_to_dict(comparison), allow_nan=False))
    assert as_dict["schema_version"] == ps.SCHEMA_VERSION
    assert as_dict["metrics"][0]["test"] == "wilcoxon(zero_method=pratt, method=auto)"
    assert as_dict["metrics"][1]["ci95"] == list(comparison.metric("SPE").ci95)


def test_dict_is_strict_json_with_infinite_statistic() -> None:
    a = pd.Series([0.1, 0.2, 0.3])
    comparison = ps.compare({"CUS": a}, {"CUS": a + 0.1}, {"CUS": "continuous"}, n_resamples=99)
    text = json.dumps(render.comparison_to_dict(comparison), allow_nan=False)
    assert '"statistic": "inf"' in text


def test_bootstrap_falls_back_to_percentile_when_bca_is_undefined(monkeypatch: pytest.MonkeyPatch) -> None:
    # BCa can return NaN on near-degenerate data; force that case to exercise the recorded fallback.
    real_bootstrap = stats.bootstrap

    def bca_undefined(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_bootstrap(*args, **kwargs)
        if kwargs.get("method") == "BCa":
            result.confidence_interval = stats._resampling.ConfidenceInterval(np.nan, np.nan)
        return result

    monkeypatch.setattr(ps.stats, "bootstrap", bca_undefined)
    differences = LIKERT_B.to_numpy() - LIKERT_A.to_numpy()
    ci, method = ps._bootstrap_ci(differences, seed=5, n_resamples=999)
    expected = real_bootstrap(
        (differences,), np.mean, n_resamples=999, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    assert method == "percentile (BCa undefined)"
    assert ci == (pytest.approx(expected.low), pytest.approx(expected.high))
