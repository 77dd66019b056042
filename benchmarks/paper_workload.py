"""The benchmarks' shared workload: `runs` runs of the paper's 1-D problem at one width.

Each run: He initialization (`gdrelu.init.he_init`), the six points with Δ = 0 and
multinomial weights from N = width² draws (`gdrelu.data.paper_data`), the paper's GD step
size (`gdrelu.theory.paper_step_size`), and a key for the run's minibatch noise (SGD, Adam).

Keys, layout "per-run" (the default): `jax.random.split(jax.random.key(seed), (runs, 3))`;
row i holds run i's keys, column 0 for its initialization, 1 for its data, 2 for its
noise. Under JAX's partitionable threefry (its default, which gdrelu requires:
`gdrelu.cells.check_threefry`) run i's keys do not depend on `runs`, so a benchmark with
more runs trains the same first runs and more.

Layout "blocks": `jax.random.split(jax.random.key(seed), 3 * runs)`, the first `runs` keys
for the initializations, the next `runs` for the data, the last `runs` for the noise. It
is bench_vs_numpy's (and bench_floors') derivation, kept so that their dated results
(benchmarks/results/vs-numpy-*, floors-*) keep measuring the same draws: under the
crossing protocol the steps trained depend on which runs cross. Here run i's keys depend
on `runs`.

These are not the keys of `gdrelu run` (`gdrelu.cells`, per cell and run index); a
benchmark that must train exactly what the runner trains builds its runs with
`gdrelu.cells.initial_runs` (bench_optimizers, bench_star).

Imported by the benchmarks (`sys.path` holds benchmarks/ when one runs as a script) and by
scripts/gpu_check.py. Run alone, it prints a digest of one workload:

    PYTHONPATH=. python benchmarks/paper_workload.py [--width 16] [--runs 4] [--seed 0]
        [--dtype float64] [--layout per-run|blocks]
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from gdrelu import theory
from gdrelu.data import WeightedData, paper_data
from gdrelu.init import he_init
from gdrelu.model import Params

LAYOUTS = ("per-run", "blocks")


class PaperWorkload(NamedTuple):
    """Batched inputs of `runs` runs, each field with a leading runs axis."""

    params: Params
    data: WeightedData
    step_size: jax.Array  # (runs,): the paper's GD step size of each run
    noise: jax.Array  # (runs,) typed keys: each run's minibatch noise (simulate's key=)


def keys(runs: int, seed: int = 0, layout: str = "per-run") -> jax.Array:
    """(runs, 3) typed keys: each run's (initialization, data, noise) keys (module doc)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not one of {LAYOUTS}")
    root = jax.random.key(seed)
    if layout == "per-run":
        return jax.random.split(root, (runs, 3))
    return jax.random.split(root, 3 * runs).reshape(3, runs).T


def build(
    width: int, runs: int, seed: int = 0, dtype="float64", layout: str = "per-run"
) -> PaperWorkload:
    """The workload of `runs` runs at `width` in `dtype`, from `keys(runs, seed, layout)`.
    (float64 needs `jax_enable_x64`, which the caller sets.)"""
    k = keys(runs, seed, layout)
    params = jax.vmap(lambda key: he_init(width, key=key, dtype=dtype))(k[:, 0])
    data = jax.vmap(lambda key: paper_data(key, 0.0, width**2, dtype))(k[:, 1])
    return PaperWorkload(params, data, theory.paper_step_size(params, data), k[:, 2])


def main() -> None:
    import argparse

    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--width", type=int, default=16, help="neurons n; N = n² draws (default: %(default)s)"
    )
    parser.add_argument("--runs", type=int, default=4, help="runs (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the root key (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype",
        default="float64",
        choices=("float64", "float32"),
        help="dtype of the parameters and data (default: %(default)s)",
    )
    parser.add_argument(
        "--layout",
        default="per-run",
        choices=LAYOUTS,
        help="key layout, see the module doc (default: %(default)s)",
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    w = build(args.width, args.runs, args.seed, args.dtype, args.layout)
    print(f"{args.runs} runs of width {args.width}, seed {args.seed}, {args.layout} keys:")
    print(f"  step sizes {np.asarray(w.step_size)}")
    print(f"  weights of run 0 {np.asarray(w.data.weights[0])}")
    print(f"  a of run 0 {np.asarray(w.params.a[0]).ravel()[:4]} ...")


if __name__ == "__main__":
    main()
