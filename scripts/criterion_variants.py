"""The certificate's readings against the golden Monte Carlo runs' stop steps.

Two choices in the certificate (docs/fidelity.md): S_ψ takes ‖u_k‖_∞ of the k-th
eigenvector (a column of U; the reference code took the k-th row), and G_wab is read as
gdrelu does ("conservative", κ on the Σ terms only) or as PAPER.md and the published code
write it ("paper", κ on the whole sum). This trains every golden run with GD, evaluates
the four readings at each of the first `--checks` checks (every 1000 steps, no stopping),
and prints, per reading, how each run's first certified check compares with the
reference's stored stop step. `--float32` also counts the checks where the default reading
on float32 copies of the same parameters and data disagrees with float64.

    PYTHONPATH=. python scripts/criterion_variants.py [tests/data/mc_outcomes_n16.npz]
        [--checks 25] [--float32]
"""

import argparse
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from gdrelu import Params, WeightedData, engine, theory  # noqa: E402

STORED = Path(__file__).resolve().parents[1] / "tests" / "data" / "mc_outcomes_n16.npz"
READINGS = list(itertools.product(("columns", "rows"), ("conservative", "paper")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "npz",
        nargs="?",
        default=STORED,
        help="the golden Monte Carlo runs (default: the repository's "
        "tests/data/mc_outcomes_n16.npz)",
    )
    parser.add_argument(
        "--checks",
        type=int,
        default=25,
        help="checks, each after 1000 GD steps (default: %(default)s)",
    )
    parser.add_argument(
        "--float32",
        action="store_true",
        help="also count the checks where float32 copies disagree with float64",
    )
    args = parser.parse_args()
    m = np.load(args.npz)
    runs = m["xw"].shape[0]
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"])
    params = Params(m["a0"], m["b0"], m["w0"], m["c0"])
    steps = lambda p, d, h: jax.lax.fori_loop(0, 1000, lambda _, q: engine.gd_step(q, d, h), p)  # noqa: E731
    chunk = jax.jit(jax.vmap(steps))
    single = lambda tree: jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), tree)  # noqa: E731
    flags = {reading: [] for reading in READINGS}
    only64 = only32 = checked = 0
    for _ in range(args.checks):
        params = chunk(params, data, m["lr"])
        for (vectors, gwab), out in flags.items():
            stuck = theory.provably_stuck(params, data, m["lr"], eigenvectors=vectors, gwab=gwab)
            out.append(np.asarray(stuck))
        if args.float32:
            in64 = flags[READINGS[0]][-1]
            in32 = np.asarray(theory.provably_stuck(*map(single, (params, data, m["lr"]))))
            uncrossed = np.max(np.abs(np.asarray(params.b / params.a)), axis=1) < 1.0
            only64 += np.sum(in64 & ~in32 & uncrossed)
            only32 += np.sum(in32 & ~in64 & uncrossed)
            checked += uncrossed.sum()
    stuck = m["status"] == "LOCALLY_CONVERGED"
    seen = stuck & (m["stop_step"] <= args.checks * 1000)
    print(f"{args.npz}: {runs} runs, {args.checks} checks, {seen.sum()} runs the reference")
    print(f"certified by check {args.checks}; their first certified check against it:")
    print("| S_ψ from | G_wab | at the reference's check | later or never | earlier |")
    print("|---|---|---:|---:|---:|")
    for (vectors, gwab), out in flags.items():
        certified = np.stack(out, 1)
        first = np.where(certified.any(1), certified.argmax(1) + 1, args.checks + 1) * 1000
        diff = (first - m["stop_step"])[seen] // 1000
        print(
            f"| {vectors} | {gwab} | {np.sum(diff == 0)} | {np.sum(diff > 0)} | "
            f"{np.sum(diff < 0)} |"
        )
    if args.float32:
        print(
            f"float32 against float64 (columns, conservative), uncrossed run-checks: {checked}; "
            f"certified in float64 only: {only64}, in float32 only: {only32}"
        )


if __name__ == "__main__":
    main()
