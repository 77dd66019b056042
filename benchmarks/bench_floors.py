"""What issue 16's rate targets ask of this machine, against the pieces every step must do.

Side by side in one process, on the paper's 1-D workload (`bench_vs_numpy.workload`:
`paper_workload.build` with the "blocks" keys that its dated results were measured on),
`--runs` runs × `--steps` steps (one chunk, as the crossing protocol trains Adam: all its
runs cross in the first), warm, float64, the runs laid out as `gdrelu.simulate` trains
them on a CPU: sharded over every device, each device's runs in blocks of
`placement.BLOCK` that take all their steps before the next block starts (`in_blocks`),
compiled with the chunk program's CPU options. Rates in neuron-steps/s (width × steps ×
runs / s):

- numpy: `numpy_baseline.train_stochastic`, every run the whole budget, the faster of two
  calls (the issue's baseline); target: 50× it for SGD and heavy ball, 20× for Adam;
- adam update: Adam's update alone (the engine's `optax` transformation, the paper's
  β and ε, on the `Params` pytree) with a stand-in gradient of two flops per parameter;
- adam update + words: the same, fed by each step's B = 16 multinomial words drawn as the
  engine draws them (`optim.words_ahead`, `optim.scan_steps`), as the paper's Adam
  protocol (minibatches) needs;
- words: the multinomial words alone, summed (every SGD step of the paper's protocol
  draws them, on any path);
- gd propagator: `simulate` with GD and its stopping rules (the propagator; crossed runs
  stop, their last chunk redone on the general path), at most `--gd-steps` steps in
  checks of `--steps`, over the steps the runs trained, as `bench_vs_numpy --protocol
  crossing` counts them: the O(1) step that SGD's and heavy ball's steps extend (SGD adds
  the draw, heavy ball a 6×6 Φ_t).

A piece's rate is a ceiling for every step that contains it: where it is below the
target, that target cannot be met by a step that does this piece this way.

    PYTHONPATH=. python benchmarks/bench_floors.py [--widths 16,128] [--runs R]
        [--steps 1000] [--gd-steps 10000]

(Until 2026-12-05 the pieces ran with each device's runs in one block and the default
compile options, floors-cpu-2core-2026-12-03.md; docs/performance-log.md, twenty-seventh
session, compares the two layouts.)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import numpy_baseline  # noqa: E402
from bench_vs_numpy import workload  # noqa: E402

from gdrelu import simulate  # noqa: E402
from gdrelu.compiled import CPU_COMPILER_OPTIONS  # noqa: E402
from gdrelu.engine.placement import BLOCK, RUNS_AXIS, shard_map  # noqa: E402
from gdrelu.model import Params  # noqa: E402
from gdrelu.optim import get_optimizer, scan_steps, words_ahead  # noqa: E402

TARGET = {"sgd": 50, "momentum": 50, "adam": 20}
ADAM = get_optimizer("adam", sampler="multinomial")


def best_of(fn, *args, repeats: int = 3, warm_up: bool = True, **kwargs) -> float:
    """Seconds of fn(*args, **kwargs) to its results: the least of `repeats` calls, after
    one that compiles it (`warm_up`)."""
    if warm_up:
        jax.block_until_ready(fn(*args, **kwargs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args, **kwargs))
        times.append(time.perf_counter() - start)
    return min(times)


def runs_mesh() -> Mesh:
    """Every device along the engine's runs axis."""
    return Mesh(np.array(jax.devices()), (RUNS_AXIS,))


def sharded(tree):
    """`tree` with its leading runs axis split over the devices."""
    return jax.device_put(tree, NamedSharding(runs_mesh(), PartitionSpec(RUNS_AXIS)))


def in_blocks(one):
    """`one` (a run's arguments -> its result) over a runs-sharded batch, each device's
    runs `BLOCK` at a time, every step of a block before the next (the runs per device: a
    multiple of `BLOCK`), compiled as the chunk program is on a CPU."""

    def local(*args):
        blocks = jax.tree.map(lambda v: v.reshape(-1, BLOCK, *v.shape[1:]), args)
        done = jax.lax.map(lambda block: jax.vmap(one)(*block), blocks)
        return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), done)

    lanes = PartitionSpec(RUNS_AXIS)
    program = shard_map(local, mesh=runs_mesh(), in_specs=lanes, out_specs=lanes)
    return jax.jit(program, compiler_options=CPU_COMPILER_OPTIONS)


