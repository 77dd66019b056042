"""The least time the default `gdrelu compare`'s Adam units can take on this machine.

`gdrelu compare` trains every run of its default cells (`ExperimentSpec`'s widths, Δ and
runs) for the whole budget (check_every × max_checks steps), and Adam takes the general
path: O(n) per step for its update, O(n·m) for the full-batch gradient. Side by side at
each width, on the paper's workload (`bench_vs_numpy.workload`), `--runs` runs ×
`--steps` steps, warm, float64, laid out as the engine trains them on a CPU
(`bench_floors.in_blocks`: each device's runs in blocks of `placement.BLOCK` that take all
their steps before the next block starts, so that a block's state stays in cache):

- adam update: the engine's Adam (optax, the paper's β and ε) on the `Params` pytree with
  a stand-in gradient of two flops per parameter (`bench_floors.adam_run`): a piece
  every Adam step contains;
- gradient pass: θ ← θ - h ∇L(θ) with the full-batch gradient of the six points
  (`engine.paths.gd_step`, the general path's gradient), nothing else: the other such piece.

Each piece's rate bounds the Adam units from below: compare's Adam neuron-steps at width
n over the piece's rate at n, summed over the widths. Doing both pieces cannot take less
than either; the table also gives their sum, what the two take one after the other.
Rates in neuron-steps/s, bounds in seconds.

    PYTHONPATH=. python benchmarks/bench_compare_floor.py [--runs R] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_floors import adam_run, add_runs_argument, best_of, in_blocks, sharded  # noqa: E402
from bench_vs_numpy import workload  # noqa: E402

from gdrelu.data import WeightedData  # noqa: E402
from gdrelu.engine.paths import gd_step  # noqa: E402
from gdrelu.model import Params  # noqa: E402
from gdrelu.optim import scan_steps  # noqa: E402
from gdrelu.spec import ExperimentSpec  # noqa: E402


def gradient_run(num_steps: int):
    """(params, data, step size) of one run -> its params after `num_steps` GD steps on
    the full-batch gradient (`engine.paths.gd_step`): the general path's pass over the
    points, alone."""

    def one(params, data, step_size):
        step = lambda p, t, words: (gd_step(p, data, step_size), None)  # noqa: E731
        return scan_steps(step, params, num_steps)

    return one


def rates(width: int, runs: int, steps: int) -> dict[str, float]:
    """Neuron-steps/s of each piece at `width`."""
    params, data, step_sizes, keys = workload(width, runs)
    params = sharded(Params(*map(jnp.asarray, params)))
    step_sizes, key_data = sharded(jnp.asarray(step_sizes)), sharded(jax.random.key_data(keys))
    points = sharded(WeightedData(*map(jnp.asarray, data)))
    work = width * runs * steps
    update = best_of(in_blocks(adam_run(steps, False)), params, step_sizes, key_data)
    gradient = best_of(in_blocks(gradient_run(steps)), params, points, step_sizes)
    return {"adam update": work / update, "gradient pass": work / gradient}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runs_argument(parser)
    parser.add_argument(
        "--steps", type=int, default=1000, help="steps per run (default: %(default)s)"
    )
    args = parser.parse_args()
    spec = ExperimentSpec()
    budget = spec.check_every * spec.max_checks
    print(f"# {os.cpu_count()} cores, {jax.device_count()} devices, jax {jax.__version__}; "
          f"compare's Adam: widths {spec.widths}, {len(spec.deltas)} Δ, {spec.runs} runs, "
          f"{budget} steps")  # fmt: skip
    print("| width | adam update | gradient pass | least s: update | gradient | both |")
    print("|---:|---:|---:|---:|---:|---:|")
    total = [0.0, 0.0]
    for width in spec.widths:
        rate = rates(width, args.runs, args.steps)
        work = len(spec.deltas) * spec.runs * width * budget
        least = [work / rate["adam update"], work / rate["gradient pass"]]
        total = [t + s for t, s in zip(total, least, strict=True)]
        print(f"| {width} | {rate['adam update']:.3g} | {rate['gradient pass']:.3g} | "
              f"{least[0]:.0f} | {least[1]:.0f} | {sum(least):.0f} |", flush=True)  # fmt: skip
    print(f"| all | | | {total[0]:.0f} | {total[1]:.0f} | {sum(total):.0f} |")


if __name__ == "__main__":
    main()
