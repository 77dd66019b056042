"""Where one warm `simulate` call of the ratio table's workload spends its time.

`bench_vs_numpy.py` times a call whole. This benchmark builds the same workload
(`bench_vs_numpy.workload`: `--runs` runs of width `--width`, the paper's data and step
size, its noise keys) and the same call (`bench_vs_numpy.gdrelu_call`, `--protocol
crossing` or `full`), times `--calls` warm calls as they are, then `--calls` more with the
engine's pieces wrapped: each piece waits for its results before it returns, so that its
time is its own. The pieces then no longer overlap the host's work: on the 2-core VM the
wrapped call's median came within 20% of the plain one's, either way. The pieces: the
chunks by path (`chunk.run_chunk`: `propagator`, `general`, `fixed_pattern`; a redo is a
`general` chunk), the redos' lane gathers and puts, the moves of the active runs to the
front of their devices, the reads of finished runs, the placement, the check inputs and
the results' classification; "the rest" is the host's own work between them (NumPy, the
layout, the stop codes).

"CPU/wall" is the process's CPU seconds over the wall seconds of each call of a piece,
median and smallest: with D devices a piece that keeps all of them busy reads about D, and
a chunk whose devices ran one after the other about 1.

    PYTHONPATH=. python benchmarks/bench_call_parts.py [--optimizer sgd] [--width 16]
        [--runs 1000] [--steps 10000] [--check-every 1000] [--protocol crossing|full]
        [--calls 5]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_vs_numpy  # sets the CPU device count, as the ratio table has it

from gdrelu import provenance
from gdrelu.engine import chunk, simulation

PIECES = (  # (module, attribute, label); run_chunk's label names the chunk's path
    (chunk, "run_chunk", "chunk"),
    (chunk, "own_lanes_at", "redo: lanes gathered"),
    (chunk, "put_own_lanes", "redo: lanes put back"),
    (simulation, "rearranged", "active runs to the front"),
    (simulation, "_finished", "finished runs read"),
    (simulation, "placed", "runs placed"),
    (simulation, "_inputs", "check inputs"),
    (simulation, "_result", "results classified"),
)


def wrapped(fn, label, times):
    """`fn`, waiting for its results, its (wall, CPU) seconds appended to times[label]."""

    def piece(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(fn(*args, **kwargs))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        name = f"{label}: {kwargs['settings'].path}" if label == "chunk" else label
        times[name].append((wall, cpu))
        return out

    return piece


def timed_calls(call, calls: int) -> list[float]:
    """Seconds of each of `calls` calls of `call` (`bench_vs_numpy.timed`)."""
    return [bench_vs_numpy.timed(call)[0] for _ in range(calls)]


def table(times, totals, calls: int) -> list[str]:
    """Markdown rows: each piece's calls and milliseconds per `simulate`, its share of the
    wrapped call, and its CPU/wall ratios; then the rest and the whole."""
    whole = float(np.mean(totals))
    rows = [
        "| piece | calls per `simulate` | ms per `simulate` | share | CPU/wall median (min) |",
        "|---|---:|---:|---:|---:|",
    ]
    pieces = sorted(times.items(), key=lambda kv: -sum(w for w, _ in kv[1]))
    for name, samples in pieces:
        wall = np.array([w for w, _ in samples])
        ratio = np.array([c for _, c in samples]) / np.maximum(wall, 1e-9)
        ms = 1e3 * wall.sum() / calls
        rows.append(
            f"| {name} | {len(samples) / calls:g} | {ms:.1f} | {ms / 1e3 / whole:.0%} "
            f"| {np.median(ratio):.2f} ({ratio.min():.2f}) |"
        )
    rest = whole - sum(w for samples in times.values() for w, _ in samples) / calls
    rows.append(f"| the rest | | {1e3 * rest:.1f} | {rest / whole:.0%} | |")
    rows.append(f"| **whole (wrapped)** | | **{1e3 * whole:.1f}** | 100% | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="sgd", choices=tuple(bench_vs_numpy.SAMPLER))
    parser.add_argument("--width", type=int, default=16, help="width n (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=1000, help="runs (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=10000, help="step budget per run (default: %(default)s)"
    )
    parser.add_argument(
        "--check-every", type=int, default=1000, help="steps per chunk (default: %(default)s)"
    )
    parser.add_argument("--protocol", choices=("crossing", "full"), default="crossing")
    parser.add_argument(
        "--calls", type=int, default=5, help="warm calls timed each way (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls: {args.calls} is not a positive integer")
    params, data, steps, keys = bench_vs_numpy.workload(args.width, args.runs)
    call = bench_vs_numpy.gdrelu_call(
        args.optimizer, params, data, steps, keys, args.steps, args.check_every, args.protocol
    )
    trained = call()  # compiles
    plain = timed_calls(call, args.calls)
    times = collections.defaultdict(list)
    for module, name, label in PIECES:
        setattr(module, name, wrapped(getattr(module, name), label, times))
    totals = timed_calls(call, args.calls)
    neuron_steps = trained * args.width
    print(f"# {provenance.measured_line()}")
    print(
        f"# {args.optimizer}, width {args.width}, {args.runs} runs, {args.steps} steps, "
        f"chunks of {args.check_every}, protocol {args.protocol}; kernels: "
        f"{bench_vs_numpy.kernels([args.optimizer])}\n"
    )
    print(
        f"Plain call: median {1e3 * np.median(plain):.1f} ms "
        f"({neuron_steps / np.median(plain):.3g} neuron-steps/s; {trained} run-steps); "
        f"wrapped: median {1e3 * np.median(totals):.1f} ms.\n"
    )
    print("\n".join(table(times, totals, args.calls)))


if __name__ == "__main__":
    main()