def _whole_blocks(text: str) -> int:
    """A run count that fills whole blocks on every device (`in_blocks`)."""
    runs, lanes = int(text), BLOCK * jax.device_count()
    if runs <= 0 or runs % lanes:
        raise argparse.ArgumentTypeError(f"{runs} is not a positive multiple of {lanes}")
    return runs


def add_runs_argument(parser: argparse.ArgumentParser) -> None:
    """--runs: runs per width, whole blocks on every device (about 1000 by default)."""
    lanes = BLOCK * jax.device_count()
    parser.add_argument(
        "--runs",
        type=_whole_blocks,
        default=-(-1000 // lanes) * lanes,
        help=f"runs per width, a multiple of {lanes} (BLOCK × devices) (default: %(default)s)",
    )


def adam_run(num_steps: int, with_words: bool):
    """(params, step size, key data) of one run -> its params after `num_steps` Adam
    updates whose gradient is 1e-3 p (+ a multiple of the step's words' sum
    `with_words`)."""

    def one(params, step_size, key_data):
        transformation = ADAM.transformation(step_size)
        words_for = words_ahead(ADAM, key_data, jnp.zeros((), jnp.int32)) if with_words else None

        def body(carry, t, words):
            p, opt = carry
            noise = 0.0 if words is None else jnp.sum(words).astype(p.c.dtype) * 1e-12
            grads = jax.tree.map(lambda v: 1e-3 * v + noise, p)
            updates, opt = transformation.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), None

        carry = (params, transformation.init(params))
        return scan_steps(body, carry, num_steps, 1, words_for)[0]

    return one


def words_run(num_steps: int):
    """Key data of one run -> the sum of its multinomial words over `num_steps` steps."""

    def one(key_data):
        words_for = words_ahead(ADAM, key_data, jnp.zeros((), jnp.int32))

        def body(total, t, words):
            return total + jnp.sum(words, dtype=total.dtype), None

        return scan_steps(body, jnp.zeros((), jnp.uint32), num_steps, 1, words_for)

    return one


def width_rows(width: int, runs: int, steps: int, gd_steps: int) -> None:
    """Print the table's rows of one width."""

    def row(piece: str, seconds: float, bounds: str, run_steps: float = steps) -> None:
        rate = width * runs * run_steps / seconds
        print(f"| {width} | {piece} | {rate:.3g} | {bounds} |", flush=True)

    params, data, step_sizes, keys = workload(width, runs)
    numpy_run = functools.partial(numpy_baseline.train_stochastic, *params, *data, step_sizes)
    for name, factor in TARGET.items():
        seconds = best_of(numpy_run, optimizer=name, steps=steps, repeats=2, warm_up=False)
        row(f"numpy {name}", seconds, f"target {factor * width * runs * steps / seconds:.3g}")
    key_data = sharded(jax.random.key_data(keys))
    batch = sharded((Params(*map(jnp.asarray, params)), jnp.asarray(step_sizes)))
    for with_words in (False, True):
        piece = "adam update" + (" + words" if with_words else "")
        row(piece, best_of(in_blocks(adam_run(steps, with_words)), *batch, key_data), "adam")
    row("words", best_of(in_blocks(words_run(steps)), key_data), "sgd")
    gd = functools.partial(simulate, params, data, step_sizes)
    rules = dict(check_every=steps, max_checks=gd_steps // steps)
    trained = int(np.sum(gd(**rules).stop_step))  # and compiled: no warm-up call
    seconds = best_of(lambda: gd(**rules).stop_step, warm_up=False)
    row("gd propagator (simulate)", seconds, "sgd, momentum", trained / runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--widths", default="16,128", help="comma-separated widths (default: %(default)s)"
    )
    add_runs_argument(parser)
    parser.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="steps per run and per GD check (default: %(default)s)",
    )
    parser.add_argument(
        "--gd-steps",
        type=int,
        default=10000,
        help="most GD steps per run (propagator row) (default: %(default)s)",
    )
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores, {jax.device_count()} devices, jax {jax.__version__}")
    print("| width | piece | neuron-steps/s | target it bounds |")
    print("|---:|---|---:|---|")
    for width in map(int, args.widths.split(",")):
        width_rows(width, args.runs, args.steps, args.gd_steps)


if __name__ == "__main__":
    main()
