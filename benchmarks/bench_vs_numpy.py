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

`--protocol crossing` instead stops runs as the paper's protocols do, in both: GD on a
crossing, degeneracy or the certificate (`simulate_numpy` with early exit, gdrelu's GD
rules); the others on a crossing (`train_stochastic(stop_crossed_every=...)`, gdrelu
`stop_on=("crossed",)`, which takes the propagator for SGD and momentum). Each side's
neuron-steps are those it trained (width × the steps of each run until it stopped), so the
rates compare like with like although the two sides' minibatches, and so which SGD runs
cross, differ.

    PYTHONPATH=. python benchmarks/bench_vs_numpy.py [--widths 16,128] [--runs 200]
        [--steps 2000] [--optimizers gd,sgd,momentum,adam] [--protocol full|crossing]
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


def time_gdrelu(optimizer, params, data, steps, keys, num_steps, check_every, protocol):
    """(cold seconds, warm seconds, run-steps trained) of gdrelu."""
    stop_on = () if protocol == "full" else None if optimizer == "gd" else ("crossed",)
    kwargs = dict(
        optimizer=optimizer,
        sampler=SAMPLER[optimizer],
        key=keys if SAMPLER[optimizer] else None,
        check_every=check_every,
        max_checks=num_steps // check_every,
        stop_on=stop_on,
    )
    start = time.perf_counter()
    simulate(params, data, steps, **kwargs)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    result = simulate(params, data, steps, **kwargs)
    return cold, time.perf_counter() - start, int(np.sum(result.stop_step))


def time_numpy(optimizer, params, data, steps, num_steps, check_every, protocol):
    """(seconds, run-steps trained) of the NumPy code."""
    a, b, w, c = params
    full = protocol == "full"
    start = time.perf_counter()
    if optimizer == "gd":
        _, stop_step = numpy_baseline.simulate_numpy(
            a, b, w, c, *data, steps, check_every, num_steps // check_every, early_exit=not full
        )
        run_steps = len(stop_step) * num_steps if full else int(np.sum(stop_step))
    else:
        _, run_steps = numpy_baseline.train_stochastic(
            a, b, w, c, *data, steps, optimizer=optimizer, steps=num_steps,
            stop_crossed_every=None if full else check_every,
        )  # fmt: skip
    return time.perf_counter() - start, run_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="16,128")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--check-every", type=int, default=1000)
    parser.add_argument("--optimizers", default="gd,sgd,momentum,adam")
    parser.add_argument("--protocol", choices=("full", "crossing"), default="full")
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores, jax {jax.__version__} on {jax.devices()[0].platform}, numpy {np.__version__}"
    )
    print(f"# protocol: {args.protocol}; rates in neuron-steps/s of the steps each side trained")
    print(
        "| optimizer | width | runs | steps | numpy | gdrelu warm | gdrelu cold "
        "| ratio warm | ratio cold | trained (numpy, gdrelu) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for width in map(int, args.widths.split(",")):
        params, data, steps, keys = workload(width, args.runs)
        for optimizer in args.optimizers.split(","):
            timing = (optimizer, params, data, steps)
            setting = (args.steps, args.check_every, args.protocol)
            numpy_s, numpy_steps = time_numpy(*timing, *setting)
            cold, warm, gdrelu_steps = time_gdrelu(*timing, keys, *setting)
            numpy_rate = width * numpy_steps / numpy_s
            warm_rate, cold_rate = width * gdrelu_steps / warm, width * gdrelu_steps / cold
            full = width * args.runs * args.steps
            print(
                f"| {optimizer} | {width} | {args.runs} | {args.steps} | {numpy_rate:.3g} "
                f"| {warm_rate:.3g} | {cold_rate:.3g} | {warm_rate / numpy_rate:.1f}× "
                f"| {cold_rate / numpy_rate:.1f}× "
                f"| {width * numpy_steps / full:.2f}, {width * gdrelu_steps / full:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
