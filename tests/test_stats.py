"""Clopper-Pearson intervals against closed forms and tabulated values."""

import numpy as np
import pytest

from gdrelu import clopper_pearson, failure_probability


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
