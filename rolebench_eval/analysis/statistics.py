"""Summary statistics over units (personas, items): mean, population std, bootstrap CI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
# Resampled values held at once: scipy's bootstrap otherwise builds an n_resamples x n matrix
# (index and values: ~850 MB at n = 4,750). Batches draw the same random stream in the same
# order, so the interval is identical to the unbatched computation for a fixed seed. 100,000
# (~1.6 MB of index and values) makes the transient the same from 10 units up (issue 13: at
# 1,000,000 a 200-persona run's peak was 8 MB above a 50-persona run's for this alone), for
# ~20 vectorised calls per interval at 200 units.
BOOTSTRAP_BATCH_ELEMENTS = 100_000


def bootstrap_batch(n: int, n_resamples: int = BOOTSTRAP_RESAMPLES) -> int:
    """Resamples per vectorised call so that one batch holds about BOOTSTRAP_BATCH_ELEMENTS values."""
    return max(1, min(n_resamples, BOOTSTRAP_BATCH_ELEMENTS // max(1, n)))


def summarize(values: Sequence[float], n_unscored: int) -> dict[str, Any]:
    """mean, population std (ddof=0, as the papers report), n, n_unscored and a 95% CI.

    The CI is a percentile bootstrap over units with a fixed seed, so the same values always give
    the same interval. With fewer than two values, or no spread, there is no interval to estimate
    and the CI is reported as [mean, mean] only when every value is equal.
    """
    data = np.asarray(values, dtype=float)
    summary: dict[str, Any] = {
        "mean": None,
        "std": None,
        "n": int(data.size),
        "n_unscored": int(n_unscored),
        "ci95": None,
    }
    if data.size == 0:
        return summary
    summary["mean"] = float(data.mean())
    summary["std"] = float(data.std(ddof=0))
    if data.size >= 2 and np.ptp(data) > 0:
        from scipy import stats  # imported here: a cached rerun never computes, and scipy is slow to import

        result = stats.bootstrap(
            (data,),
            np.mean,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            batch=bootstrap_batch(data.size),
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )
        summary["ci95"] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    elif data.size >= 2:
        summary["ci95"] = [summary["mean"], summary["mean"]]
    return summary


BOOTSTRAP_DESCRIPTION = {
    "method": "percentile bootstrap over units",
    "n_resamples": BOOTSTRAP_RESAMPLES,
    "seed": BOOTSTRAP_SEED,
    "confidence": CONFIDENCE,
    "std": "population (ddof=0)",
}
