"""Throughput of the general path on the star experiment's workload, width by width.

The workload is that of `gdrelu run --data star --step-size param-norm --step-factor 2
--dtype float32` (and of `gdrelu reproduce --only star`): 2-D star data (33 points,
N = n² multinomial weights per run), He init with zero biases, GD at h = 2/‖θ‖² at
initialization, float32, no stopping rule (every run trains its whole budget). Each width's
runs are built as the runner builds a batch (`runner.batch_inputs`) and trained by `simulate`
with the spec's arguments, on one XLA CPU device per core as `gdrelu run` sets up.

Per width: one call of `simulate` that compiles (or loads from the compilation cache),
then `--repeats` timed calls of one chunk of S steps and of two; the difference of the
fastest of each is the time of S steps alone, without the fixed cost of a call (the
initial state, the final classification). The fastest, not the median: other processes
sharing the cores only ever slow a call down. Throughput is given as run-steps/s and
neuron-data-steps/s (width × 33 points × steps × runs / s), with the seconds per run-step;
a least-squares fit of seconds per run-step ≈ c0 + c1·n·m (c0 ≥ 0, absolute errors, so
the wide networks that hold most of the work weigh most) closes the table.

The default runs fill one engine block (64 runs) on each CPU device: fewer runs would
still be computed as whole blocks (`engine.blocking_for`), and so report less than the
machine does.

    PYTHONPATH=. python benchmarks/bench_star.py [--widths 128,256,...,8192] [--runs 128]
        [--work 2e7] [--repeats 3] [--json P]

`--work` sets S per width: `--work` run-neuron-steps / (runs × width), rounded to a
multiple of 10 and at least 20 (the same arithmetic at every width).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--widths",
        default="128,256,512,1024,2048,4096,8192",
        help="comma-separated widths (default: %(default)s)",
    )
    parser.add_argument(
        "--runs", type=int, default=128, help="runs per width (default: %(default)s)"
    )
    parser.add_argument(
        "--work",
        type=float,
        default=2e7,
        help="run-neuron-steps per chunk, which sets its steps S per width (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls of one and of two chunks (default: %(default)s)",
    )
    parser.add_argument("--json", default=None, help="also write the rows and fit as JSON here")
    args = parser.parse_args()

    from gdrelu.cli import backends, default_cache_dir

    backends.enable_x64()
    # one CPU device per core and the compilation cache ($GDRELU_CACHE_DIR), as gdrelu run
    backends.prepare(every_core=True, cache_dir=default_cache_dir())
    import jax
    import numpy as np

    from gdrelu import provenance, simulate
    from gdrelu.buckets import shared_width
    from gdrelu.cells import Cell
    from gdrelu.runner import batch_inputs
    from gdrelu.spec import ExperimentSpec

    widths = [int(w) for w in args.widths.split(",")]
    print(
        f"{provenance.measured_line()}, load average {os.getloadavg()[0]:.2f}, float32; "
        f"star data, {args.runs} runs, param-norm step × 2, no stopping\n"
    )
    rows = []
    for width in widths:
        steps = max(20, int(round(args.work / (args.runs * width), -1)))
        spec = ExperimentSpec(
            data="star",
            widths=(width,),
            deltas=(0.0,),
            runs=args.runs,
            step_size="param-norm",
            step_factor=2.0,
            dtype="float32",
            stop_on=(),
            check_every=steps,
            max_checks=1,
        )
        work = [(Cell(width, 0.0, spec), np.arange(args.runs))]
        inputs = batch_inputs(work, bucket=width, classify_width=shared_width(spec, width))

        def train(checks, inputs=inputs):
            params, data, step, arguments = inputs
            start = time.perf_counter()
            result = simulate(params, data, step, **{**arguments, "max_checks": checks})
            jax.block_until_ready(result.params)
            return time.perf_counter() - start, result

        start = time.perf_counter()
        _, first = train(1)  # compiles, or loads from the cache
        compile_s = time.perf_counter() - start
        one = min(train(1)[0] for _ in range(args.repeats))
        two = min(train(2)[0] for _ in range(args.repeats))
        seconds = max(two - one, 1e-9)
        run_steps = args.runs * steps
        per_run_step = seconds / run_steps
        changed = int(np.sum(np.asarray(first.pattern_change_step) >= 0))
        rows.append(
            {
                "width": width,
                "points": spec.num_points,
                "runs": args.runs,
                "steps": steps,
                "first_call_s": compile_s,
                "call_s": one,
                "steps_s": seconds,
                "run_steps_per_s": run_steps / seconds,
                "neuron_data_steps_per_s": run_steps * width * spec.num_points / seconds,
                "s_per_run_step": per_run_step,
                "pattern_changed": changed,
            }
        )
        print(
            f"width {width}: S = {steps}, first call {compile_s:.1f} s, one chunk "
            f"{one:.2f} s, two {two:.2f} s, S steps alone {seconds:.2f} s",
            flush=True,
        )

    print(
        "\n| width n | runs | steps S | first call (s) | warm call (s) | S steps alone (s) "
        "| run-steps/s | neuron-data-steps/s | µs per run-step |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['width']} | {r['runs']} | {r['steps']} | {r['first_call_s']:.1f} "
            f"| {r['call_s']:.2f} | {r['steps_s']:.2f} | {r['run_steps_per_s']:.3g} "
            f"| {r['neuron_data_steps_per_s']:.3g} | {1e6 * r['s_per_run_step']:.3g} |"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    nm = np.array([r["width"] * r["points"] for r in rows], float)
    t = np.array([r["s_per_run_step"] for r in rows])
    (c0, c1), *_ = np.linalg.lstsq(np.stack([np.ones_like(nm), nm], axis=1), t, rcond=None)
    if c0 < 0:  # no negative fixed cost: the best line through the origin
        c0, c1 = 0.0, float(nm @ t / (nm @ nm))
    if c1 <= 0:  # the widths too close, or too few, for a cost per neuron (tiny runs)
        print(f"\nfit: no cost per neuron-data-step from these widths (c1 = {c1:.3g} s)")
    else:
        misfit = (c0 + c1 * nm) / t - 1
        print(
            f"\nfit: seconds per run-step ≈ c0 + c1·n·m, c0 = {c0:.3g} s, c1 = {c1:.3g} s "
            f"(1/c1 = {1 / c1:.3g} neuron-data-steps/s); model / measured - 1 per width: "
            + ", ".join(f"{r['width']}: {e:+.2f}" for r, e in zip(rows, misfit, strict=True))
        )
    if args.json:
        with open(args.json, "w") as f:
            meta = provenance.measured_on()
            json.dump({"rows": rows, "c0": c0, "c1": c1, "meta": meta}, f, indent=1)


if __name__ == "__main__":
    main()
