"""Throughput of the gdrelu engine's GD paths against the plain NumPy baseline.

For each (width, run count, dtype), one workload (`paper_workload.build`: He init,
six-point data with Δ = 0, multinomial weights with N = n², the paper's step size; drawn
in float64, seed 0, then cast to the dtype) is trained for `--steps` GD steps
with the stopping checks every 1000 steps and no run dropped, by
- `numpy_baseline.simulate_numpy(..., early_exit=False)` (always float64), timed once;
- `gdrelu.engine.chunk_runner` for the paths general, fixed_pattern and propagator (all
  devices: one CPU device per core), after one warm-up call: `first` is that call
  (compile + run), the throughput is the median of `--repeats` timings.
Throughput = width × steps × runs / s (neuron-steps/s). `check %` is the share of a
propagator chunk spent outside its 1000 GD steps (setup, bookkeeping, checks: a chunk of
1 step against one of 1000); `rules %` the part of it the stopping rules take (crossed,
degenerate and the certificate with its eigendecompositions: a 1-step chunk with them
less one without). `general GFLOP/s` and `GB/s`: XLA's cost model of one GD step of
the batch (flops, bytes accessed) times the steps, over the general path's time, the
achieved rates to set against the device's peak. On an accelerator, `--neurons 4194304`
gives the width sweep enough runs to fill it.

    PYTHONPATH=. python benchmarks/bench_engine.py [--widths ...] [--runs ...] [--json P]
        [--plot P] [--neurons N] [--unroll U] [--no-numpy]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

import jax

jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gdrelu import provenance  # noqa: E402

try:
    from benchmarks import numpy_baseline, paper_workload
except ImportError:  # run as a script without the repository root on sys.path
    import numpy_baseline
    import paper_workload

CHECK_EVERY = 1000
PATHS = ("general", "fixed_pattern", "propagator")


def time_numpy(params, data, step_size, steps: int) -> float:
    """Seconds for `steps` GD steps plus the checks every 1000 steps, no early exit."""
    args = [np.asarray(v, np.float64) for v in (*params, *data, step_size)]
    start = time.perf_counter()
    numpy_baseline.simulate_numpy(
        *args, check_every=CHECK_EVERY, max_checks=steps // CHECK_EVERY, early_exit=False
    )
    return time.perf_counter() - start


def time_engine(
    params,
    data,
    step_size,
    steps,
    path,
    dtype,
    repeats,
    check_every=CHECK_EVERY,
    unroll=None,
    rules=None,
):
    """(first call: compile + one chunk, median seconds of `steps // check_every` chunks)."""
    from gdrelu import engine
    from gdrelu.data import WeightedData
    from gdrelu.model import Params

    params = Params(*(jnp.asarray(v, dtype) for v in params))
    data = WeightedData(*(jnp.asarray(v, dtype) for v in data))
    run = engine.chunk_runner(
        params,
        data,
        jnp.asarray(step_size, dtype),
        path=path,
        check_every=check_every,
        unroll=unroll,
        rules=engine.STOP_RULES if rules is None else rules,
    )
    start = time.perf_counter()
    run(1)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(max(1, steps // check_every))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def step_cost(params, data, step_size, dtype) -> tuple[float, float]:
    """XLA's cost model of one GD step of every run on the general path (the body of its
    loop): (floating-point operations, bytes read and written)."""
    from gdrelu import engine
    from gdrelu.data import WeightedData
    from gdrelu.model import Params

    params = Params(*(jnp.asarray(v, dtype) for v in params))
    data = WeightedData(*(jnp.asarray(v, dtype) for v in data))
    step = jax.jit(jax.vmap(engine.gd_step))
    cost = step.lower(params, data, jnp.asarray(step_size, dtype)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def bench(
    width: int,
    runs: int,
    steps: int,
    dtype: str,
    repeats: int,
    numpy_too: bool,
    paths=PATHS,
    unroll=None,
) -> dict:
    """All measurements of one (width, runs, dtype), as a result row."""
    params, data, step_size, _ = paper_workload.build(width, runs)  # float64, seed 0
    work = width * steps * runs
    row = {"width": width, "runs": runs, "steps": steps, "dtype": dtype}
    if numpy_too:
        row["numpy_s"] = time_numpy(params, data, step_size, steps)
        row["numpy"] = work / row["numpy_s"]
    for path in paths:
        if path != "propagator" and width * runs * steps > 2**33:
            continue  # the O(n) and O(nm) paths would take minutes here
        first, seconds = time_engine(
            params, data, step_size, steps, path, dtype, repeats, unroll=unroll
        )
        row[f"{path}_first_s"], row[f"{path}_s"] = first, seconds
        row[path] = work / seconds
        if numpy_too:
            row[f"{path}/numpy"] = row[path] / row["numpy"]
    if row.get("general_s"):
        flops, moved = step_cost(params, data, step_size, dtype)
        chunks = max(1, steps // CHECK_EVERY) * CHECK_EVERY
        row["general_flop_rate"] = flops * chunks / row["general_s"]
        row["general_byte_rate"] = moved * chunks / row["general_s"]
    if "propagator_s" not in row:  # the shares below are the propagator's
        return row
    chunk = row["propagator_s"] / max(1, steps // CHECK_EVERY)
    # 1-step chunks are short and noisy: many repeats
    one = functools.partial(time_engine, params, data, step_size, 1, "propagator", dtype)
    _, one_step = one(max(repeats, 21), 1, unroll=unroll)
    _, no_rules = one(max(repeats, 21), 1, unroll=unroll, rules=())
    row["check_share"] = one_step / chunk
    row["rules_share"] = max(0.0, one_step - no_rules) / chunk
    return row


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table (throughputs in neuron-steps/s; ratios to NumPy)."""
    head = "| width | runs | dtype | numpy | " + " | ".join(PATHS)
    head += " | " + " | ".join(f"{p}/numpy" for p in PATHS)
    head += " | propagator first (s) | check % | rules % |"
    head += " general GFLOP/s | general GB/s |"
    lines = [head, "|" + "---:|" * (head.count("|") - 1)]
    for r in rows:
        cells = [str(r["width"]), str(r["runs"]), r["dtype"], _fmt(r.get("numpy"))]
        cells += [_fmt(r.get(p)) for p in PATHS]
        cells += [_fmt(r.get(f"{p}/numpy"), ".1f") for p in PATHS]
        cells += [_fmt(r.get("propagator_first_s"), ".2f")]
        cells += [_fmt(_percent(r.get(k)), ".1f") for k in ("check_share", "rules_share")]
        cells += [_fmt(r.get(f"general_{k}_rate", 0) / 1e9 or None) for k in ("flop", "byte")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _progress(row: dict) -> str:
    """One finished row, for the log (a long benchmark may be stopped before the table)."""
    rates = ", ".join(f"{p} {_fmt(row.get(p))}" for p in ("numpy", *PATHS) if p in row)
    cost = ""
    if "general_flop_rate" in row:
        cost = (
            f"; general path at {row['general_flop_rate'] / 1e9:.3g} GFLOP/s and "
            f"{row['general_byte_rate'] / 1e9:.3g} GB/s (XLA's cost model of a step)"
        )
    shares = ""
    if "check_share" in row:
        shares = f"; check {100 * row['check_share']:.1f}% (rules {100 * row['rules_share']:.1f}%)"
    return (
        f"{row['dtype']} width {row['width']} runs {row['runs']}: {rates} neuron-steps/s"
        f"{shares}{cost}"
    )


def _percent(share):
    return None if share is None else 100 * share


def _fmt(value, spec=".3g") -> str:
    return "-" if value is None else format(value, spec)


def plot(rows: list[dict], path: str) -> None:
    """Seconds per run-step against width (left) and against run count (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    default = [r for r in rows if r["dtype"] == "float64" and r.get("sweep") == "width"]
    counts = [r for r in rows if r["dtype"] == "float64" and r.get("sweep") == "runs"]
    for ax, part, key, label in (
        (axes[0], default, "width", "width n"),
        (axes[1], counts, "runs", f"runs (width {counts[0]['width'] if counts else '-'})"),
    ):
        for name in ("numpy", *PATHS):
            pts = [(r[key], r["width"] / r[name]) for r in part if r.get(name)]
            if pts:
                ax.loglog(*zip(*pts, strict=False), "o-", label=name, base=2)
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per run-step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"gdrelu GD paths vs NumPy ({platform.machine()}, {os.cpu_count()} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[16, 64, 256, 1024, 2048],
        help="widths n of the width sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        nargs="*",
        default=[64, 256, 1024, 4096],
        help="run counts of the run sweep at width 256; --runs alone: none (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="GD steps per timing, a multiple of 1000 (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="engine timings per median (default: %(default)s)"
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float64", "float32"],
        help="dtypes of the width sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=list(PATHS),
        choices=PATHS,
        help="engine paths timed (default: %(default)s)",
    )
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy baseline")
    parser.add_argument(
        "--neurons",
        type=int,
        default=2**15,
        help="runs × width of each width-sweep row, at least 64 runs (default: %(default)s)",
    )
    parser.add_argument(
        "--unroll", type=int, help="GD steps per loop iteration (default: the device's)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also plot cost against width and runs")
    args = parser.parse_args(argv)
    if args.steps < CHECK_EVERY or args.steps % CHECK_EVERY:
        parser.error(f"--steps must be a positive multiple of {CHECK_EVERY}")

    workloads = [  # as many neurons per width: runs = max(64, neurons / n)
        (width, max(64, args.neurons // width), dtype, "width")
        for dtype in args.dtypes
        for width in args.widths
    ] + [(256, runs, "float64", "runs") for runs in args.runs]
    rows = []
    for width, runs, dtype, sweep in workloads:
        row = bench(
            width,
            runs,
            args.steps,
            dtype,
            args.repeats,
            not args.no_numpy,
            args.paths,
            args.unroll,
        )
        rows.append({**row, "sweep": sweep})
        print(_progress(row), file=sys.stderr, flush=True)
    print(f"{args.steps} steps, {provenance.measured_line()}; neuron-steps/s; NumPy is float64\n")
    print(markdown_table(rows))
    if args.json:
        meta = {"argv": sys.argv, "steps": args.steps, "numpy": np.__version__}
        meta.update(provenance.measured_on())
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
