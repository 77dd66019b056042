"""`simulate` with the propagator's kernels side by side: the C loop against XLA's (CPU).

`--runs` runs of width `--width` on the paper's workload (`paper_workload.build`: He init,
Δ = 0, N = n² multinomial weights, the paper's step size, float64, seed 0; one CPU device
per core), trained by
`--optimizer` (GD with GD's rules; full-batch heavy ball, or SGD with the paper's B = 16
multinomial draws per step, with the crossing rule) for
`--checks` checks of `--check-every` steps. Each round calls `simulate` once with each of
`--kernels`, alternating, so that both see the same moments of a machine whose speed
drifts; the first round compiles. Prints each kernel's seconds per round and checks that
the kernels' statuses and stop steps agree.

    PYTHONPATH=. python benchmarks/bench_kernels.py [--runs 1000] [--width 16]
        [--optimizer gd|momentum|sgd] [--checks 10] [--check-every 1000] [--rounds 4]
        [--kernels native,xla]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import paper_workload  # noqa: E402

from gdrelu import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs (default: %(default)s)")
    parser.add_argument(
        "--width", type=int, default=16, help="neurons n; N = n² draws (default: %(default)s)"
    )
    parser.add_argument(
        "--optimizer",
        choices=("gd", "momentum", "sgd"),
        default="gd",
        help="GD, heavy ball, or SGD with B = 16 multinomial draws (default: %(default)s)",
    )
    parser.add_argument(
        "--checks", type=int, default=10, help="checks per call (default: %(default)s)"
    )
    parser.add_argument(
        "--check-every", type=int, default=1000, help="steps per check (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="calls per kernel, the first compiling (default: %(default)s)",
    )
    parser.add_argument(
        "--kernels", default="native,xla", help="comma-separated kernels (default: %(default)s)"
    )
    args = parser.parse_args()
    kernels = args.kernels.split(",")
    params, data, step, noise = paper_workload.build(args.width, args.runs)  # seed 0
    rules = {} if args.optimizer == "gd" else {"stop_on": ("crossed",)}
    if args.optimizer == "sgd":
        rules["key"] = noise
    kwargs = dict(optimizer=args.optimizer, check_every=args.check_every, **rules)
    seconds = {kernel: [] for kernel in kernels}
    results = {}
    for _ in range(args.rounds):
        for kernel in kernels:
            begin = time.perf_counter()
            results[kernel] = simulate(
                params, data, step, max_checks=args.checks, kernel=kernel, **kwargs
            )
            seconds[kernel].append(time.perf_counter() - begin)
    first = results[kernels[0]]
    for kernel in kernels[1:]:
        for field in ("status", "stop_step"):
            np.testing.assert_array_equal(getattr(results[kernel], field), getattr(first, field))
    print(
        f"# {os.cpu_count()} cores, jax {jax.__version__}, {args.runs} runs of width "
        f"{args.width}, {args.optimizer}, {args.checks} checks of {args.check_every} steps; "
        "statuses and stop steps equal"
    )
    print("| kernel | first round (compiles) | later rounds | median |")
    print("|---|---:|---|---:|")
    for kernel, times in seconds.items():
        later = times[1:] or times
        print(
            f"| {kernel} | {times[0]:.2f} s | {min(later):.2f}-{max(later):.2f} s "
            f"| {np.median(later):.3f} s |"
        )


if __name__ == "__main__":
    main()
