"""gdrelu's optimizers against the paper-style NumPy code, side by side in one process.

For each optimizer and width: `--runs` runs of the paper's 1-D workload (six points,
N = n² multinomial weights, He init, Δ = 0, the paper's GD step size, Adam's learning
rate the same, as the paper's code did; `paper_workload.build` with its "blocks" keys),
every run trained `--steps` steps with no stopping (`stop_on=()`), by `gdrelu.simulate`
(warm: after one call of the same shapes, and cold: the first call, compilation included:
the library's compilation cache is off unless $GDRELU_CACHE_DIR names one)
and by `numpy_baseline` (one core, `train_stochastic`; GD: `simulate_numpy` without early
exit). SGD and Adam draw the paper's B = 16 multinomial samples per step in both;
momentum is full-batch heavy ball. Each optimizer takes the kernel that
$GDRELU_PROPAGATOR_KERNEL (default "auto") gives it, named in the header: with "native",
the general path's steps (Adam's chunks, the others' redos) run in its C loop
(`gdrelu.native_general`), whose bits are not XLA's.
The table gives neuron-steps/s (width × steps × runs / s) and gdrelu's ratio to NumPy;
`benchmarks/results/` and docs/performance.md keep the dated tables. With `--repeats R`
the two sides alternate R times after gdrelu's cold call (NumPy, gdrelu warm, NumPy, …),
so that both see the same moments of a machine whose speed drifts: the rates are the
medians and "ratio range" the smallest and largest of the R rounds' ratios.

`--protocol crossing` instead stops runs as the paper's protocols do, in both: GD on a
crossing, degeneracy or the certificate (`simulate_numpy` with early exit, gdrelu's GD
rules); the others on a crossing (`train_stochastic(stop_crossed_every=...)`, gdrelu
`stop_on=("crossed",)`, which takes the propagator for SGD and momentum). Each side's
neuron-steps are those it trained (width × the steps of each run until it stopped), so the
rates compare like with like although the two sides' minibatches, and so which SGD runs
cross, differ.

    PYTHONPATH=. python benchmarks/bench_vs_numpy.py [--widths 16,128] [--runs 200]
        [--steps 2000] [--optimizers gd,sgd,momentum,adam] [--protocol full|crossing]
        [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

if not os.environ.get("GDRELU_CACHE_DIR"):  # empty reads as unset: cold, compiled here
    os.environ["GDRELU_CACHE_DIR"] = "none"
jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import numpy_baseline  # noqa: E402
import paper_workload  # noqa: E402

from gdrelu import provenance, simulate  # noqa: E402
from gdrelu.engine import general_kernel, propagator_kernel  # noqa: E402
from gdrelu.optim import get_optimizer  # noqa: E402

SAMPLER = {"gd": None, "sgd": "multinomial", "momentum": None, "adam": "multinomial"}


def workload(width: int, runs: int, seed: int = 0):
    """(params, data, step sizes, noise keys) of `runs` runs at `width`, all but the keys as
    numpy arrays. The keys are `paper_workload`'s "blocks" layout, this benchmark's since
    its first dated result: the tables in benchmarks/results/ (vs-numpy-*, floors-*) stay
    comparable, the crossing protocol's steps trained depending on which runs cross."""
    built = paper_workload.build(width, runs, seed, layout="blocks")
    return (*jax.device_get(built[:3]), built.noise)


def gdrelu_call(optimizer, params, data, steps, keys, num_steps, check_every, protocol):
    """A function () -> run-steps trained, calling `simulate` on the workload."""
    stop_on = () if protocol == "full" else None if optimizer == "gd" else ("crossed",)
    kwargs = dict(
        optimizer=optimizer,
        sampler=SAMPLER[optimizer],
        key=keys if SAMPLER[optimizer] else None,
        check_every=check_every,
        max_checks=num_steps // check_every,
        stop_on=stop_on,
    )
    return lambda: int(np.sum(simulate(params, data, steps, **kwargs).stop_step))


