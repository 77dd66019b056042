"""Clopper-Pearson intervals against closed forms and tabulated values; the paired
comparison against hand counts, a published table and its exact coverage."""

import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import special

from gdrelu import clopper_pearson, failure_probability
from gdrelu.stats import (
    adaptive_bias,
    adaptive_coverage,
    paired_comparison,
    paired_difference_interval,
    two_proportion_z,
)


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


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_interval_tail_probabilities_are_exact(level):
    """At the bounds, the binomial tails equal (1 - level)/2 (the interval's definition)."""
    from scipy.stats import binom

    k, n = 37, 120
    lo, hi = clopper_pearson(k, n, level)
    tail = (1 - level) / 2
    assert binom.sf(k - 1, n, lo) == pytest.approx(tail, rel=1e-8)
    assert binom.cdf(k, n, hi) == pytest.approx(tail, rel=1e-8)


def test_failure_probability():
    for stuck, runs in [(0, 0), (3, 2), (-1, 5)]:
        with pytest.raises(ValueError, match="failure_probability"):
            failure_probability(stuck, runs)
    p, (lo, hi) = failure_probability(262, 400)
    assert p == pytest.approx(0.655) and lo < p < hi
    np.testing.assert_allclose(clopper_pearson([0, 3], [5, 5])[1][0], 1 - 0.025**0.2)


def test_failure_probability_of_a_mask_of_runs():
    """A bool array of the runs (`SimulationResult.stuck`): k = 5 of n = 10 gives the
    textbook exact interval (0.1871, 0.8129)."""
    p, (lo, hi) = failure_probability(np.arange(10) % 2 == 0)
    assert p == 0.5 and (round(lo, 4), round(hi, 4)) == (0.1871, 0.8129)


