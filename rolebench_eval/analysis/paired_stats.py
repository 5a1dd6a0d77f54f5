"""Paired comparison of two runs, metric by metric: the statistics behind `rbe compare` / `rbe regress`.

Inputs are plain pandas Series of per-unit values (index = unit id: persona, item...), one pair of
Series per metric, so this module knows nothing about run directories. Runs are compared *paired*
(the same personas or items answered by both models) because an unpaired test throws away the
unit-to-unit variance that both runs share and is needlessly blind to real differences (the
complaint about lm-evaluation-harness's unpaired z-test in docs/design.md).

Conventions:
- `a` is the baseline, `b` the candidate; `diff` is always `mean_b - mean_a` (positive = b higher).
- NaN means "unscored" and is dropped before pairing, so it counts as missing on that side.
- Every choice that can change a number (test, zero handling, bootstrap method, resamples, seed,
  correction) is recorded in the result, so a reported p-value can be reproduced.

The p-value corrections live in `multiple_comparisons`, the regression gate in `regression_gates`,
JSON / markdown / text output in `comparison_render`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rolebench_eval.analysis.multiple_comparisons import CORRECTIONS, adjust_p_values
from rolebench_eval.errors import UsageError, unknown

SCHEMA_VERSION = 1

METRIC_KINDS: tuple[str, ...] = ("likert", "continuous", "verdict")

CONFIDENCE_LEVEL = 0.95
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 9999
# The bootstrap materialises batch x n values at a time; 500 keeps a 10,000-item run near 40 MB
# instead of the ~800 MB that scipy's unbatched default would allocate.
_BOOTSTRAP_BATCH = 500

# Wilcoxon zero handling: "pratt". On a 1-5 judge scale the most common paired difference is 0 (the
# unit got the same score from both runs). "wilcox" (scipy's default) discards those units and ranks
# the rest as if they never existed; "pratt" ranks them too, as the smallest absolute differences,
# then leaves their ranks out of the sum, so every unit keeps its place in the magnitude ordering
# and the normal approximation's mean and variance account for how many units did not move. Pratt
# (1959) introduced it because discarding zeros can make the result move the wrong way when one
# unit's difference grows from 0 to a small positive value. It is not uniformly more or less
# conservative than "wilcox"; it is the treatment that uses all units.
WILCOXON_ZERO_METHOD = "pratt"
# "auto" is scipy's rule (1.17): exact distribution without ties or zeros (n <= 50), an exhaustive
# (hence deterministic) permutation test for n <= 13 with ties or zeros, normal approximation
# otherwise. Recorded as such in `test`, so the p-value can be reproduced.
WILCOXON_METHOD = "auto"

# Verdict encoding: the mean is then the tie-adjusted win rate (wins + ties/2) / n, the figure the
# RoleBench protocol asks to report next to the plain win rate.
VERDICT_SCORES: Mapping[str, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a paired comparison of run `a` (baseline) and run `b` (candidate)."""

    metric: str
    kind: str
    n_paired: int
    n_only_a: int
    n_only_b: int
    mean_a: float
    mean_b: float
    diff: float  # mean_b - mean_a, over the paired units only
    ci95: tuple[float, float]  # bootstrap CI of the mean paired difference
    ci_method: str  # the scipy.stats.bootstrap method actually used ("BCa", or "degenerate")
    n_resamples: int
    seed: int
    test: str  # the test and its options, e.g. "wilcoxon(zero_method=pratt, method=auto)"
    statistic: float
    p_value: float
    p_adjusted: float  # after the comparison's multiple-comparison correction
    significant: bool  # p_adjusted <= alpha of the comparison
    note: str = ""  # why a degenerate case got the value it got; counts for verdicts


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two runs over several metrics, corrected for multiple comparisons."""

    label_a: str
    label_b: str
    alpha: float
    correction: str
    metrics: tuple[MetricComparison, ...]
    schema_version: int = SCHEMA_VERSION

    def metric(self, name: str) -> MetricComparison:
        """The comparison of one metric by name; a clear error lists the known ones."""
        from rolebench_eval import naming

        for item in self.metrics:
            if item.metric == name:
                return item
        resolved = naming.resolve_metric(name, naming.entries_from_names(self.metric_names))  # an alias, any case
        return next(item for item in self.metrics if item.metric == resolved)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(item.metric for item in self.metrics)


# --------------------------------------------------------------------------------------------------
# Pairing and per-kind tests


def _validated_series(values: pd.Series, side: str, metric: str) -> pd.Series:
    if not isinstance(values, pd.Series):
        raise UsageError(f"metric {metric!r}: run {side} must be a pandas Series, got {type(values).__name__}.")
    if values.index.has_duplicates:
        duplicated = list(values.index[values.index.duplicated()].unique()[:5])
        raise UsageError(
            f"metric {metric!r}: run {side} has duplicated unit ids {duplicated}; "
            "aggregate to one value per unit before comparing."
        )
    return values.dropna()


def _encode_verdicts(values: pd.Series, side: str, metric: str) -> pd.Series:
    """win/tie/loss (any case) or the numbers 1/0.5/0 -> 1/0.5/0."""

    def encode(value: Any) -> float:
        if isinstance(value, str) and value.strip().lower() in VERDICT_SCORES:
            return VERDICT_SCORES[value.strip().lower()]
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and float(value) in (0.0, 0.5, 1.0):
            return float(value)
        raise UsageError(
            f"metric {metric!r} (verdict): run {side} has the value {value!r}; "
            "expected 'win', 'tie', 'loss' or 1 / 0.5 / 0."
        )

    return values.map(encode).astype(float)


def _numeric(values: pd.Series, side: str, metric: str, kind: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise UsageError(f"metric {metric!r} ({kind}): run {side} must hold numbers, got dtype {values.dtype}.")
    return values.astype(float)


# ROUGE differences such as (x + 0.25) - x are not bit-identical across items; spreads below this
# are rounding noise, not variance, and must not turn a constant difference into a spurious test.
_FLOAT_NOISE = 1e-12


def _is_constant(values: np.ndarray) -> bool:
    return float(np.ptp(values)) <= _FLOAT_NOISE * max(1.0, float(np.max(np.abs(values))))


def _bootstrap_ci(differences: np.ndarray, seed: int, n_resamples: int) -> tuple[tuple[float, float], str]:
    """Bootstrap CI of the mean paired difference.

    Resampling the per-unit differences is the paired bootstrap (each resample keeps a unit's a and b
    together). BCa corrects the bias and skew of bounded scores; when every difference is the same,
    every resample has the same mean, BCa is undefined (scipy returns NaN with a warning), and the
    honest interval is the point itself, so that is what we return, labelled "degenerate".
    """
    if _is_constant(differences):
        point = float(differences.mean())
        return (point, point), "degenerate"
    with warnings.catch_warnings():
        # A near-degenerate sample (e.g. one non-zero difference) can still defeat BCa; we detect
        # that below from the NaN and fall back, so the warning itself is noise here.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (differences,),
            np.mean,
            n_resamples=n_resamples,
            batch=_BOOTSTRAP_BATCH,
            confidence_level=CONFIDENCE_LEVEL,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
        interval = result.confidence_interval
        if not (math.isnan(interval.low) or math.isnan(interval.high)):
            return (float(interval.low), float(interval.high)), "BCa"
        # Reuse the same resamples: the percentile interval needs no jackknife and is always defined.
        result = stats.bootstrap(
            (differences,),
            np.mean,
            n_resamples=0,
            confidence_level=CONFIDENCE_LEVEL,
            method="percentile",
            bootstrap_result=result,
            rng=np.random.default_rng(seed),
        )
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high)), "percentile (BCa undefined)"


def _wilcoxon(differences: np.ndarray) -> tuple[str, float, float, str]:
    name = f"wilcoxon(zero_method={WILCOXON_ZERO_METHOD}, method={WILCOXON_METHOD})"
    if not np.any(differences):
        # No unit changed: there is no evidence of a difference. scipy would reach p=1 through a
        # 0/0 with RuntimeWarnings; say it outright instead.
        return name, 0.0, 1.0, "all paired differences are zero: p = 1.0 by definition"
    result = stats.wilcoxon(differences, zero_method=WILCOXON_ZERO_METHOD, method=WILCOXON_METHOD)
    return name, float(result.statistic), float(result.pvalue), ""


def _paired_t(differences: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[str, float, float, str]:
    # A paired t-test rather than a bootstrap p-value: ROUGE is averaged over thousands of items, so
    # the mean difference is close to normal, and the t-test is exact-to-reproduce and instant. The
    # bootstrap CI reported beside it does not rely on normality.
    name = "ttest_rel"
    if differences.size < 2:
        return name, 0.0, 1.0, "fewer than 2 paired units: no test, p = 1.0"
    if _is_constant(differences) and abs(differences.mean()) <= _FLOAT_NOISE:
        return name, 0.0, 1.0, "all paired differences are zero: p = 1.0 by definition"
    if _is_constant(differences):
        # Zero variance, non-zero mean: the t statistic is infinite and p is its limit, 0 (scipy
        # agrees); stated here so a reader of the JSON knows it is not a bug.
        return name, math.copysign(math.inf, differences.mean()), 0.0, (
            "every paired difference is the same non-zero value: t = inf, p = 0.0"
        )
    result = stats.ttest_rel(b, a)
    return name, float(result.statistic), float(result.pvalue), ""


def _sign_test(differences: np.ndarray) -> tuple[str, float, float, str]:
    # The sign test ignores ties (items where both runs got the same verdict): they carry no
    # information on which run is better. The statistic is b's share of the untied items.
    better = int(np.sum(differences > 0))
    worse = int(np.sum(differences < 0))
    ties = int(differences.size - better - worse)
    name = "sign test: binomtest(b better, b better + b worse, p=0.5), ties excluded"
    counts = f"b better on {better}, worse on {worse}, {ties} ties excluded"
    if better + worse == 0:
        return name, 0.5, 1.0, f"{counts}; no untied item: p = 1.0 by definition"
    result = stats.binomtest(better, better + worse, p=0.5)
    return name, float(result.statistic), float(result.pvalue), counts


def compare_metric(
    a: pd.Series,
    b: pd.Series,
    metric: str,
    kind: str,
    *,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> MetricComparison:
    """Compare one metric of run `a` (baseline) and run `b` (candidate), paired on the unit ids.

    `p_adjusted` equals `p_value` here (one test, nothing to correct); `compare` corrects across
    metrics. Raises UsageError for an unknown kind, bad values, or no common unit.
    """
    if kind not in METRIC_KINDS:
        raise unknown("metric kind", kind, METRIC_KINDS)
    _check_alpha(alpha)
    if n_resamples < 1:
        raise UsageError(f"n_resamples must be at least 1, got {n_resamples}.")
    a = _validated_series(a, "a", metric)
    b = _validated_series(b, "b", metric)
    if kind == "verdict":
        a, b = _encode_verdicts(a, "a", metric), _encode_verdicts(b, "b", metric)
    else:
        a, b = _numeric(a, "a", metric, kind), _numeric(b, "b", metric, kind)

    common = a.index.intersection(b.index, sort=False)
    n_only_a = int(a.index.difference(b.index).size)
    n_only_b = int(b.index.difference(a.index).size)
    if common.empty:
        raise UsageError(
            f"metric {metric!r}: runs a and b share no unit id ({a.size} in a, {b.size} in b); "
            "nothing to compare."
        )
    values_a = a.loc[common].to_numpy()
    values_b = b.loc[common].to_numpy()
    differences = values_b - values_a

    if kind == "likert":
        test, statistic, p_value, note = _wilcoxon(differences)
    elif kind == "continuous":
        test, statistic, p_value, note = _paired_t(differences, values_a, values_b)
    else:
        test, statistic, p_value, note = _sign_test(differences)
    ci95, ci_method = _bootstrap_ci(differences, seed, n_resamples)

    return MetricComparison(
        metric=metric,
        kind=kind,
        n_paired=int(common.size),
        n_only_a=n_only_a,
        n_only_b=n_only_b,
        mean_a=float(values_a.mean()),
        mean_b=float(values_b.mean()),
        diff=float(differences.mean()),
        ci95=ci95,
        ci_method=ci_method,
        n_resamples=n_resamples,
        seed=seed,
        test=test,
        statistic=statistic,
        p_value=p_value,
        p_adjusted=p_value,
        significant=p_value <= alpha,
        note=note,
    )


def compare_head_to_head(
    verdicts: pd.Series,
    metric: str,
    *,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> MetricComparison:
    """Sign test for direct verdicts of b against a (win = b preferred), one per item.

    A direct verdict is the paired difference against a run that ties everywhere, so it reuses the
    verdict path: a is a constant 'tie' (mean_a = 0.5), mean_b is b's tie-adjusted win rate.
    """
    ties = pd.Series("tie", index=verdicts.index)
    return compare_metric(ties, verdicts, metric, "verdict", alpha=alpha, seed=seed, n_resamples=n_resamples)


# --------------------------------------------------------------------------------------------------
# Multiple comparisons (the corrections themselves: multiple_comparisons)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"alpha must be between 0 and 1 (exclusive), got {alpha}.")


def compare(
    a: Mapping[str, pd.Series] | pd.DataFrame,
    b: Mapping[str, pd.Series] | pd.DataFrame,
    kinds: Mapping[str, str],
    *,
    label_a: str = "a",
    label_b: str = "b",
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> Comparison:
    """Compare runs `a` (baseline) and `b` (candidate) on every metric named in `kinds`, in its order.

    `a` and `b` map metric name -> per-unit Series (a DataFrame with one column per metric works
    too, when all metrics share one unit). p-values are corrected across these metrics with
    `correction`; `significant` means p_adjusted <= alpha.
    """
    if correction not in CORRECTIONS:
        raise unknown("correction", correction, CORRECTIONS)
    _check_alpha(alpha)
    if not kinds:
        raise UsageError("no metric to compare: `kinds` is empty.")
    for side, runs in (("a", a), ("b", b)):
        missing = [name for name in kinds if name not in runs]
        if missing:
            available = ", ".join(map(str, runs.keys())) or "none"
            raise UsageError(f"run {side} has no values for metric(s) {missing}; it has: {available}.")

    raw = [
        compare_metric(a[name], b[name], name, kind, alpha=alpha, seed=seed, n_resamples=n_resamples)
        for name, kind in kinds.items()
    ]
    adjusted = adjust_p_values([item.p_value for item in raw], correction)
    metrics = tuple(
        dataclasses.replace(item, p_adjusted=float(p), significant=bool(p <= alpha))
        for item, p in zip(raw, adjusted)
    )
    return Comparison(label_a=label_a, label_b=label_b, alpha=alpha, correction=correction, metrics=metrics)
