"""How often the 95% Clopper-Pearson interval of a cell grown by `--target-halfwidth`
covers the true P(stuck): cells simulated as binomial draws, grown by the runner's rule
(batches of `runs` more runs while the half-width exceeds H, up to `max_runs`), next to
the exact coverage of `gdrelu.stats.adaptive_coverage`.

    python scripts/sequential_coverage.py [--cells 100000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from gdrelu.stats import adaptive_coverage, clopper_pearson

CASES = ((0.09, 20, 0.05, 2000), (0.175, 10, 0.1, 1000), (0.02, 100, 0.01, 20000))


def coverage(p, runs, halfwidth, max_runs, cells, rng) -> tuple[float, float]:
    """(fraction of cells whose final interval holds p, mean final run count)."""
    stuck = rng.binomial(runs, p, cells)
    size = np.full(cells, runs)
    growing = np.ones(cells, bool)
    while True:
        low, high = clopper_pearson(stuck, size)
        growing &= ((high - low) / 2 > halfwidth) & (size < max_runs)
        if not growing.any():
            break
        more = np.where(growing, np.minimum(runs, max_runs - size), 0)
        stuck, size = stuck + rng.binomial(more, p), size + more
    low, high = clopper_pearson(stuck, size)
    return float(np.mean((low <= p) & (p <= high))), float(size.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cells", type=int, default=100_000, help="simulated cells per case (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="NumPy generator seed (default: %(default)s)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    se = np.sqrt(0.95 * 0.05 / args.cells)
    print(f"P(stuck)  runs  H      max_runs  simulated (MC s.e. {se:.4f})  exact   mean runs")
    for p, runs, halfwidth, max_runs in CASES:
        covered, mean_runs = coverage(p, runs, halfwidth, max_runs, args.cells, rng)
        exact = adaptive_coverage(p, runs, halfwidth, max_runs)
        print(
            f"{p:<9} {runs:<5} {halfwidth:<6} {max_runs:<9} {covered:.4f}{'':23} {exact:.4f}"
            f"  {mean_runs:.1f}"
        )


if __name__ == "__main__":
    main()
