"""Monte Carlo estimates of failure probabilities, with exact intervals."""

from __future__ import annotations

import numpy as np
from scipy import special


def clopper_pearson(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion.

    lower = Beta quantile (1-level)/2 with (k, n-k+1), upper = quantile (1+level)/2 with
    (k+1, n-k); lower = 0 at k = 0 and upper = 1 at k = n. Works elementwise. (The
    quantiles are `scipy.special.betaincinv`, what `scipy.stats.beta.ppf` computes,
    without importing the much larger scipy.stats.)
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k > 0, special.betaincinv(k, n - k + 1, tail), 0.0)
        upper = np.where(k < n, special.betaincinv(k + 1, n - k, 1.0 - tail), 1.0)
    return lower, upper


def failure_probability(stuck, runs, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """P(stuck) = stuck / runs with its Clopper-Pearson interval."""
    lower, upper = clopper_pearson(stuck, runs, level)
    return float(stuck) / float(runs), (float(lower), float(upper))


def paired_comparison(stuck_a, stuck_b, level: float = 0.95) -> dict:
    """P_a(stuck) - P_b(stuck) on paired runs (common random numbers), exact McNemar test.

    With discordant counts b = #(a stuck, b not) and c = #(b stuck, a not), the two-sided
    exact McNemar p-value is the binomial test of b out of b + c against 1/2. The interval
    is conditional on b + c: the difference is (b - c)/N = ((b + c)/N)(2θ - 1) with θ the
    probability that a discordant pair is (a stuck, b not), and θ gets its Clopper-Pearson
    interval, so the interval excludes 0 exactly when the test rejects at 1 - level.
    """
    a = np.asarray(stuck_a, bool)
    b_runs = np.asarray(stuck_b, bool)
    if a.shape != b_runs.shape:
        raise ValueError("paired outcomes need equal shapes")
    total = a.size
    b = int(np.sum(a & ~b_runs))
    c = int(np.sum(~a & b_runs))
    discordant = b + c
    if discordant == 0:
        p_value, ci = 1.0, (0.0, 0.0)
    else:
        from scipy.stats import binomtest  # here: only compare's pairs need scipy.stats

        p_value = float(binomtest(b, discordant, 0.5).pvalue)
        low, high = clopper_pearson(b, discordant, level)
        scale = discordant / total
        ci = (float(scale * (2 * low - 1)), float(scale * (2 * high - 1)))
    return {
        "difference": (b - c) / total,
        "ci95" if level == 0.95 else f"ci{level:g}": list(ci),
        "p_value": p_value,
        "discordant": [b, c],
    }


def two_proportion_z(k1, n1, k2, n2) -> float:
    """z-score of p1 - p2 = k1/n1 - k2/n2 under the pooled null p1 = p2: the difference
    over its standard error sqrt(p(1-p)(1/n1 + 1/n2)) with p = (k1 + k2)/(n1 + n2).
    0 when both proportions are 0 or both 1 (no variance, no difference)."""
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    difference = k1 / n1 - k2 / n2
    return 0.0 if se == 0 else float(difference / se)
