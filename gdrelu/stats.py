"""Monte Carlo estimates of failure probabilities with exact intervals, and paired
differences between optimizers."""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special

from gdrelu.numbers import is_integer

MAX_COUNT = 2**53  # float64 holds every integer count up to here, and the quantiles work


def clopper_pearson(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion.

    lower = Beta quantile (1-level)/2 with (k, n-k+1), upper = quantile (1+level)/2 with
    (k+1, n-k); lower = 0 at k = 0 and upper = 1 at k = n. Works elementwise. (The
    quantiles are `scipy.special.betaincinv`, what `scipy.stats.beta.ppf` computes,
    without importing the much larger scipy.stats.)
    """
    k, n = _counts("clopper_pearson", successes, trials)
    try:
        np.broadcast_shapes(k.shape, n.shape)
    except ValueError:
        raise ValueError(f"clopper_pearson: counts of shapes {k.shape} and {n.shape}") from None
    _check_counts("clopper_pearson", k, n)
    level = _check_level(level)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k > 0, special.betaincinv(k, n - k + 1, tail), 0.0)
        upper = np.where(k < n, special.betaincinv(k + 1, n - k, 1.0 - tail), 1.0)
    return lower, upper


def failure_probability(stuck, runs=None, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """P(stuck) = stuck / runs with its Clopper-Pearson interval at `level`: two counts,
    or one bool array of the runs (`SimulationResult.stuck`) and no `runs`."""
    if runs is None:
        mask = np.asarray(stuck)
        if mask.dtype != bool or mask.ndim != 1:
            raise ValueError(f"stuck: a bool array (runs,) without runs, not {mask.dtype} "
                             f"{mask.shape}")  # fmt: skip
        stuck, runs = int(mask.sum()), mask.size
    counts = []
    for name, count in (("stuck", stuck), ("runs", runs)):
        if np.ndim(count) == 0 and np.asarray(count).dtype.kind in "iu":
            count = int(count)  # a 0-d array too, such as jnp.sum of a mask
        if not is_integer(count):
            raise ValueError(f"{name}: {count!r} is not an integer count")
        counts.append(count)
    stuck, runs = counts
    if not 0 <= stuck <= runs or runs == 0:
        raise ValueError(
            f"failure_probability: need 0 ≤ stuck ≤ runs, runs ≥ 1, not {stuck}, {runs}"
        )
    if runs > MAX_COUNT:
        raise ValueError(f"runs: {runs} is above 2^53: float64 no longer holds every count")
    lower, upper = clopper_pearson(stuck, runs, level)
    return float(stuck) / float(runs), (float(lower), float(upper))


def _check_counts(name: str, k: np.ndarray, n: np.ndarray) -> None:
    """Refuse what is no binomial count: integers 0 ≤ k ≤ n, n ≥ 1 (≤ 2^53: `_counts`)."""
    if not np.all((k >= 0) & (k <= n) & (n >= 1) & (k == np.round(k)) & (n == np.round(n))):
        raise ValueError(f"{name}: need integers 0 ≤ k ≤ n, n ≥ 1, not {k}, {n}")


def _counts(name: str, successes, trials) -> tuple[np.ndarray, np.ndarray]:
    """(k, n) as float arrays. Refused before they become floats: what is no number (a
    bool, a string) and counts above 2^53 (2^53 + 1 would read as 2^53, and k = 2^53 + 1
    of n = 2^53 as every run); `_check_counts` checks the rest."""
    for value in (successes, trials):
        raw = np.asarray(value)
        numeric = raw.dtype.kind in "iuf" or (
            raw.dtype.kind == "O" and all(_real(v) for v in raw.ravel().tolist())
        )
        if not numeric:
            raise ValueError(f"{name}: need integer counts, not {value!r}")
        if np.any((raw if raw.dtype.kind in "iuO" else raw.astype(float)) > MAX_COUNT):
            raise ValueError(f"{name}: counts above 2^53 are not exact in float64, not {value}")
    return np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)


def _real(value) -> bool:
    """A real number (a `Fraction` too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_level(level) -> float:
    """`level` as a float; refused outside (0, 1), such as 95 for 0.95. Any real number
    (a numpy scalar, a `Fraction`) will do, a bool will not."""
    value = np.asarray(level).item() if np.ndim(level) == 0 else None
    if not (_real(value) and 0 < value < 1):
        raise ValueError(f"level: {level!r} is not a number in (0, 1)")
    return float(value)


def _grown_cells(p: float, runs: int, halfwidth: float, max_runs: int):
    """The cells `--target-halfwidth` grows, by the runner's rule: start with `runs` runs
    and add `runs` more (at most up to `max_runs`) while the 95% interval's half-width
    exceeds `halfwidth`. Yields (size, stops, low, high): stops[k] is the probability
    that a cell ends at `size` runs with k stuck, summed over the distribution of (runs so
    far, stuck so far) among the cells still growing, one batch at a time
    (docs/theory.md); low, high are the 95% intervals of every k at that size."""
    counts = is_integer(runs) and is_integer(max_runs) and 1 <= runs <= max_runs
    if not (counts and 0 <= p <= 1 and halfwidth > 0):
        raise ValueError(f"need 0 ≤ p ≤ 1, halfwidth > 0, 1 ≤ runs ≤ max_runs; not "
                         f"{p}, {halfwidth}, {runs}, {max_runs}")  # fmt: skip
    from scipy.stats import binom

    size, growing = runs, binom.pmf(np.arange(runs + 1), runs, p)
    while growing.any():
        low, high = clopper_pearson(np.arange(size + 1), np.full(size + 1, size))
        stops = ((high - low) / 2 <= halfwidth) | (size >= max_runs)
        yield size, np.where(stops, growing, 0.0), low, high
        growing = np.where(stops, 0.0, growing)
        more = min(runs, max_runs - size)
        growing, size = np.convolve(growing, binom.pmf(np.arange(more + 1), more, p)), size + more


def expected_runs(stuck: int, runs: int, halfwidth: float, batch: int, max_runs: int) -> int:
    """The run count a cell grown by `--target-halfwidth` is expected to end at, from
    `stuck` of its `runs` so far: the first of runs, runs + batch, … (at most `max_runs`)
    at which the 95% Clopper-Pearson interval of the fraction observed, stuck/runs, has
    half-width at most `halfwidth`. A forecast (the runs to come move the fraction), for
    the progress bar; the half-width at a fixed fraction shrinks with the count, so a
    bisection over the batches finds it (the count p·n stuck need not be whole there)."""
    p, tail = stuck / runs, 0.025

    def too_wide(j: int) -> bool:
        n = min(runs + j * batch, max_runs)
        k = p * n
        low = special.betaincinv(k, n - k + 1, tail) if k > 0 else 0.0
        high = special.betaincinv(k + 1, n - k, 1.0 - tail) if k < n else 1.0
        return (high - low) / 2 > halfwidth

    first, last = 0, -(-(max_runs - runs) // batch)  # batches: none, …, up to max_runs
    if not too_wide(first):
        return runs
    if too_wide(last):
        return max_runs
    while last - first > 1:  # too_wide(first), not too_wide(last)
        middle = (first + last) // 2
        first, last = (middle, last) if too_wide(middle) else (first, middle)
    return min(runs + last * batch, max_runs)


def adaptive_coverage(p: float, runs: int, halfwidth: float, max_runs: int, level=0.95) -> float:
    """Exact probability that the Clopper-Pearson interval at `level` of a cell grown by
    `--target-halfwidth` (`_grown_cells`: the runner grows on the 95% interval whatever
    `level`) covers its true P(stuck) = p."""
    level = _check_level(level)
    covered = 0.0
    for size, stops, low, high in _grown_cells(p, runs, halfwidth, max_runs):
        if level != 0.95:
            low, high = clopper_pearson(np.arange(size + 1), np.full(size + 1, size), level)
        covered += stops[(low <= p) & (p <= high)].sum()
    return float(covered)


def adaptive_bias(p: float, runs: int, halfwidth: float, max_runs: int) -> float:
    """Exact bias E[k/N] - p of the P(stuck) a cell grown by `--target-halfwidth` reports
    (`_grown_cells`): N too is chosen by the outcomes, and a cell stops sooner where k/N is
    far from 1/2 (its interval is narrower there), so k/N leans away from 1/2."""
    mean = 0.0
    for size, stops, _, _ in _grown_cells(p, runs, halfwidth, max_runs):
        mean += float(np.dot(stops, np.arange(size + 1))) / size
    return mean - p


def wilson(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval for a binomial proportion k/n: the p with
    |k/n - p| <= z sqrt(p(1 - p)/n), z the normal quantile at (1 + level)/2."""
    k, n = _counts("wilson", successes, trials)
    _check_counts("wilson", k, n)
    level = _check_level(level)
    z = special.ndtri(0.5 + level / 2.0)
    center = (k + z * z / 2.0) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4.0) / (n + z * z)
    # exact ends at k = 0 and k = n (their rounding left 1 ± 2⁻⁵³), as Clopper-Pearson's
    return (
        np.where(k > 0, np.maximum(center - half, 0.0), 0.0),
        np.where(k < n, np.minimum(center + half, 1.0), 1.0),
    )


def paired_difference_interval(table, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for P_a - P_b on paired runs.

    `table` = (both stuck, a stuck and b not, b stuck and a not, neither). The Wilson
    intervals [l_a, u_a], [l_b, u_b] of the two marginal proportions combine by squaring
    and adding, with φ, the continuity-corrected correlation of the two outcomes:
    D - sqrt((p_a - l_a)² - 2φ(p_a - l_a)(u_b - p_b) + (u_b - p_b)²) and D + the same with
    a and b swapped, D = p_a - p_b.
    """
    counts = np.asarray(table)
    if counts.shape != (4,) or not all(is_integer(v) and v >= 0 for v in counts.tolist()):
        raise ValueError(f"table: four counts ≥ 0 (both, a only, b only, neither), not {table}")
    both, only_a, only_b, neither = (int(v) for v in counts)
    total = both + only_a + only_b + neither
    if total == 0:
        raise ValueError("paired outcomes: no runs to compare")
    level = _check_level(level)
    p_a, p_b = (both + only_a) / total, (both + only_b) / total
    (l_a, l_b), (u_a, u_b) = wilson([both + only_a, both + only_b], total, level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    corrected = cross - total / 2 if cross > total / 2 else min(cross, 0)
    phi = corrected / np.sqrt(float(margins)) if margins > 0 else 0.0  # margins: any size

    def spread(below, above):
        return np.sqrt(max(0.0, below * below - 2 * phi * below * above + above * above))

    difference = p_a - p_b
    lower = difference - spread(p_a - l_a, u_b - p_b)
    upper = difference + spread(p_b - l_b, u_a - p_a)
    return max(-1.0, float(lower)), min(1.0, float(upper))


def paired_comparison(stuck_a, stuck_b, level: float = 0.95) -> dict:
    """P_a(stuck) - P_b(stuck) on paired runs (common random numbers): the exact McNemar
    test and Newcombe's interval (`paired_difference_interval`).

    With discordant counts b = #(a stuck, b not) and c = #(b stuck, a not), the two-sided
    exact McNemar p-value is the binomial test of b out of b + c against 1/2.
    Returns {runs, difference, ci<100·level> (ci95 at the default level, as summary.json
    names it), p_value, discordant: [b, c]}.
    """
    a = np.asarray(stuck_a)
    b_runs = np.asarray(stuck_b)
    if a.dtype != bool or b_runs.dtype != bool or a.ndim != 1 or a.shape != b_runs.shape:
        raise ValueError(
            f"stuck_a, stuck_b: two bool arrays (runs,) of the same runs, not {a.dtype} "
            f"{a.shape} and {b_runs.dtype} {b_runs.shape}"
        )
    level, total = _check_level(level), a.size
    b = int(np.sum(a & ~b_runs))
    c = int(np.sum(~a & b_runs))
    both = int(np.sum(a & b_runs))
    ci = paired_difference_interval((both, b, c, total - both - b - c), level)
    if b + c == 0:
        p_value = 1.0
    else:
        from scipy.stats import binomtest  # here: only compare's pairs need scipy.stats

        p_value = float(binomtest(b, b + c, 0.5).pvalue)
    return {
        "runs": total,
        "difference": (b - c) / total,
        f"ci{100 * level:g}": list(ci),
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


def combined_z(zs) -> tuple[float, float]:
    """Σ z² of k independent z-scores and its p-value, P(χ²_k ≥ Σ z²): the cells tested
    together for any departure, whatever its sign in each. A shift of one sign in every
    cell is better found by `stouffer_z`."""
    zs = np.asarray(zs, dtype=float)
    statistic = float(np.sum(zs**2))
    return statistic, float(special.chdtrc(zs.size, statistic))


def stouffer_z(zs) -> tuple[float, float]:
    """Stouffer's Z = Σ z / √k of k independent z-scores, standard normal when every cell
    agrees, and its two-sided p-value: finds a bias of one sign common to the cells that
    no single |z| reveals."""
    zs = np.asarray(zs, dtype=float)
    statistic = float(np.sum(zs) / np.sqrt(zs.size))
    return statistic, float(2.0 * special.ndtr(-abs(statistic)))
