"""The star experiment at small scale (docs/theory.md, "Multi-dimensional experiments").

    python scripts/star_experiment.py                       # widths 16-64, 200 runs, 1e5 steps
    python scripts/star_experiment.py --widths 16 --runs 20 --steps 2000 --out /tmp/star

2-D star data (11 rays, δ = 0.1, N = n² multinomial weights per run), He initialization
with zero biases, GD with step 1/λ_max of the weighted neural-tangent Gram matrix at
initialization, as the paper's text has it; `--step-size param-norm --step-factor 2` is
the reference code's step instead, 1/‖θ‖² applied twice per epoch (1/‖θ‖² is 5-10 times
smaller than the `ntk` step at widths 16-1024; docs/fidelity.md, "The star program").
Reports per width the fraction of runs whose activation pattern on the data changed, and
the fraction whose final loss fell below the "linear on every ray" threshold L_lin, each
with a 95% Clopper-Pearson interval; writes star.md, star.json and star.png under --out
(default a new runs/star-<timestamp>, relative to the working directory: like `gdrelu
run`'s runs/<timestamp>/, git-ignored) and prints where. The dated results in
scripts/results/ are copies of such files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STEP_NAMES = {"ntk": "λ_max(K_w)", "param-norm": "‖θ‖²"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The star experiment at small scale.")
    parser.add_argument(
        "--widths", default="16,32,64", help="comma-separated widths (default: %(default)s)"
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="runs per width (default: %(default)s)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=100_000,
        help="GD steps per run, a multiple of --check-every (default: %(default)s)",
    )
    parser.add_argument(
        "--check-every", type=int, default=1000, help="steps per check (default: %(default)s)"
    )
    parser.add_argument(
        "--step-size",
        choices=("ntk", "param-norm"),
        default="ntk",
        help="ntk: 1/λ_max(K_w), the paper's text; param-norm: 1/‖θ‖², the reference "
        "code's (default: %(default)s)",
    )
    parser.add_argument(
        "--step-factor",
        type=float,
        default=1.0,
        help="multiplies the step size; the reference code's update is --step-size "
        "param-norm --step-factor 2 (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the spec's seed (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / time.strftime("star-%Y%m%d-%H%M%S"),
        help="directory for star.md, star.json and star.png, replaced there (default: a "
        "new runs/star-<timestamp>, git-ignored, as for gdrelu run)",
    )
    args = parser.parse_args(argv)
    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        parser.error(f"--widths: {args.widths!r} is not comma-separated integers")
    for name in ("steps", "check_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} is not positive")
    if args.steps % args.check_every:
        parser.error("--steps must be a multiple of --check-every")

    from gdrelu.cli import backends, default_cache_dir
    from gdrelu.cli.errors import UsageError

    backends.enable_x64()  # and below the set-up of gdrelu run: precision, cores, cache
    try:
        backends.prepare(every_core=True, cache_dir=default_cache_dir())
    except UsageError as err:
        parser.error(str(err))
    import jax
    import numpy as np

    from gdrelu.outcome import Status
    from gdrelu.runner import run_experiment
    from gdrelu.spec import ExperimentSpec, SpecError
    from gdrelu.stats import failure_probability

    try:
        spec = ExperimentSpec(
            data="star",
            widths=widths,
            deltas=(0.0,),
            runs=args.runs,
            seed=args.seed,
            step_size=args.step_size,
            step_factor=args.step_factor,
            check_every=args.check_every,
            max_checks=args.steps // args.check_every,
            stop_on=(),
        )
    except SpecError as err:
        parser.error(str(err))  # the field and why, as gdrelu run says it (exit 2)
    start = time.perf_counter()
    rows = []
    for cell_result in run_experiment(spec):
        res = cell_result.result
        changed = int(np.sum(res.pattern_change_step >= 0))
        below = int(np.sum(res.final_loss < (1 - 1e-6) * res.linear_threshold))
        rows.append(
            {
                "width": cell_result.cell.width,
                "runs": int(res.status.size),
                "pattern_changed": changed,
                "p_pattern_changed": failure_probability(changed, res.status.size),
                "below_linear_threshold": below,
                "p_below_linear_threshold": failure_probability(below, res.status.size),
                "median_first_change_step": float(np.median(res.pattern_change_step)),
                "diverged": int(np.sum(res.status == Status.DIVERGED)),
            }
        )
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Star experiment: {args.runs} runs per width, {args.steps} GD steps, "
        f"step {args.step_factor:g}/{STEP_NAMES[args.step_size]}, {seconds:.0f} s on "
        f"{jax.default_backend()}",
        "",
        "| width | pattern changed [95% CI] | loss below L_lin [95% CI] | median first change |",
        "|---:|---|---|---:|",
    ]
    for r in rows:
        (p1, (l1, h1)), (p2, (l2, h2)) = r["p_pattern_changed"], r["p_below_linear_threshold"]
        lines.append(
            f"| {r['width']} | {p1:.3f} [{l1:.3f}, {h1:.3f}] | {p2:.3f} [{l2:.3f}, {h2:.3f}] "
            f"| {r['median_first_change_step']:g} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "star.md").write_text(text)
    (args.out / "star.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=2))
    _plot(rows, args.out / "star.png")
    print(text)
    print(f"wrote star.md, star.json and star.png to {args.out.resolve()}")
    return 0


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    widths = [r["width"] for r in rows]
    for key, label in (
        ("p_pattern_changed", "activation pattern changed"),
        ("p_below_linear_threshold", "loss below L_lin (left the linear regime)"),
    ):
        p = [r[key][0] for r in rows]
        low = [r[key][1][0] for r in rows]
        high = [r[key][1][1] for r in rows]
        (line,) = ax.plot(widths, p, marker="o", label=label)
        ax.fill_between(widths, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1)
    ax.set_xlabel("width n")
    ax.set_ylabel("fraction of runs")
    ax.set_title("Star data (11 rays), GD: 95% Clopper-Pearson intervals")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
