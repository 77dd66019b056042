"""Momentum, Adam and SGD on a fast path against the general path.

For each optimizer and width: `runs` runs of a 1-D workload (`--data`: the paper's six
points with N = n² multinomial weights, or p-ex with 256 i.i.d. points and held-out
sets; He init, Δ = 0; step size `--step-factor` × the paper's, Adam `--adam-step`),
`--checks` chunks of 1000 steps, trained to the whole budget (stop_on=()), by `simulate`
with path="general" and with `--fast-path`: "fixed_pattern" (chosen only when asked for:
`engine.choose_path` never picks it) or "propagator" (GD, SGD and momentum only; the runs
whose kinks reach the data go on in general blocks, `engine.mixes_paths`, as in `gdrelu
compare`). Each is timed after a warm-up call with the same shapes. The table gives
seconds, neuron-steps/s, the speed-up, the runs whose pattern changed (they finish in
general blocks), whether the statuses and pattern-change steps agree, and the largest
relative difference of the final a_i next to that of the general path itself when a0
changes by a relative 1e-15 (the trajectories' own sensitivity to round-off).

    PYTHONPATH=. python benchmarks/bench_optimizers.py [--widths 16,256] [--runs 512]
        [--data six-points|p-ex] [--fast-path fixed_pattern|propagator]
        [--optimizers momentum,adam,sgd] [--checks 5] [--step-factor 0.5]
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gdrelu import provenance  # noqa: E402
from gdrelu.cells import Cell, initial_runs, noise_keys  # noqa: E402
from gdrelu.engine import simulate  # noqa: E402
from gdrelu.runner import validation_arguments  # noqa: E402
from gdrelu.spec import ExperimentSpec  # noqa: E402
from gdrelu.step_size import paper_step_sizes  # noqa: E402

SAMPLERS = {"sgd": "multinomial"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--widths", default="16,256", help="comma-separated widths (default: %(default)s)"
    )
    parser.add_argument(
        "--runs", type=int, default=512, help="runs per width (default: %(default)s)"
    )
    parser.add_argument(
        "--checks", type=int, default=5, help="chunks of 1000 steps (default: %(default)s)"
    )
    parser.add_argument(
        "--step-factor",
        type=float,
        default=0.5,
        help="step size of momentum and SGD, in multiples of the paper's (default: %(default)s)",
    )
    parser.add_argument(
        "--adam-step", type=float, default=1e-3, help="Adam's learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--data",
        default="six-points",
        choices=["six-points", "p-ex"],
        help="1-D data (default: %(default)s)",
    )
    parser.add_argument(
        "--fast-path",
        default="fixed_pattern",
        choices=["fixed_pattern", "propagator"],
        help="the path timed against the general path (default: %(default)s)",
    )
    parser.add_argument(
        "--optimizers",
        default="momentum,adam,sgd",
        help="comma-separated: gd, sgd (multinomial), momentum, adam (default: %(default)s)",
    )
    args = parser.parse_args()
    fast = args.fast_path
    print(f"{provenance.measured_line()}, float64")
    print(f"{args.data}, {args.runs} runs, {args.checks} x 1000 steps; neuron-steps/s\n")
    print(
        f"| optimizer | width | general s | {fast} s | general n-s/s | {fast} n-s/s "
        "| speed-up | pattern changed | statuses agree | max rel. diff a | same, a0 × (1+1e-15) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for width in map(int, args.widths.split(",")):
        spec = ExperimentSpec(widths=(width,), data=args.data)
        cell = Cell(width, 0.0, spec)
        indices = np.arange(args.runs)
        params, data, valid = initial_runs(cell, indices)
        paper = paper_step_sizes(params, data, jnp.asarray(0.0))
        for name in args.optimizers.split(","):
            sampler = SAMPLERS.get(name)
            h = args.adam_step if name == "adam" else args.step_factor * paper
            kwargs = dict(
                optimizer=name,
                sampler=sampler,
                key=noise_keys(cell, indices) if sampler else None,  # full batch: none
                check_every=1000,
                max_checks=args.checks,
                stop_on=(),
                **validation_arguments(spec, valid),
            )
            seconds, results = {}, {}
            for path in ("general", fast):
                simulate(params, data, h, path=path, **{**kwargs, "max_checks": 1})
                start = time.perf_counter()
                results[path] = simulate(params, data, h, path=path, **kwargs)
                seconds[path] = time.perf_counter() - start
            g, f = results["general"], results[fast]
            nudged = params._replace(a=params.a * (1 + 1e-15))
            g2 = simulate(nudged, data, h, path="general", **kwargs)
            agree = np.array_equal(g.status, f.status) and np.array_equal(
                g.pattern_change_step, f.pattern_change_step
            )
            work = width * args.runs * 1000 * args.checks
            left = int(np.sum(f.pattern_change_step >= 0))
            print(
                f"| {name} | {width} | {seconds['general']:.2f} | {seconds[fast]:.2f} "
                f"| {work / seconds['general']:.3g} | {work / seconds[fast]:.3g} "
                f"| {seconds['general'] / seconds[fast]:.1f} | {left}/{args.runs} "
                f"| {'yes' if agree else 'NO'} | {_relative(f, g):.1e} | {_relative(g2, g):.1e} |",
                flush=True,
            )


def _relative(result, reference) -> float:
    """Largest relative difference of the final a_i."""
    a, ref = np.asarray(result.params.a), np.asarray(reference.params.a)
    return float(np.max(np.abs(a - ref) / np.maximum(np.abs(ref), 1e-300)))


if __name__ == "__main__":
    main()
