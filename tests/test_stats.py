"""Clopper-Pearson intervals against closed forms and tabulated values."""

import numpy as np
import pytest

from gdrelu import clopper_pearson, failure_probability
from gdrelu.stats import paired_comparison


@pytest.mark.parametrize("n", [1, 10, 1000])
def test_closed_forms_at_the_edges(n):
    """k = 0: upper = 1 - (α/2)^(1/n); k = n: lower = (α/2)^(1/n)."""
    lo, hi = clopper_pearson(0, n)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-10)
    lo, hi = clopper_pearson(n, n)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / n), rel=1e-10)


def test_tabulated_value():
    """k = 5, n = 10: (0.1871, 0.8129), the textbook exact interval."""
    lo, hi = clopper_pearson(5, 10)
    assert (round(float(lo), 4), round(float(hi), 4)) == (0.1871, 0.8129)


def test_interval_tail_probabilities_are_exact():
    """At the bounds, the binomial tails equal α/2 (the interval's definition)."""
    from scipy.stats import binom

    k, n = 37, 120
    lo, hi = clopper_pearson(k, n)
    assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-8)
    assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-8)


def test_failure_probability():
    p, (lo, hi) = failure_probability(262, 400)
    assert p == pytest.approx(0.655) and lo < p < hi
    np.testing.assert_allclose(clopper_pearson([0, 3], [5, 5])[1][0], 1 - 0.025**0.2)


def _paired(b, c, same_stuck=10, same_free=20):
    """Paired outcomes with b runs (a stuck, b not) and c runs (b stuck, a not)."""
    a = [True] * b + [False] * c + [True] * same_stuck + [False] * same_free
    other = [False] * b + [True] * c + [True] * same_stuck + [False] * same_free
    return np.array(a), np.array(other)


def test_mcnemar_exact_p_value_by_hand():
    """b = 7, c = 1: two-sided exact p = 2 (C(8,0) + C(8,1)) / 2^8 = 18/256."""
    result = paired_comparison(*_paired(7, 1))
    assert result["p_value"] == pytest.approx(18 / 256, rel=1e-12)
    assert result["difference"] == pytest.approx(6 / 38)
    assert result["discordant"] == [7, 1]


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (9, 1), (10, 2), (25, 10), (40, 38)])
def test_mcnemar_interval_excludes_zero_exactly_when_the_test_rejects(b, c):
    from math import comb

    n = b + c
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n if n else 0.5
    p_direct = min(1.0, 2 * tail)
    result = paired_comparison(*_paired(b, c))
    assert result["p_value"] == pytest.approx(p_direct, rel=1e-10)
    low, high = result["ci95"]
    assert low <= result["difference"] <= high
    assert (low > 0 or high < 0) == (p_direct < 0.05)


def test_two_proportion_z_by_hand():
    """138/400 against 150/400: pooled p = 0.36, se = sqrt(0.36 · 0.64 · 2/400) =
    0.0339411, z = -0.03 / se = -0.883883 (worked out by hand)."""
    from gdrelu.stats import two_proportion_z

    assert two_proportion_z(138, 400, 150, 400) == pytest.approx(-0.883883, abs=1e-6)
    assert two_proportion_z(150, 400, 138, 400) == pytest.approx(0.883883, abs=1e-6)
    assert two_proportion_z(0, 10, 0, 30) == 0.0
