"""Regression gates over a paired comparison: the rules behind `rbe regress` / `--fail-if-worse`.

Owns the gate's decision of each `{metric: max_drop}` rule against a `paired_stats.Comparison`
and its result types; the statistics live in `paired_stats`, the rendering in `comparison_render`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from rolebench_eval.analysis.paired_stats import Comparison
from rolebench_eval.errors import UsageError


@dataclass(frozen=True)
class GateDecision:
    """One rule of a regression gate: may `metric` drop by up to `max_drop` (metric units)?"""

    metric: str
    max_drop: float
    drop: float  # mean_a - mean_b: positive when the candidate is lower (higher is better)
    significant: bool
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    """All rules of a regression gate; it passes only when every rule passes."""

    label_a: str
    label_b: str
    decisions: tuple[GateDecision, ...]

    @property
    def passed(self) -> bool:
        return all(decision.passed for decision in self.decisions)


def regression_gate(comparison: Comparison, rules: Mapping[str, float]) -> GateResult:
    """Decide each rule `{metric: max_drop}` (metric units, higher is better) against a comparison.

    A rule fails only when the candidate's drop exceeds `max_drop` AND the difference is significant
    after correction: a large but noisy drop does not block, a small significant one does not either.
    """
    from rolebench_eval import naming

    # A rule may name a metric by its key, task/key or an alias (PScore-L for PersonaScore):
    # resolved against the comparison's metrics, unknown or ambiguous names refused.
    entries = naming.entries_from_names(comparison.metric_names)
    rules = {naming.resolve_metric(name, entries): max_drop for name, max_drop in rules.items()}
    decisions = []
    for name, max_drop in rules.items():
        if not isinstance(max_drop, numbers.Real) or isinstance(max_drop, bool) or not math.isfinite(max_drop) or max_drop < 0:
            raise UsageError(f"regression rule {name!r}: the allowed drop must be a number >= 0, got {max_drop!r}.")
        item = comparison.metric(name)
        drop = item.mean_a - item.mean_b
        beyond = drop > max_drop
        if beyond and item.significant:
            passed, reason = False, (
                f"dropped {drop:.4g} > allowed {max_drop:g}, significant "
                f"(p_adj={item.p_adjusted:.3g} <= {comparison.alpha:g})"
            )
        elif beyond:
            passed, reason = True, (
                f"dropped {drop:.4g} > allowed {max_drop:g} but not significant "
                f"(p_adj={item.p_adjusted:.3g} > {comparison.alpha:g})"
            )
        else:
            passed, reason = True, f"change {-drop:+.4g} within allowed drop {max_drop:g}"
        decisions.append(
            GateDecision(metric=name, max_drop=float(max_drop), drop=drop, significant=item.significant, passed=passed, reason=reason)
        )
    return GateResult(label_a=comparison.label_a, label_b=comparison.label_b, decisions=tuple(decisions))
