"""Throughput of the gdrelu engine against the plain NumPy baseline, in neuron-steps/s.

For each width, one workload (He init, six-point data with Δ = 0, multinomial weights with
N = n², the paper's step size) is trained for a fixed number of GD steps, with the stopping
checks every 1000 steps and no run dropped, by:
- `numpy_baseline.simulate_numpy(..., early_exit=False)` (float64), timed once;
- `gdrelu.engine._chunk` with path="general" and path="fixed_pattern", after one warm-up
  call (compilation excluded), median of `--repeats` timings.
Throughput = width × steps × runs / seconds.

    PYTHONPATH=. python benchmarks/bench_engine.py [--widths 16 256 2048] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

try:
    from benchmarks import numpy_baseline
except ImportError:  # run as a script without the repository root on sys.path
    import numpy_baseline

CHECK_EVERY = 1000
PATHS = ("general", "fixed_pattern")


def workload(width: int, runs: int, seed: int = 0):
    """Float64 initial (params, data, step size) of `runs` runs, each with a leading runs axis."""
    from gdrelu import theory
    from gdrelu.data import paper_data
    from gdrelu.init import he_init

    keys = jax.random.split(jax.random.key(seed), (runs, 2))
    params = jax.vmap(lambda k: he_init(width, key=k, dtype=jnp.float64))(keys[:, 0])
    data = jax.vmap(lambda k: paper_data(k, 0.0, width**2, jnp.float64))(keys[:, 1])
    return params, data, theory.paper_step_size(params, data)


def time_numpy(params, data, step_size, steps: int) -> float:
    """Seconds for `steps` GD steps plus the checks every 1000 steps, no early exit."""
    args = [np.asarray(v, np.float64) for v in (*params, *data, step_size)]
    start = time.perf_counter()
    numpy_baseline.simulate_numpy(
        *args, check_every=CHECK_EVERY, max_checks=steps // CHECK_EVERY, early_exit=False
    )
    return time.perf_counter() - start


def time_engine(params, data, step_size, steps: int, path: str, dtype, repeats: int) -> float:
    """Median seconds of `steps // 1000` engine chunks (steps plus checks), compile excluded."""
    from gdrelu import engine
    from gdrelu.data import WeightedData
    from gdrelu.model import Params, max_abs_kink

    params = Params(*(jnp.asarray(v, dtype) for v in params))
    data = WeightedData(*(jnp.asarray(v, dtype) for v in data))
    runs = params.c.shape[0]
    inputs = engine._CheckInputs(
        data=data, step_size=jnp.asarray(step_size, dtype), validation_weights=data.weights
    )
    state0 = engine.RunState(
        params=params,
        max_kink=jax.vmap(max_abs_kink)(params),
        best_val=jnp.full((runs,), jnp.inf, dtype),
        stale_checks=jnp.zeros((runs,), jnp.int32),
    )
    scalars = (jnp.asarray(0.0, dtype), jnp.asarray(1e-8, dtype), jnp.asarray(10))

    def run(chunks):
        state = state0
        for _ in range(chunks):
            state, code, loss = engine._chunk(
                state,
                inputs,
                *scalars,
                check_every=CHECK_EVERY,
                rules=engine.STOP_RULES,
                path=path,
            )
            np.asarray(code)  # the host reads the codes after every chunk, as simulate does
        jax.block_until_ready((state, loss))

    run(1)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps // CHECK_EVERY)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_width(width: int, runs: int, steps: int, dtype, repeats: int) -> dict:
    """All measurements of one width, as a result row."""
    params, data, step_size = workload(width, runs)
    work = width * steps * runs
    row = {"width": width, "runs": runs, "steps": steps}
    row["numpy_s"] = time_numpy(params, data, step_size, steps)
    row["numpy"] = work / row["numpy_s"]
    for path in PATHS:
        row[f"{path}_s"] = time_engine(params, data, step_size, steps, path, dtype, repeats)
        row[path] = work / row[f"{path}_s"]
        row[f"{path}/numpy"] = row[path] / row["numpy"]
    return row


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table (throughputs in neuron-steps/s)."""
    lines = [
        "| width | runs | numpy | general | fixed_pattern | general/numpy | fixed/numpy |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} | {r['runs']} | {r['numpy']:.3g} | {r['general']:.3g} "
            f"| {r['fixed_pattern']:.3g} | {r['general/numpy']:.2f} "
            f"| {r['fixed_pattern/numpy']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 256, 2048])
    parser.add_argument("--steps", type=int, default=2000, help="GD steps, a multiple of 1000")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per width (default max(8, 2**15 // width))"
    )
    parser.add_argument("--repeats", type=int, default=3, help="engine timings per median")
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="engine dtype (the NumPy baseline is always float64)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.steps < CHECK_EVERY or args.steps % CHECK_EVERY:
        parser.error(f"--steps must be a positive multiple of {CHECK_EVERY}")

    jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    rows = []
    for width in args.widths:
        runs = args.runs or max(8, 2**15 // width)
        rows.append(bench_width(width, runs, args.steps, dtype, args.repeats))
        print(f"width {width}: done", file=sys.stderr, flush=True)
    print(
        f"engine dtype {args.dtype}, {args.steps} steps, device {jax.devices()[0]}, "
        f"{os.cpu_count()} CPUs; throughput in neuron-steps/s\n"
    )
    print(markdown_table(rows))
    if args.json:
        meta = {
            "argv": sys.argv,
            "dtype": args.dtype,
            "steps": args.steps,
            "jax": jax.__version__,
            "numpy": np.__version__,
            "device": str(jax.devices()[0]),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