def test_failure_probability_of_counts_in_0_d_arrays():
    """A count summed by JAX or numpy (`jnp.sum(mask)`, a 0-d integer array) was refused
    as no integer count; it is one. A 0-d float or bool array is not."""
    import jax.numpy as jnp

    mask = jnp.arange(10) % 2 == 0
    assert failure_probability(jnp.sum(mask), jnp.asarray(10)) == failure_probability(5, 10)
    assert failure_probability(np.sum(np.asarray(mask)), 10) == failure_probability(5, 10)
    for bad in (np.asarray(5.0), jnp.asarray(True)):
        with pytest.raises(ValueError, match=r"stuck: .* is not an integer count"):
            failure_probability(bad, 10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 10, 95), "level: 95"),  # a percentage: the interval was (nan, nan)
        ((3, 10, 1.5), "level: 1.5"),
        ((2.5, 10), "stuck: 2.5 is not an integer count"),
        ((True, 10), "stuck: True is not an integer count"),
        ((np.array([0, 1, 1]),), "stuck: a bool array"),
        ((np.ones((2, 3), bool),), "stuck: a bool array"),
    ],
)
def test_failure_probability_refuses(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        failure_probability(*args)


@pytest.mark.parametrize(
    ("k", "n"), [(11, 10), (-1, 10), (0, 0), (2.5, 10), (2, 10.5), ([1, 5], [4, 4])]
)
def test_clopper_pearson_refuses_what_is_no_binomial_count(k, n):
    """k > n gave (nan, 1.0) without a word."""
    with pytest.raises(ValueError, match="clopper_pearson: need integers"):
        clopper_pearson(k, n)


@pytest.mark.parametrize("level", [0.0, 1.0, "0.9", True])
def test_levels_at_the_ends_of_0_1_are_refused(level):
    """The ends of (0, 1) are no confidence levels: at 1 every interval is [0, 1], at 0
    Wilson's z = 0 and its interval is the point k/n. Every entry refuses both, and a
    level that is no number ("0.9" failed on '<' between str and int)."""
    from gdrelu.stats import wilson

    for call in (
        lambda: clopper_pearson(3, 10, level),
        lambda: wilson(3, 10, level),
        lambda: failure_probability(3, 10, level),
        lambda: paired_difference_interval((59, 6, 16, 80), level),
    ):
        with pytest.raises(ValueError, match=re.escape(f"level: {level!r}")):
            call()


def test_a_level_may_be_any_real_number():
    """A `Fraction(19, 20)` or a numpy float32 level was refused as "no number": each gives
    what 0.95 gives (to float32's rounding of 0.95), in every entry."""
    from fractions import Fraction

    from gdrelu.stats import wilson

    assert failure_probability(3, 10, Fraction(19, 20)) == failure_probability(3, 10, 0.95)
    np.testing.assert_allclose(wilson(3, 10, np.float32(0.95)), wilson(3, 10, 0.95), rtol=1e-6)
    stuck_a = np.array([True, True, False, False, True])
    stuck_b = np.array([True, False, False, True, False])
    fraction = paired_comparison(stuck_a, stuck_b, Fraction(19, 20))
    assert fraction == paired_comparison(stuck_a, stuck_b) and "ci95" in fraction


def test_counts_beyond_float64s_integers_are_refused():
    """Above 2^53 runs a count is no longer exact in float64: 10^19 of 10^20 gave the
    interval (nan, nan), and n - 1 of n = 10^18 read as n of n. Refused, naming runs;
    2^53 itself still works (its interval brackets 1/2 by about 1e-8)."""
    with pytest.raises(ValueError, match=r"^runs: 100000000000000000000 is above 2\^53"):
        failure_probability(10**19, 10**20)
    with pytest.raises(ValueError, match=r"^clopper_pearson: counts above 2\^53"):
        clopper_pearson(1, 2.0**60)
    from gdrelu.stats import wilson

    for entry in (clopper_pearson, wilson):  # an integer 2^53 + 1 read as 2^53 once a float
        with pytest.raises(ValueError, match=rf"^{entry.__name__}: counts above 2\^53"):
            entry(2**53, 2**53 + 1)
        with pytest.raises(ValueError, match=r"counts above 2\^53"):
            entry([1, 2], np.array([4, 2**53 + 1], np.int64))
    p, (low, high) = failure_probability(2**52, 2**53)
    assert p == 0.5 and 0.5 - 1e-7 < low < 0.5 < high < 0.5 + 1e-7


@pytest.mark.parametrize(("k", "n"), [(True, 5), ("1", 5), (1, True), ([1, "2"], 5)])
def test_counts_that_are_no_numbers_are_refused(k, n):
    """A bool or a string was read as a count (True as 1 of 5, "1" through float), where
    `failure_probability` refused them. Whole numbers of other types still count (a
    `Fraction`, float16, which compared with 2^53 overflowed with a warning)."""
    from fractions import Fraction

    from gdrelu.stats import wilson

    for entry in (clopper_pearson, wilson):
        with pytest.raises(ValueError, match=rf"^{entry.__name__}: need integer counts"):
            entry(k, n)
        expected = entry(1, 5)
        for same in ((Fraction(1), 5), (np.float16(1), np.float16(5)), ([1], [5.0])):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                np.testing.assert_allclose(np.ravel(entry(*same)), np.ravel(expected))


def test_successes_beyond_float64s_integers_are_refused():
    """Only the trials were checked against 2^53: 2^53 + 1 of 2^53 read as 2^53 of 2^53,
    the interval (1, 1), instead of a refusal as k > n."""
    from gdrelu.stats import wilson

    for entry in (clopper_pearson, wilson):
        with pytest.raises(ValueError, match=rf"^{entry.__name__}: counts above 2\^53"):
            entry(2**53 + 1, 2**53)


def test_wilsons_interval_stays_in_0_1_and_reaches_its_ends():
    """At k = n its upper end rounded to 1 + 2^-52 (n = 16) or 1 - 2^-53 (n = 29), and at
    k = 0 its lower end may round off 0: a probability interval ends within [0, 1], at 1
    exactly where every run is stuck and at 0 where none is (as Clopper-Pearson's)."""
    from gdrelu.stats import wilson

    n = np.arange(1, 400)
    low, high = wilson(np.concatenate([0 * n, n]), np.concatenate([n, n]))
    assert np.all(low[: n.size] == 0.0) and np.all(high[n.size :] == 1.0)
    low, high = wilson(np.arange(41), np.full(41, 40))
    assert low.min() >= 0.0 and high.max() <= 1.0 and np.all(low[1:] > 0) and np.all(high[:-1] < 1)


def test_counts_of_shapes_that_do_not_broadcast_are_named():
    with pytest.raises(ValueError, match=r"^clopper_pearson: counts of shapes \(3,\) and \(2,\)"):
        clopper_pearson([0, 1, 2], [2, 2])


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
def test_mcnemar_p_value_is_the_binomial_tail_of_the_discordant_runs(b, c):
    from math import comb

    n = b + c
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n if n else 0.5
    p_direct = min(1.0, 2 * tail)
    result = paired_comparison(*_paired(b, c))
    assert result["p_value"] == pytest.approx(p_direct, rel=1e-10)
    low, high = result["ci95"]
    assert -1 <= low <= result["difference"] <= high <= 1


def test_paired_interval_of_a_published_table():
    """Newcombe's square-and-add interval of the paired table (59, 6; 16, 80): -0.0621
    (-0.1186 to -0.0046), as the `contingencytables` R package of Fagerland, Lydersen and
    Laake (Statistical Analysis of Contingency Tables, ch. 8) prints it in its tests."""
    low, high = paired_difference_interval((59, 6, 16, 80))
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    result = paired_comparison(*_paired(6, 16, same_stuck=59, same_free=80))
    assert result["difference"] == pytest.approx(-10 / 161)
    assert result["ci95"] == [low, high] and result["runs"] == 161


@pytest.mark.parametrize(
    ("stuck", "runs", "halfwidth", "batch", "max_runs", "end"),
    [
        (0, 50, 0.01, 50, 400, 200),  # (1 - 0.025^(1/n))/2 ≤ 0.01 first at n = 183
        (5, 50, 0.04, 50, 600, None),
        (25, 50, 0.3, 50, 600, 50),  # met already: no batch more
        (25, 50, 0.01, 50, 600, 600),  # p = 1/2 needs about 9600 runs: max_runs
        (50, 50, 0.01, 50, 410, 200),  # p = 1: the mirror image of p = 0
        (3, 7, 0.05, 7, 100, None),  # the last batch capped at max_runs
        (2, 30, 0.02, 30, 1_000_000, None),
    ],
)
def test_expected_runs_is_the_first_batch_at_which_the_interval_is_narrow_enough(
    stuck, runs, halfwidth, batch, max_runs, end
):
    """`expected_runs` (the progress bar's forecast of a grown cell) against a walk over
    the batches one by one, the interval at the fraction observed from scipy.stats' beta
    quantiles (the count p·n stuck, not rounded); at p = 0 and 1 the interval's one
    bound in closed form gives the end by hand."""
    from scipy.stats import beta

    from gdrelu.stats import expected_runs

    p = stuck / runs

    def halfwidth_at(n):
        low = beta.ppf(0.025, p * n, n - p * n + 1) if p > 0 else 0.0
        high = beta.ppf(0.975, p * n + 1, n - p * n) if p < 1 else 1.0
        return (high - low) / 2

    n = runs
    while halfwidth_at(n) > halfwidth and n < max_runs:
        n = min(n + batch, max_runs)
    assert expected_runs(stuck, runs, halfwidth, batch, max_runs) == n
    assert end is None or n == end


def test_paired_interval_where_the_correlation_is_corrected_to_zero():
    """The other table of the package's example (Bentur et al. 2009: (1, 1; 7, 12), 21
    pairs): AD - BC = 5 lies in [0, N/2], so its continuity-corrected φ is 0 and the
    interval is p_a - p_b minus and plus the root of the two Wilson distances' squares,
    with the Wilson bounds of 2/21 and 8/21 from their closed form (a scratch computation
    with scipy's ndtri). Keeping φ = 5/√(2·19·8·13) would give (-0.50166, -0.03605)."""
    low, high = paired_difference_interval((1, 1, 7, 12))
    assert low == pytest.approx(-0.506920226686141, abs=1e-12)
    assert high == pytest.approx(-0.02555912416485978, abs=1e-12)


@pytest.mark.parametrize(
    ("table", "level", "expected"),
    [
        ((59, 6, 16, 80), 0.9, (-0.1097448428717901, -0.013785990793168515)),
        ((59, 6, 16, 80), 0.99, (-0.13563850636498026, 0.013076551184499727)),
        ((300_000, 240_000, 160_000, 300_000), 0.95, (0.07877017400545484, 0.08122943914971113)),
    ],
)
def test_paired_interval_at_other_levels_and_a_million_pairs(table, level, expected):
    """Newcombe's method 10 written out separately from Wilson's quadratic (the stats
    review of the twentieth session, which agreed to 8e-11 on every table of up to 30
    pairs at three levels): levels other than 0.95 and N = 10⁶ (the normal approximation
    below checks such sizes only to 2%)."""
    np.testing.assert_allclose(paired_difference_interval(table, level), expected, rtol=1e-9)


def _wilson_by_root_finding(k, n, z):
    """The two p with |k/n - p| = z sqrt(p(1 - p)/n), found by bisection (not the closed
    form of `stats.wilson`); 0 and 1 themselves at k = 0 and k = n."""
    from scipy.optimize import brentq

    def gap(p):
        return (k / n - p) ** 2 - z * z * p * (1 - p) / n

    inner = min(max(k / n, 1e-9), 1 - 1e-9)  # off the root p = k/n at k = 0 and k = n
    low = 0.0 if k == 0 else brentq(gap, 0.0, inner, xtol=1e-15, rtol=1e-15)
    high = 1.0 if k == n else brentq(gap, inner, 1.0, xtol=1e-15, rtol=1e-15)
    return low, high


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_paired_interval_is_newcombes_method_10_on_every_table_of_seven_pairs(level):
    """All 120 tables of 7 pairs against Newcombe's (1998) method 10 written out here: the
    Wilson bounds by root finding, and his continuity-corrected φ, whose numerator is
    AD - BC - N/2 above N/2, 0 for 0 ≤ AD - BC ≤ N/2 (e.g. (1, 1, 1, 4): AD - BC = 3,
    which no other test reaches) and AD - BC below 0; φ = 0 where a margin is 0."""
    from gdrelu.stats import wilson

    pairs, z = 7, special.ndtri((1 + level) / 2)
    tables = [(a, b, c, pairs - a - b - c) for a in range(pairs + 1)
              for b in range(pairs + 1 - a) for c in range(pairs + 1 - a - b)]  # fmt: skip
    in_between = 0
    for both, only_a, only_b, neither in tables:
        k_a, k_b = both + only_a, both + only_b
        (l_a, u_a), (l_b, u_b) = (_wilson_by_root_finding(k, pairs, z) for k in (k_a, k_b))
        np.testing.assert_allclose(wilson([k_a, k_b], pairs, level), [[l_a, l_b], [u_a, u_b]],
                                   rtol=1e-12, atol=1e-15)  # fmt: skip
        cross = both * neither - only_a * only_b
        if cross > pairs / 2:
            numerator = cross - pairs / 2
        elif cross >= 0:
            numerator, in_between = 0.0, in_between + (cross > 0)
        else:
            numerator = cross
        margins = [k_a, pairs - k_a, k_b, pairs - k_b]
        phi = numerator / np.sqrt(np.prod(margins, dtype=float)) if min(margins) else 0.0
        p_a, p_b = k_a / pairs, k_b / pairs
        d_low = np.sqrt((p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2)
        d_up = np.sqrt((u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2)
        expected = (max(-1.0, p_a - p_b - d_low), min(1.0, p_a - p_b + d_up))
        got = paired_difference_interval((both, only_a, only_b, neither), level)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert in_between > 0


def test_paired_comparison_names_its_interval_by_its_level():
    """At level 0.9 the interval is "ci90", the 90% interval of the published table above
    (the values of the independent method-10 implementation)."""
    result = paired_comparison(*_paired(6, 16, same_stuck=59, same_free=80), level=0.9)
    assert "ci95" not in result
    np.testing.assert_allclose(
        result["ci90"], (-0.1097448428717901, -0.013785990793168515), rtol=1e-9
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: paired_difference_interval((59, 6, 16, 80), level=95), "level: 95"),
        (lambda: paired_difference_interval((-1, 5, 3, 2)), "table: four counts ≥ 0"),
        (lambda: paired_difference_interval((2.7, 5, 3, 2)), "table: four counts ≥ 0"),
        (lambda: paired_difference_interval((1, 2, 3)), "table: four counts ≥ 0"),
        (lambda: paired_comparison(*_paired(3, 1), level=95), "level: 95"),
        (lambda: paired_comparison([1, 0], [0, 0]), "stuck_a, stuck_b: two bool arrays"),
        (lambda: paired_comparison(np.ones(3, bool), np.ones(4, bool)), "two bool arrays"),
        (lambda: paired_comparison(np.ones(0, bool), np.ones(0, bool)), "no runs to compare"),
        (lambda: paired_difference_interval((0, 0, 0, 0)), "no runs to compare"),
    ],
)
def test_paired_comparison_refuses_what_is_no_pair_of_outcomes(call, message):
    """A level of 95 collapsed the interval to the point estimate, a negative count gave an
    interval, 2.7 was truncated to 2: all without a word."""
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize("scale", [1, 4])
def test_paired_interval_of_many_pairs_is_the_normal_one(scale):
    """Past about 131 000 pairs the product of the four margins exceeds 2⁶⁴ (it crashed
    there). With N pairs, b and c discordant, the interval tends to the normal one,
    D ± z √((b + c)/N² - (b - c)²/N³)."""
    table = np.array([30_000, 24_000, 16_000, 30_000]) * scale
    total, b, c = table.sum(), table[1], table[2]
    difference = (b - c) / total
    z = special.ndtri(0.975)
    half = z * np.sqrt((b + c) / total**2 - (b - c) ** 2 / total**3)
    lower, upper = paired_difference_interval(table)
    # the score intervals' skew moves the centre by O(z/√N) half-widths, their width by
    # O(z²/N) (here 0.08 and 0.17 of those): a wrong combination misses both by far more
    assert (upper + lower) / 2 == pytest.approx(difference, abs=half * z / np.sqrt(total))
    assert (upper - lower) / 2 == pytest.approx(half, rel=z * z / total)


def test_paired_interval_leaves_room_beyond_what_was_observed():
    """No discordant pair does not prove P_a = P_b, and all discordant pairs one way do
    not bound the difference by the observed one (what an interval conditional on the
    number of discordant pairs claimed)."""
    low, high = paired_comparison(*_paired(0, 0, same_stuck=10, same_free=20))["ci95"]
    assert low < 0 < high
    result = paired_comparison(*_paired(17, 0, same_stuck=5, same_free=8))
    assert result["ci95"][0] > 0 and result["ci95"][1] > result["difference"] + 0.05


def test_paired_interval_covers_the_difference_as_often_as_it_says():
    """Exact coverage, by summing the multinomial probabilities of all 5456 tables of 30
    pairs, on a grid of (P(both), P(a only), P(b only)) in steps of 0.1. Newcombe's
    interval is approximate: its coverage dips below 95% at some points and exceeds it at
    others (Newcombe 1998, Fagerland et al. 2014). The values asserted, 0.9298 at worst at
    (0, 0.7, 0.3) and its mirror, and 0.9573 on average, are those of the stats review's independent
    enumeration with its own method-10 implementation (docs/theory.md quotes them). The
    interval conditional on the discordant pairs covered 0.56 at (0.3, 0.5, 0)."""
    from scipy.special import gammaln, xlogy

    pairs = 30
    tables = np.array(
        [(a, b, c, pairs - a - b - c) for a in range(pairs + 1)
         for b in range(pairs + 1 - a) for c in range(pairs + 1 - a - b)]
    )  # fmt: skip
    intervals = np.array([paired_difference_interval(t) for t in tables])
    log_count = gammaln(pairs + 1) - gammaln(tables + 1).sum(axis=1)
    tenths = itertools.product(range(11), repeat=3)  # integers: 0.7 + 0.2 + 0.1 > 1 in floats
    grid = [tuple(np.array(p) / 10) for p in tenths if sum(p) <= 10]
    assert len(grid) == 286
    coverage = []
    for both, only_a, only_b in grid:
        cells = np.array([both, only_a, only_b, max(0.0, 1 - both - only_a - only_b)])
        probability = np.exp(log_count + xlogy(tables, cells).sum(axis=1))
        true = only_a - only_b
        inside = (intervals[:, 0] <= true + 1e-12) & (true - 1e-12 <= intervals[:, 1])
        coverage.append(probability[inside].sum())
    assert min(coverage) == pytest.approx(0.9298, abs=5e-4)
    worst = [grid[i] for i in np.flatnonzero(np.isclose(coverage, min(coverage), atol=1e-12))]
    assert np.allclose(worst, [(0, 0.3, 0.7), (0, 0.7, 0.3)])  # a and b swapped: the same
    assert np.mean(coverage) == pytest.approx(0.9573, abs=5e-4)


def _grown_cells(p, runs, halfwidth, max_runs, cells, rng):
    """(stuck, size, covered) of `cells` simulated cells grown by the runner's rule (`runs`
    more runs while the half-width of the 95% interval exceeds H, up to `max_runs`), all
    at once: every growing cell has the same size at each batch. The intervals are
    Clopper-Pearson's from scipy's beta quantiles, not gdrelu's."""
    from scipy.stats import beta

    stuck, size = rng.binomial(runs, p, cells), runs
    final, sizes, covered = np.empty(cells, int), np.empty(cells, int), np.empty(cells, bool)
    growing = np.arange(cells)
    while growing.size:
        k = np.arange(size + 1)
        low = np.where(k == 0, 0.0, beta.ppf(0.025, k, size - k + 1))
        high = np.where(k == size, 1.0, beta.ppf(0.975, k + 1, size - k))
        now = stuck[growing]
        stops = ((high - low) / 2 <= halfwidth)[now] | (size >= max_runs)
        ended = growing[stops]
        final[ended], sizes[ended] = now[stops], size
        covered[ended] = (low[now[stops]] <= p) & (p <= high[now[stops]])
        growing = growing[~stops]
        more = min(runs, max_runs - size)
        stuck[growing] += rng.binomial(more, p, growing.size)
        size += more
    return final, sizes, covered


# (P, runs, H, max_runs), and the coverage and bias docs/theory.md quotes (None: not quoted)
GROWN_CASES = [
    ((0.09, 20, 0.05, 2000), 0.934, -0.0066),
    ((0.175, 10, 0.1, 1000), 0.941, -0.0112),
    ((0.02, 100, 0.01, 20000), 0.947, -0.0013),
    ((0.3, 25, 0.12, 60), None, None),
]
GROWN_CELLS = 200_000
THEORY = (Path(__file__).parents[1] / "docs" / "theory.md").read_text()


def _quoted_in_the_docs(figure: float, digits: int) -> None:
    """docs/theory.md states `figure` to `digits` decimals."""
    assert f"{figure:.{digits}f}" in " ".join(THEORY.split()), figure


# and a case that covers more often than 95%: growth need not lower the coverage
@pytest.mark.parametrize("case, quoted, _", [*GROWN_CASES, ((0.5, 20, 0.05, 2000), 0.960, None)])
def test_adaptive_coverage_is_that_of_simulated_cells(case, quoted, _):
    """The exact sum over (size, stuck) against 200 000 simulated cells: within 4 Monte
    Carlo standard errors. The cases are chosen so that the exact coverage is more than 5
    of those errors from 95% and from the fixed interval's at `max_runs`, so a sum that
    ignored the growth rule would fail; the docs quote the exact figures, rounded."""
    p, _, halfwidth, max_runs = case
    exact = adaptive_coverage(*case)
    error = np.sqrt(exact * (1 - exact) / GROWN_CELLS)
    simulated = np.mean(_grown_cells(*case, GROWN_CELLS, np.random.default_rng(7))[2])
    assert abs(simulated - exact) <= 4 * error, (simulated, exact)
    fixed = _fixed_coverage(p, max_runs) if max_runs <= 100 else None
    for other in (0.95, adaptive_coverage(p, max_runs, halfwidth, max_runs), fixed):
        assert other is None or abs(exact - other) > 5 * error, other
    if quoted is not None:
        assert exact == pytest.approx(quoted, abs=5e-4)
        _quoted_in_the_docs(quoted, 3)


def _exact_covers(k, n, p, level=0.95) -> bool:
    """Whether scipy's own exact interval (binomtest) at `level` of k in n covers p."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(level, "exact")
    return ci.low <= p <= ci.high


def _fixed_coverage(p, n):
    """Coverage at fixed n of scipy's exact intervals, not gdrelu's."""
    from scipy.stats import binom

    return sum(binom.pmf(k, n, p) for k in range(n + 1) if _exact_covers(k, n, p))


def test_adaptive_coverage_without_growth_is_the_fixed_interval_s():
    """max_runs = runs: the Clopper-Pearson coverage at fixed n, summed here over scipy's
    own exact intervals (binomtest), not gdrelu's."""
    p, n = 0.3, 25
    assert adaptive_coverage(p, n, 0.01, n) == pytest.approx(_fixed_coverage(p, n), abs=1e-12)
    with pytest.raises(ValueError, match="need 0 ≤ p ≤ 1"):
        adaptive_coverage(0.3, 30, 0.1, 20)


def test_adaptive_coverage_of_a_target_never_met_ends_at_max_runs_exactly():
    """Batches of 10 toward max_runs = 25 with a target no cell meets: 10, 20, then a last
    batch of 5, not 10 (as the runner grows a cell), so the coverage is the fixed interval's
    at n = 25, not at 30."""
    p = 0.3
    expected = _fixed_coverage(p, 25)
    assert abs(expected - _fixed_coverage(p, 30)) > 1e-4  # the two sizes are told apart
    assert adaptive_coverage(p, 10, 0.01, 25) == pytest.approx(expected, abs=1e-12)


def test_adaptive_coverage_at_p_0_and_1_and_at_a_half_width_equal_to_the_target():
    """At p = 0 every cell has k = 0 and an interval [0, u] (k = n at p = 1: [l, 1]), which
    covers p: coverage 1. A cell whose half-width equals the target stops (the runner adds
    runs while it exceeds H): at p = 0.01, 10 runs, max_runs 20 and H the half-width at
    k = 0 of 10 runs, the k = 0 cells stop at 10 (covering p) and the others grow to 20,
    summed here run by run with scipy's exact intervals."""
    from scipy.stats import binom

    for p in (0.0, 1.0):
        assert adaptive_coverage(p, 10, 0.05, 200) == pytest.approx(1.0, abs=1e-12)
    p, runs = 0.01, 10
    target = float(clopper_pearson(0, runs)[1]) / 2  # the interval at k = 0 is [0, 2H]
    expected = binom.pmf(0, runs, p)  # they stop: 0 ≤ p ≤ 2H
    for first in range(1, runs + 1):
        for more in range(runs + 1):
            if _exact_covers(first + more, 2 * runs, p):
                expected += binom.pmf(first, runs, p) * binom.pmf(more, runs, p)
    assert adaptive_coverage(p, runs, target, 2 * runs) == pytest.approx(expected, abs=1e-12)


def test_two_proportion_z_by_hand():
    """138/400 against 150/400: pooled p = 0.36, se = sqrt(0.36 · 0.64 · 2/400) =
    0.0339411, z = -0.03 / se = -0.883883 (worked out by hand)."""
    assert two_proportion_z(138, 400, 150, 400) == pytest.approx(-0.883883, abs=1e-6)
    assert two_proportion_z(150, 400, 138, 400) == pytest.approx(0.883883, abs=1e-6)
    assert two_proportion_z(0, 10, 0, 30) == 0.0


@pytest.mark.parametrize(
    ("p", "runs", "halfwidth", "max_runs"),
    [(1.5, 10, 0.1, 100), (-0.1, 10, 0.1, 100), (0.3, 10, 0.0, 100), (0.3, 0, 0.1, 100)],
)
def test_adaptive_coverage_refuses_what_is_no_growth_rule(p, runs, halfwidth, max_runs):
    """A probability outside [0, 1], a target half-width of 0 (never met: every cell grows
    to max_runs) and a first batch of 0 runs are refused, naming what is needed."""
    with pytest.raises(ValueError, match="need 0 ≤ p ≤ 1, halfwidth > 0, 1 ≤ runs"):
        adaptive_coverage(p, runs, halfwidth, max_runs)


def test_two_proportion_z_of_unequal_run_counts_by_hand():
    """10/100 against 30/200 (gdrelu's runs against the paper's 400 need not be equal):
    pooled p = 40/300 = 2/15, se = sqrt(2/15 · 13/15 · (1/100 + 1/200)) = sqrt(13/7500),
    z = -0.05 / sqrt(13/7500) = -1.2009612 (by hand)."""
    assert two_proportion_z(10, 100, 30, 200) == pytest.approx(-1.2009612, abs=1e-6)


def test_combined_z_is_the_chi_square_test_of_the_cells_together():
    """χ² with 2 degrees of freedom has P(X ≥ x) = exp(-x/2): z = (1, -1) gives Σz² = 2 and
    p = e⁻¹; with 6 cells, scipy's χ² survival function. Six cells each |z| = 1.2 (none
    alone far off) together give p ≈ 0.19, and |z| = 2 each p < 0.001."""
    from scipy import stats

    from gdrelu.stats import combined_z

    assert combined_z([1.0, -1.0]) == pytest.approx((2.0, np.exp(-1.0)), rel=1e-12)
    statistic, p = combined_z([1.2] * 6)
    assert statistic == pytest.approx(8.64) and p == pytest.approx(stats.chi2.sf(8.64, 6))
    assert 0.1 < p < 0.2 and combined_z([2.0] * 6)[1] < 0.001


def test_adaptive_coverage_at_another_level_grows_on_the_95_percent_interval():
    """The runner grows a cell while its 95% interval is wider than 2H, whatever level a
    reader then asks of the final interval. With 10 runs, max_runs 20 and H = 0.14, which
    the 90% interval at k = 0 of 10 runs meets (half-width 0.129) and no 95% interval of
    10 runs does (0.154 at k = 0), every cell grows to 20: the coverage of the 90% interval
    at n = 20, summed with scipy's; growing on the 90% interval would stop the k = 0 cells
    at 10."""
    from scipy.stats import binom

    p, runs, target = 0.1, 10, 0.14
    assert float(clopper_pearson(0, runs, 0.90)[1]) / 2 < target
    assert float(clopper_pearson(0, runs)[1]) / 2 > target

    def covered(n, level):
        return sum(binom.pmf(k, n, p) for k in range(n + 1) if _exact_covers(k, n, p, level))

    expected = covered(2 * runs, 0.90)
    on_the_90 = binom.pmf(0, runs, p) * _exact_covers(0, runs, p, 0.90)
    for first in range(1, runs + 1):
        for more in range(runs + 1):
            if _exact_covers(first + more, 2 * runs, p, 0.90):
                on_the_90 += binom.pmf(first, runs, p) * binom.pmf(more, runs, p)
    got = adaptive_coverage(p, runs, target, 2 * runs, level=0.90)
    assert got == pytest.approx(expected, abs=1e-12)
    assert abs(expected - on_the_90) > 1e-4 and abs(expected - covered(2 * runs, 0.95)) > 1e-3


def test_adaptive_bias_summed_run_by_run():
    """The same two-batch rule as above at p = 0.2: E[k/N] summed over the first batch's k
    and the second's by hand; no bias without growth (max_runs = runs) and at p = 1/2; the
    bias at 1 - p is minus that at p."""
    from scipy.stats import binom

    p, runs = 0.2, 10
    target = float(clopper_pearson(0, runs)[1]) / 2
    mean = 0.0  # k = 0 stops at 10 with k/N = 0
    for first in range(1, runs + 1):
        for more in range(runs + 1):
            mean += binom.pmf(first, runs, p) * binom.pmf(more, runs, p) * (first + more) / 20
    assert adaptive_bias(p, runs, target, 2 * runs) == pytest.approx(mean - p, abs=1e-12)
    assert adaptive_bias(0.3, 25, 0.01, 25) == pytest.approx(0.0, abs=1e-12)
    assert adaptive_bias(0.5, 20, 0.05, 2000) == pytest.approx(0.0, abs=1e-12)
    assert adaptive_bias(0.9, 20, 0.05, 2000) == pytest.approx(-adaptive_bias(0.1, 20, 0.05, 2000))


@pytest.mark.parametrize("case, _, quoted", GROWN_CASES)
def test_adaptive_bias_is_that_of_simulated_cells(case, _, quoted):
    """The exact bias E[k/N] - P against 200 000 simulated cells, within 4 Monte Carlo
    standard errors of their mean k/N; the bias is more than 10 of those errors, so a zero
    bias would fail; the docs quote the exact figures, rounded."""
    stuck, size, _ = _grown_cells(*case, GROWN_CELLS, np.random.default_rng(11))
    estimates = stuck / size
    error = np.std(estimates) / np.sqrt(GROWN_CELLS)
    bias = adaptive_bias(*case)
    simulated = np.mean(estimates) - case[0]
    assert abs(simulated - bias) <= 4 * error, (simulated, bias)
    assert bias < -10 * error
    if quoted is not None:
        assert bias == pytest.approx(quoted, abs=5e-5)
        _quoted_in_the_docs(quoted, 4)


def test_stouffer_z_by_hand():
    """Six cells of z = 1.2: Σz/√6 = 7.2/2.4495 = 2.9394, two-sided p = 2(1 - Φ(2.9394))
    = 0.00329, where Σz² over the same cells gives p ≈ 0.19; signs cancel: (2, -2) gives 0."""
    from scipy import stats

    from gdrelu.stats import stouffer_z

    statistic, p = stouffer_z([1.2] * 6)
    assert statistic == pytest.approx(7.2 / np.sqrt(6), rel=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(7.2 / np.sqrt(6)), rel=1e-10)
    assert p == pytest.approx(0.00329, abs=1e-5)
    assert stouffer_z([2.0, -2.0]) == pytest.approx((0.0, 1.0))


def test_every_exported_name_resolves_paired_comparison_among_them():
    """`gdrelu.paired_comparison` raised AttributeError though compare's statistics rest
    on it: it is exported beside failure_probability, and every name of `__all__` (which
    the package imports on first use) resolves to its module's object."""
    import gdrelu
    from gdrelu import stats

    assert gdrelu.paired_comparison is stats.paired_comparison
    for name in gdrelu.__all__:
        assert getattr(gdrelu, name) is not None, name
