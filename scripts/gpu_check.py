"""Check gdrelu on an accelerator: versions, agreement with the CPU, throughput.

    PYTHONPATH=. python scripts/gpu_check.py --out "$OUT"          # on the GPU machine
    PYTHONPATH=. python scripts/gpu_check.py --runs 256 --widths 16,64 --out /tmp/check

Installs nothing. Writes gpu_check.json and gpu_check.md under --out (default $OUT, the
folder the device machine brings back, else a new runs/gpu_check-<timestamp> relative to
the working directory, git-ignored like `gdrelu run`'s runs/) and prints the table and
where it wrote:

1. versions of Python, jax, jaxlib, optax, and the devices;
2. agreement on the golden data (tests/data): the 300 stored Monte Carlo runs of
   mc_outcomes_n16.npz simulated on the accelerator (the propagator's steps on the
   kernel that $GDRELU_PROPAGATOR_KERNEL, default auto, picks there) and on the CPU
   (XLA), in float64 and
   float32 (statuses equal? stop steps equal? largest parameter difference), and the
   golden GD trajectory case 3 after 20 000 steps on the accelerator (relative error);
3. throughput of the default (propagator) path for each width with `--runs` runs of the
   benchmarks' workload (benchmarks/paper_workload.py): 2 chunks of 1000 GD steps with
   the checks, compile excluded, in neuron-steps/s, and the device's peak memory where
   JAX reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def versions(jax) -> dict:
    import jaxlib
    import optax

    from gdrelu import provenance

    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "propagator_kernel": provenance.gd_kernel(),  # as resolved here
    }


def agreement(jax, np, dtype: str) -> dict:
    """The golden Monte Carlo runs on the default device and on the CPU."""
    from gdrelu import Params, WeightedData, simulate

    m = np.load(DATA / "mc_outcomes_n16.npz")
    runs = m["xw"].shape[0]
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"])
    params = Params(m["a0"], m["b0"], m["w0"], m["c0"])
    cast = lambda tree: type(tree)(*(np.asarray(v, dtype) for v in tree))  # noqa: E731
    kwargs = dict(check_every=int(m["check_every"]), max_checks=int(m["max_checks"]))
    start = time.perf_counter()
    here = simulate(cast(params), cast(data), np.asarray(m["lr"], dtype), **kwargs)
    seconds = time.perf_counter() - start
    cpu = simulate(
        cast(params),
        cast(data),
        np.asarray(m["lr"], dtype),
        devices=jax.devices("cpu"),
        kernel="xla",
        **kwargs,
    )
    scale = max(float(np.max(np.abs(v))) for v in cpu.params)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(here.params, cpu.params, strict=True))
    reference = np.where(m["status"] == "CROSSED", 1, 2)
    return {
        "dtype": dtype,
        "runs": runs,
        "statuses_equal_cpu": bool(np.array_equal(here.status, cpu.status)),
        "stop_steps_equal_cpu": bool(np.array_equal(here.stop_step, cpu.stop_step)),
        "statuses_equal_reference": int(np.sum(here.status == reference)),
        "max_relative_param_difference": diff / scale,
        "seconds_on_default_device": seconds,
    }


def trajectory(jax, np) -> dict:
    """Golden GD case 3 (width 64) after 20 000 steps on the general path, float64."""
    from gdrelu import Params, WeightedData, engine

    z = np.load(DATA / "gd_trajectories.npz")
    case = {k[len("case3_") :]: z[k] for k in z.files if k.startswith("case3_")}
    one = lambda v: np.expand_dims(np.asarray(v, np.float64), 0)  # noqa: E731
    data = WeightedData(one(case["x"]), one(case["y"]), one(case["xw"]))
    params = Params(*(one(case[f"{n}0"]) for n in "abwc"))
    result = engine.simulate(
        params, data, one(case["lr"]), check_every=1000, max_checks=20, stop_on=(), path="general"
    )
    scale = max(float(np.max(np.abs(case[f"{n}20000"]))) for n in "abwc")
    error = max(
        float(np.max(np.abs(np.asarray(leaf)[0] - case[f"{n}20000"])))
        for leaf, n in zip(result.params, "abwc", strict=True)
    )
    return {"case": 3, "steps": 20_000, "max_relative_error": error / scale}


def throughput(jax, np, widths, runs: int) -> list[dict]:
    """The propagator on `runs` runs of the benchmarks' workload (`paper_workload.build`,
    float64, seed 0) at each width."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import paper_workload

    from gdrelu import engine

    rows = []
    for width in widths:
        params, data, step, _ = paper_workload.build(width, runs)
        run = engine.chunk_runner(params, data, step, path="propagator", check_every=1000)
        start = time.perf_counter()
        run(1)
        first = time.perf_counter() - start
        start = time.perf_counter()
        run(2)
        seconds = time.perf_counter() - start
        stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
        rows.append(
            {
                "width": width,
                "runs": runs,
                "compile_and_first_chunk_s": first,
                "seconds_2000_steps": seconds,
                "neuron_steps_per_s": width * runs * 2000 / seconds,
                "peak_bytes": stats.get("peak_bytes_in_use"),
            }
        )
        print(f"width {width}: {rows[-1]['neuron_steps_per_s']:.3g} neuron-steps/s", flush=True)
    return rows


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [
        f"# gdrelu GPU check: {', '.join(v['devices'])}",
        "",
        f"python {v['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, optax {v['optax']}; "
        f"the propagator's steps on {v['propagator_kernel']}",
        "",
        "| dtype | statuses = CPU | stop steps = CPU | = reference (of 300) | max rel. θ diff |",
        "|---|---|---|---:|---:|",
    ]
    for a in report["agreement"]:
        lines.append(
            f"| {a['dtype']} | {a['statuses_equal_cpu']} | {a['stop_steps_equal_cpu']} | "
            f"{a['statuses_equal_reference']} | {a['max_relative_param_difference']:.2e} |"
        )
    t = report["trajectory"]
    lines += [
        "",
        f"Golden GD case {t['case']} after {t['steps']} steps: relative error "
        f"{t['max_relative_error']:.2e}.",
        "",
        "| width | runs | neuron-steps/s | 2000 steps (s) | first chunk (s) | peak memory |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["throughput"]:
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f} MiB"
        lines.append(
            f"| {r['width']} | {r['runs']} | {r['neuron_steps_per_s']:.3g} | "
            f"{r['seconds_2000_steps']:.2f} | {r['compile_and_first_chunk_s']:.1f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--widths",
        default="16,32,64,128,256,512,1024,2048",
        help="comma-separated widths of the throughput rows (default: %(default)s)",
    )
    parser.add_argument(
        "--runs", type=int, default=10_000, help="runs per throughput row (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or time.strftime("runs/gpu_check-%Y%m%d-%H%M%S")),
        help="directory for gpu_check.json and gpu_check.md, replaced there: $OUT where set "
        "(the device machine's), else a new runs/gpu_check-<timestamp>, git-ignored",
    )
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]

    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    import numpy as np

    report = {"versions": versions(jax)}
    print(json.dumps(report["versions"]), flush=True)
    report["agreement"] = [agreement(jax, np, dtype) for dtype in ("float64", "float32")]
    report["trajectory"] = trajectory(jax, np)
    report["throughput"] = throughput(jax, np, widths, args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    print(f"wrote gpu_check.json and gpu_check.md to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
