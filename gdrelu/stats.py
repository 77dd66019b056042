"""Monte Carlo estimates of failure probabilities, with exact intervals."""

from __future__ import annotations

import numpy as np
from scipy import stats as _scipy_stats


def clopper_pearson(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion.

    lower = Beta quantile (1-level)/2 with (k, n-k+1), upper = quantile (1+level)/2 with
    (k+1, n-k); lower = 0 at k = 0 and upper = 1 at k = n. Works elementwise.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k > 0, _scipy_stats.beta.ppf(tail, k, n - k + 1), 0.0)
        upper = np.where(k < n, _scipy_stats.beta.ppf(1.0 - tail, k + 1, n - k), 1.0)
    return lower, upper


def failure_probability(stuck, runs, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """P(stuck) = stuck / runs with its Clopper-Pearson interval."""
    lower, upper = clopper_pearson(stuck, runs, level)
    return float(stuck) / float(runs), (float(lower), float(upper))
