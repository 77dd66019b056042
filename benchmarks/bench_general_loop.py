"""The general path's C loop alone (`native_general.general_chunk`), per optimizer.

One call of the loop on `--lanes` runs at each width, on one CPU device (one core), with
the paper's six points, Dirichlet weights, random He-like networks and step size `--h`,
float64: the marginal rate between `--steps` and 4 × `--steps` steps, in neuron-steps/s
(the fixed cost of a call, its copies and the records, cancels). GD and heavy ball take
full batches, SGD the paper's B = 16 multinomial draws, Adam both.

With `--lanes 1024` the arrays' rows are 8 KiB apart; before the loop stepped its
neurons in records (d5e1903), heavy ball and Adam ran about half as fast there as with
1000 lanes (4K aliasing: docs/performance-log.md, thirty-third session).

    PYTHONPATH=. python benchmarks/bench_general_loop.py [--widths 16,128] [--lanes 1024]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from gdrelu import native_general, provenance  # noqa: E402
from gdrelu.data import WeightedData  # noqa: E402
from gdrelu.engine.state import initial_state  # noqa: E402
from gdrelu.model import Params, Scaling  # noqa: E402
from gdrelu.optim import get_optimizer  # noqa: E402

OPTIMIZERS = (("gd", "full"), ("sgd", "multinomial"), ("momentum", "full"),
              ("adam", "multinomial"), ("adam", "full"))  # fmt: skip


def batch(width: int, lanes: int, step_size: float, seed: int = 0):
    """(params, data, step sizes, keys) of `lanes` runs at `width` on the six points."""
    rng = np.random.default_rng(seed)
    shape = (lanes, width)
    params = Params(
        rng.normal(size=shape) * np.sqrt(2),
        rng.normal(size=shape) * 0.3,
        rng.normal(size=shape) * np.sqrt(2 / width),
        np.zeros(lanes),
    )
    x = np.tile(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), (lanes, 1))
    data = WeightedData(x, rng.normal(size=x.shape), rng.dirichlet(np.ones(6), size=lanes))
    keys = rng.integers(0, 2**32, size=(lanes, 2), dtype=np.uint32)
    return params, data, np.full(lanes, step_size), keys


def marginal_rate(name: str, sampler: str, inputs, steps: int, repeats: int = 3) -> float:
    """Neuron-steps/s of the loop between `steps` and 4 × `steps` steps (each the best of
    `repeats` timings after a first call of the same shapes); nan where the difference is
    not positive (a loaded machine, or too few steps to tell)."""
    params, data, h, keys = inputs
    optimizer = get_optimizer(name, sampler=sampler)
    lanes, width = params.a.shape
    multipliers = Scaling(np.ones(lanes), np.ones(lanes))
    state = initial_state(params, h, keys, multipliers, optimizer=optimizer, data=data).state
    chunk = jax.jit(native_general.general_chunk, static_argnames="optimizer")
    seconds = []
    for count in (steps, 4 * steps):
        jax.block_until_ready(chunk(state, data, h, 0.0, count, optimizer=optimizer))
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(chunk(state, data, h, 0.0, count, optimizer=optimizer))
            timings.append(time.perf_counter() - start)
        seconds.append(min(timings))
    marginal = seconds[1] - seconds[0]
    return lanes * width * 3 * steps / marginal if marginal > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="16,128", help="comma-separated (default: %(default)s)")
    parser.add_argument("--lanes", type=int, default=1024, help="runs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000, help="default: %(default)s")
    parser.add_argument("--h", type=float, default=1e-4, help="step size (default: %(default)s)")
    args = parser.parse_args()
    print(f"# {provenance.measured_line()}; {args.lanes} lanes, one device, h = {args.h}")
    print("| optimizer | sampler | width | neuron-steps/s |")
    print("|---|---|---|---|")
    for width in map(int, args.widths.split(",")):
        inputs = batch(width, args.lanes, args.h)
        for name, sampler in OPTIMIZERS:
            rate = marginal_rate(name, sampler, inputs, args.steps)
            shown = "n/a" if rate != rate else f"{rate:.3g}"  # nan: too few steps to tell
            print(f"| {name} | {sampler} | {width} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
