"""statistics.summarize: the batched bootstrap gives scipy's unbatched interval with bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import stats

from rolebench_eval.analysis import statistics


def _unbatched_ci(values: np.ndarray) -> list[float]:
    # scipy called directly, in one vectorised call over all resamples (the old computation).
    result = stats.bootstrap((values,), np.mean, n_resamples=statistics.BOOTSTRAP_RESAMPLES,
                             confidence_level=statistics.CONFIDENCE, method="percentile",
                             rng=np.random.default_rng(statistics.BOOTSTRAP_SEED))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


@pytest.mark.parametrize("n", [2, 7, 150, 400])
def test_ci_is_identical_to_the_unbatched_bootstrap(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.round(np.random.default_rng(n).uniform(1, 5, size=n) * 4) / 4
    # A small budget forces several batches (and a last, partial one) even at small n.
    monkeypatch.setattr(statistics, "BOOTSTRAP_BATCH_ELEMENTS", 3 * n + 1)
    assert statistics.bootstrap_batch(n) == 3
    summary = statistics.summarize(values.tolist(), n_unscored=1)
    assert summary["ci95"] == _unbatched_ci(values)  # exactly equal, not approximately
    assert summary["mean"] == pytest.approx(values.mean()) and summary["std"] == pytest.approx(values.std())
    assert (summary["n"], summary["n_unscored"]) == (n, 1)


def test_batch_size_bounds() -> None:
    assert statistics.bootstrap_batch(1) == statistics.BOOTSTRAP_RESAMPLES  # never more than the resamples
    assert statistics.bootstrap_batch(10 * statistics.BOOTSTRAP_BATCH_ELEMENTS) == 1  # at least one
    assert statistics.bootstrap_batch(5000) * 5000 <= statistics.BOOTSTRAP_BATCH_ELEMENTS


def test_memory_stays_bounded_at_rolebench_size() -> None:
    # n = 5,000 (RoleBench English SPE has 4,750 items): unbatched, scipy holds 10,000 x 5,000
    # indices and values (~850 MB). Batched, a few batches of ~1M values (8 MB each).
    values = np.random.default_rng(0).uniform(0, 1, size=5000).tolist()
    tracemalloc.start()
    try:
        summary = statistics.summarize(values, n_unscored=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["ci95"][0] < summary["mean"] < summary["ci95"][1]
    assert peak < 100 * 2**20, f"bootstrap peak {peak / 2**20:.0f} MiB"
