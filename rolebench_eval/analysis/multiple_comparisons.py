"""Multiple-comparison corrections of the p-values of a paired comparison (`paired_stats.compare`).

Owns the correction names (`CORRECTIONS`) and the adjustment itself: Holm (family-wise error) and
Benjamini-Hochberg (false discovery rate).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rolebench_eval.errors import unknown

CORRECTIONS: tuple[str, ...] = ("holm", "bh")


def holm_adjust(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given).

    scipy (checked with 1.17) offers only BH/BY in `false_discovery_control` and statsmodels is not
    a dependency, so Holm is written here: sort ascending, multiply the i-th smallest (0-based) by
    m - i, make the sequence non-decreasing (a larger p can never get a smaller adjusted p), cap at 1.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    return adjusted


def adjust_p_values(p_values: np.ndarray | list[float], correction: str) -> np.ndarray:
    """Adjusted p-values by correction name: 'holm' (family-wise error) or 'bh' (false discovery rate)."""
    if correction not in CORRECTIONS:
        raise unknown("correction", correction, CORRECTIONS)
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p.copy()
    if correction == "holm":
        return holm_adjust(p)
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=float)
