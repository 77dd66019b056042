"""Cold start of `gdrelu.simulate`: the first call in a fresh process against the second.

The workload of issue 16: `--runs` runs (400) of width `--width` (128), He init, the six
points with Δ = 0 and N = n² multinomial weights, the paper's step size
(`paper_workload.build`, seed 0), GD with
`simulate`'s defaults, float64, one CPU device per core (as `gdrelu run`). A fresh
subprocess builds it, then times the first and the second `simulate` call; every XLA
compilation is counted with its duration (`jax.monitoring`'s backend-compile event), and
tracing and lowering to MLIR are summed, per call. `--cache-dir D` runs two fresh
processes with JAX's persistent compilation cache in D (the second reads what the first
wrote); by default the cache is off (GDRELU_CACHE_DIR=none).

    PYTHONPATH=. python benchmarks/bench_cold_start.py [--runs 400] [--width 128]
        [--cache-dir D] [--top 8] [--json P]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def child(runs: int, width: int) -> dict:
    """In this (fresh) process: build the workload, call `simulate` twice; the timings."""
    start = time.perf_counter()
    import jax

    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    jax.config.update("jax_enable_x64", True)
    events: list[tuple[str, str, float]] = []

    def listener(event, duration, **kwargs):
        events.append((event, kwargs.get("fun_name", "?"), duration))

    jax.monitoring.register_event_duration_secs_listener(listener)
    import paper_workload  # benchmarks/, this script's directory

    import gdrelu

    out = {"import_s": time.perf_counter() - start, "devices": jax.device_count()}
    phases = {}
    begin = time.perf_counter()
    params, data, step_size, _ = paper_workload.build(width, runs)
    jax.block_until_ready(step_size)
    phases["workload"] = (time.perf_counter() - begin, len(events))
    for name in ("first", "second"):
        begin = time.perf_counter()
        result = gdrelu.simulate(params, data, step_size)
        phases[name] = (time.perf_counter() - begin, len(events))
    first_event = 0
    for name, (seconds, last_event) in phases.items():
        part = events[first_event:last_event]
        compiles = sorted((d, f) for e, f, d in part if e == COMPILE)
        out[name] = {
            "seconds": seconds,
            "programs": len(compiles),
            "compile_s": sum(d for d, _ in compiles),
            "trace_s": sum(d for e, _, d in part if e == TRACE),
            "lower_s": sum(d for e, _, d in part if e == LOWER),
            "over_1s": sum(d >= 1.0 for d, _ in compiles),
            "under_50ms": sum(d < 0.05 for d, _ in compiles),
            "slowest": [(f, round(d, 3)) for d, f in compiles[::-1]],
        }
        first_event = last_event
    out["statuses"] = {int(k): int(v) for k, v in zip(*_counts(result.status), strict=True)}
    return out


def _counts(values):
    import numpy as np

    return np.unique(values, return_counts=True)


def fresh_process(runs: int, width: int, cache_dir: str) -> dict:
    env = {**os.environ, "GDRELU_CACHE_DIR": cache_dir}
    command = [sys.executable, __file__, "--child", "--runs", str(runs), "--width", str(width)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    return report


def show(label: str, report: dict, top: int) -> None:
    print(f"{label}: process {report['process_s']:.1f} s, import {report['import_s']:.1f} s, "
          f"{report['devices']} devices, statuses {report['statuses']}")  # fmt: skip
    for name in ("workload", "first", "second"):
        r = report[name]
        print(
            f"  {name:8s} {r['seconds']:6.2f} s: {r['programs']:3d} programs compiled in "
            f"{r['compile_s']:.2f} s ({r['over_1s']} over 1 s, {r['under_50ms']} under 50 ms), "
            f"tracing {r['trace_s']:.2f} s, lowering {r['lower_s']:.2f} s"
        )
        for fun, seconds in r["slowest"][:top]:
            print(f"      {seconds:7.3f} s  {fun}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs (default: %(default)s)")
    parser.add_argument(
        "--width", type=int, default=128, help="neurons n; N = n² draws (default: %(default)s)"
    )
    parser.add_argument(
        "--cache-dir",
        default="none",
        help="JAX's persistent compilation cache: a directory (two fresh processes, the "
        "second reading it) or none (one process, no cache) (default: %(default)s)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=8,
        help="slowest compiles listed per phase (default: %(default)s)",
    )
    parser.add_argument("--json", help="also write the reports as JSON to this path")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.runs, args.width)))
        return
    reports = {"cold": fresh_process(args.runs, args.width, args.cache_dir)}
    show("fresh process", reports["cold"], args.top)
    if args.cache_dir.lower() != "none":
        reports["cached"] = fresh_process(args.runs, args.width, args.cache_dir)
        show("second process, same cache", reports["cached"], args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
