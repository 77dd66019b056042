"""gdrelu's optimizers against the paper-style NumPy code, side by side in one process.

For each optimizer and width: `--runs` runs of the paper's 1-D workload (six points,
N = n² multinomial weights, He init, Δ = 0, the paper's GD step size, Adam's learning
rate the same, as the paper's code did), every run trained `--steps` steps with no
stopping (`stop_on=()`), by `gdrelu.simulate` (warm: after one call of the same shapes,
and cold: the first call, compilation included) and by `numpy_baseline` (one core,
`train_stochastic`; GD: `simulate_numpy` without early exit). SGD and Adam draw the
paper's B = 16 multinomial samples per step in both; momentum is full-batch heavy ball.
The table gives neuron-steps/s (width × steps × runs / s) and gdrelu's ratio to NumPy;
`benchmarks/results/` and docs/performance.md keep the dated tables.

    PYTHONPATH=. python benchmarks/bench_vs_numpy.py [--widths 16,128] [--runs 200]
        [--steps 2000] [--optimizers gd,sgd,momentum,adam]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import numpy_baseline  # noqa: E402

from gdrelu import he_init, simulate, theory  # noqa: E402
from gdrelu.data import paper_data  # noqa: E402

SAMPLER = {"gd": None, "sgd": "multinomial", "momentum": None, "adam": "multinomial"}


def workload(width: int, runs: int, seed: int = 0):
    """(params, data, step sizes, noise keys) of `runs` runs at `width`, as numpy arrays."""
    keys = jax.random.split(jax.random.key(seed), 3 * runs)
    params = jax.vmap(lambda k: he_init(width, key=k))(keys[:runs])
    data = jax.vmap(lambda k: paper_data(k, 0.0, width**2))(keys[runs : 2 * runs])
    steps = theory.paper_step_size(params, data)
    return (*jax.device_get((params, data, steps)), keys[2 * runs :])


def time_gdrelu(optimizer, params, data, steps, keys, num_steps, check_every):
    kwargs = dict(
        optimizer=optimizer,
        sampler=SAMPLER[optimizer],
        key=keys if SAMPLER[optimizer] else None,
        check_every=check_every,
        max_checks=num_steps // check_every,
        stop_on=(),
    )
    start = time.perf_counter()
    simulate(params, data, steps, **kwargs)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    simulate(params, data, steps, **kwargs)
    return cold, time.perf_counter() - start


def time_numpy(optimizer, params, data, steps, num_steps, check_every):
    a, b, w, c = params
    start = time.perf_counter()
    if optimizer == "gd":
        numpy_baseline.simulate_numpy(
            a, b, w, c, *data, steps, check_every, num_steps // check_every, early_exit=False
        )
    else:
        numpy_baseline.train_stochastic(
            a, b, w, c, *data, steps, optimizer=optimizer, steps=num_steps
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="16,128")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--check-every", type=int, default=1000)
    parser.add_argument("--optimizers", default="gd,sgd,momentum,adam")
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores, jax {jax.__version__} on {jax.devices()[0].platform}, numpy {np.__version__}"
    )
    print(
        "| optimizer | width | runs | steps | numpy (n·steps/s) | gdrelu warm | gdrelu cold "
        "| ratio warm | ratio cold |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for width in map(int, args.widths.split(",")):
        params, data, steps, keys = workload(width, args.runs)
        for optimizer in args.optimizers.split(","):
            work = width * args.steps * args.runs
            numpy_s = time_numpy(optimizer, params, data, steps, args.steps, args.check_every)
            cold, warm = time_gdrelu(
                optimizer, params, data, steps, keys, args.steps, args.check_every
            )
            print(
                f"| {optimizer} | {width} | {args.runs} | {args.steps} | {work / numpy_s:.3g} "
                f"| {work / warm:.3g} | {work / cold:.3g} | {numpy_s / warm:.1f}× "
                f"| {numpy_s / cold:.1f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
