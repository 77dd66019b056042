"""How often the certificate's two readings of S_ψ disagree on the golden Monte Carlo runs.

PAPER.md: S_ψ uses ‖u_k‖_∞ of the k-th eigenvector (a column of U); the reference code
took the k-th row. This trains every golden run with GD, evaluates both variants at each
of the first `--checks` checks (every 1000 steps, no stopping), and prints how many
(run, check) pairs and how many first-certified checks differ, and how each variant's
first certified check compares with the reference's stored stop step.

    PYTHONPATH=. python scripts/criterion_variants.py [tests/data/mc_outcomes_n16.npz]
"""

import argparse

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from gdrelu import Params, WeightedData, engine, theory  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", nargs="?", default="tests/data/mc_outcomes_n16.npz")
    parser.add_argument("--checks", type=int, default=25)
    args = parser.parse_args()
    m = np.load(args.npz)
    runs = m["xw"].shape[0]
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"])
    params = Params(m["a0"], m["b0"], m["w0"], m["c0"])
    steps = lambda p, d, h: jax.lax.fori_loop(0, 1000, lambda _, q: engine.gd_step(q, d, h), p)  # noqa: E731
    chunk = jax.jit(jax.vmap(steps))
    flags = {"columns": [], "rows": []}
    for _ in range(args.checks):
        params = chunk(params, data, m["lr"])
        for variant, out in flags.items():
            out.append(
                np.asarray(theory.provably_stuck(params, data, m["lr"], eigenvectors=variant))
            )
    cols, rows = (np.stack(flags[v], 1) for v in ("columns", "rows"))
    first = {
        v: np.where(f.any(1), f.argmax(1) + 1, 0) * 1000
        for v, f in (("columns", cols), ("rows", rows))
    }
    stuck = m["status"] == "LOCALLY_CONVERGED"
    print(f"{args.npz}: {runs} runs, {args.checks} checks")
    print(
        f"(run, check) pairs where rows and columns differ: {(cols != rows).sum()} of {cols.size}"
    )
    print(f"runs whose first certified check differs: {(first['columns'] != first['rows']).sum()}")
    for v, f in first.items():
        seen = stuck & (m["stop_step"] <= args.checks * 1000)
        diff = (f - m["stop_step"])[seen] // 1000
        print(
            f"{v}: stuck runs at the reference stop step {np.sum(diff == 0)} of {seen.sum()}; "
            f"later: {np.sum(diff > 0)}, earlier: {np.sum(diff < 0)}"
        )


if __name__ == "__main__":
    main()
