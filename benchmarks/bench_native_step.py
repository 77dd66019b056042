"""The propagator's GD or heavy-ball steps in XLA's loop against the C loop's (CPU).

XLA's CPU backend runs the propagator's step as about 14 operations per iteration of its
loop (11 fusions and 3 copies, for a block of 64 runs). `gdrelu/native_src/propagator_gd.c`
(kernel="native", `gdrelu.native`) does the same arithmetic in the same order
(`gdrelu.kernel.lane_step`) for eight runs per vector, every step of a chunk in registers.
On one CPU device and one core, this benchmark builds `--runs` runs of width `--width` on
the paper's data (`paper_workload.build`: He init, Δ = 0, the paper's step size) as the
propagator's state. It
takes `--steps` full-batch steps of `--optimizer` (GD, or heavy ball with μ = 0.9 from
v = 0 at a tenth of the step size: z_i = (θ_i, v_i), D = 6) with
`propagator.deferred_steps` (jitted, XLA's loop, blocks of `--block`) and with the C loop
called directly (no callback), alternating `--repeats` times. It prints run-steps/s for
each, and how far the C results are from XLA's (Φ_t, c, the largest kink, the exact
flags). Needs a C compiler (gcc or clang; $CC).

    PYTHONPATH=. python benchmarks/bench_native_step.py [--runs 1024] [--width 16]
        [--steps 2000] [--block 64] [--repeats 3] [--optimizer gd|momentum]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import paper_workload  # noqa: E402

from gdrelu import native, propagator  # noqa: E402
from gdrelu.fastpath import side_moments  # noqa: E402


def workload(runs: int, width: int):
    """(params, deferred state, side moments, step sizes) of `runs` runs at `width`
    (`paper_workload.build`, float64, seed 0)."""
    params, data, step_size, _ = paper_workload.build(width, runs)
    state = propagator.deferred(params, *jax.vmap(propagator.regular_neurons)(params))
    return params, state, jax.vmap(side_moments)(data), step_size


def native_arrays(params, state, moments, h, optimizer, velocity):
    """`native.host_arrays` of every run, as `deferred_steps`' loop starts them."""
    carry, fixed = propagator._chunk_start(params, state, moments, h, velocity, None, optimizer)
    grams, plus, real, side, step, _, _ = fixed
    start = [np.asarray(v) for v in carry[: 6 if velocity else 5]]
    return native.host_arrays(start, grams, plus, real, side, step, start[1].shape[0])


def native_steps(start, constant, steps: int, momentum):
    """(seconds, (phi, c, tracked, kink, moved[, c_velocity]) after `steps` steps) of the
    native loop."""
    out = [v.copy() for v in start]
    begin = time.perf_counter()
    native.run_loop(out, constant, 0.0, steps, momentum)
    return time.perf_counter() - begin, out


def largest_relative(mine, theirs) -> float:
    """max |mine - theirs| / max |theirs|."""
    return float(np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=1024,
        help="runs, a multiple of 8 (the C loop's lanes) and of --block (default: %(default)s)",
    )
    parser.add_argument("--width", type=int, default=16, help="neurons n (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=2000, help="steps per timing (default: %(default)s)"
    )
    parser.add_argument(
        "--block", type=int, default=64, help="XLA's runs per block (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timings of each loop, alternating (default: %(default)s)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("gd", "momentum"),
        default="gd",
        help="GD, or heavy ball with μ = 0.9 (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.runs % native.LANES or args.runs % min(args.block, args.runs) or args.repeats < 1:
        lanes = native.LANES
        parser.error(f"--runs must be a multiple of {lanes} and of --block; --repeats positive")
    params, state, moments, h = workload(args.runs, args.width)
    optimizer = propagator.get_optimizer(args.optimizer)
    momentum = propagator.HEAVY_BALL[args.optimizer]
    velocity = None
    if momentum is not None:
        velocity = jax.tree.map(jnp.zeros_like, params)
        regular = jax.vmap(propagator.regular_neurons)(params)
        state, h = propagator.deferred(params, *regular, velocity), 0.1 * h
    start, constant = native_arrays(params, state, moments, h, optimizer, velocity)
    xla = jax.jit(
        propagator.deferred_steps, static_argnums=5, static_argnames=("block", "optimizer")
    )

    def xla_steps():
        begin = time.perf_counter()
        out = xla(
            params,
            state,
            moments,
            h,
            0.0,
            args.steps,
            block=args.block,
            optimizer=optimizer,
            velocity=velocity,
        )
        out = jax.block_until_ready(out)
        return time.perf_counter() - begin, out

    xla_steps()  # compiles
    try:
        native.library()
    except native.NativeUnavailable as error:
        print(f"bench_native_step: {error}", file=sys.stderr)
        sys.exit(2)
    rates = {"xla": [], "native": []}
    for _ in range(args.repeats):
        seconds, ours = xla_steps()
        rates["xla"].append(args.runs * args.steps / seconds)
        seconds, theirs = native_steps(start, constant, args.steps, momentum)
        rates["native"].append(args.runs * args.steps / seconds)
    phi, c, _, kink, moved = theirs[:5]
    runs, size = args.runs, state.phi.shape[-1]
    differences = {
        "Φ_t": largest_relative(
            phi, np.asarray(ours.state.phi).transpose(1, 2, 3, 0).reshape(2 * size * size, runs)
        ),
        "c": largest_relative(c, np.asarray(ours.c)),
        "kink": largest_relative(kink, np.asarray(ours.kink)),
    }
    exact = np.asarray(state.fits) & (moved < 0.5)
    ratios = np.divide(rates["native"], rates["xla"])
    print(
        f"# {os.cpu_count()} cores, jax {jax.__version__}, one CPU device, {runs} runs of "
        f"width {args.width}, {args.steps} {args.optimizer} steps, XLA blocks of {args.block}; "
        "run-steps/s"
    )
    print("| XLA loop | native loop | ratio | rounds | largest difference | exact flags equal |")
    print("|---:|---:|---:|---:|---|---:|")
    print(
        f"| {np.median(rates['xla']):.3g} | {np.median(rates['native']):.3g} "
        f"| {np.median(rates['native']) / np.median(rates['xla']):.1f}× "
        f"| {ratios.min():.1f}-{ratios.max():.1f}× "
        f"| {', '.join(f'{k} {v:.1e}' for k, v in differences.items())} "
        f"| {int(np.sum(exact == np.asarray(ours.exact)))}/{runs} |"
    )


if __name__ == "__main__":
    main()