def kernels(optimizers) -> str:
    """The kernels each optimizer's steps take here ($GDRELU_PROPAGATOR_KERNEL or "auto"):
    the propagator's (Adam takes none), then the general path's ("native": its C loop,
    else "xla")."""
    platform = jax.devices()[0].platform
    names = []
    for name in optimizers:
        optimizer = get_optimizer(name, sampler=SAMPLER[name])
        general = f"general {general_kernel(None, optimizer)}"
        propagated = "" if name == "adam" else f"{propagator_kernel(platform, None, optimizer)}, "
        names.append(f"{name} {propagated}{general}")
    return "; ".join(names)


def timed(call):
    """(seconds, result) of call()."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def time_numpy(optimizer, params, data, steps, num_steps, check_every, protocol):
    """(seconds, run-steps trained) of the NumPy code."""
    a, b, w, c = params
    full = protocol == "full"
    start = time.perf_counter()
    if optimizer == "gd":
        _, stop_step = numpy_baseline.simulate_numpy(
            a, b, w, c, *data, steps, check_every, num_steps // check_every, early_exit=not full
        )
        run_steps = len(stop_step) * num_steps if full else int(np.sum(stop_step))
    else:
        _, run_steps = numpy_baseline.train_stochastic(
            a, b, w, c, *data, steps, optimizer=optimizer, steps=num_steps,
            stop_crossed_every=None if full else check_every,
        )  # fmt: skip
    return time.perf_counter() - start, run_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--widths", default="16,128", help="comma-separated widths (default: %(default)s)"
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="runs per width (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=2000, help="step budget per run (default: %(default)s)"
    )
    parser.add_argument(
        "--check-every",
        type=int,
        default=1000,
        help="steps per check or chunk (default: %(default)s)",
    )
    parser.add_argument(
        "--optimizers",
        default="gd,sgd,momentum,adam",
        help="comma-separated optimizers (default: %(default)s)",
    )
    parser.add_argument(
        "--protocol",
        choices=("full", "crossing"),
        default="full",
        help="full: every run trains every step; crossing: runs stop as in the paper's "
        "protocols (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of NumPy, gdrelu warm (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: {args.repeats} is not a positive integer")
    print(f"# {provenance.measured_line()}, numpy {np.__version__}")
    print(f"# protocol: {args.protocol}; rates in neuron-steps/s of the steps each side trained")
    print(f"# kernels: {kernels(args.optimizers.split(','))}")
    print(
        "| optimizer | width | runs | steps | numpy | gdrelu warm | gdrelu cold "
        "| ratio warm | ratio range | ratio cold | trained (numpy, gdrelu) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for width in map(int, args.widths.split(",")):
        params, data, steps, keys = workload(width, args.runs)
        for optimizer in args.optimizers.split(","):
            timing = (optimizer, params, data, steps)
            setting = (args.steps, args.check_every, args.protocol)
            call = gdrelu_call(*timing, keys, *setting)
            cold, gdrelu_steps = timed(call)
            numpy_rates, warm_rates = [], []
            for _ in range(args.repeats):
                numpy_s, numpy_steps = time_numpy(*timing, *setting)
                warm, _ = timed(call)
                numpy_rates.append(width * numpy_steps / numpy_s)
                warm_rates.append(width * gdrelu_steps / warm)
            numpy_rate, warm_rate = np.median(numpy_rates), np.median(warm_rates)
            cold_rate = width * gdrelu_steps / cold
            ratios = np.divide(warm_rates, numpy_rates)
            full = width * args.runs * args.steps
            print(
                f"| {optimizer} | {width} | {args.runs} | {args.steps} | {numpy_rate:.3g} "
                f"| {warm_rate:.3g} | {cold_rate:.3g} | {warm_rate / numpy_rate:.1f}× "
                f"| {ratios.min():.1f}-{ratios.max():.1f}× | {cold_rate / numpy_rate:.1f}× "
                f"| {width * numpy_steps / full:.2f}, {width * gdrelu_steps / full:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
