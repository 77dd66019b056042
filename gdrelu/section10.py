"""The Section 10 protocol of the paper as a preset (PAPER.md, "Section 10 comparison").

A grid over distributions × d × parameterizations × optimizers × bias inits × step
sizes; each configuration trains `runs` networks with epoch-wise minibatches, keeps for
each run the test RMSE at its best-validation check, picks the step size with the best
mean validation RMSE, and reports the test RMSE there as mean ± standard error. The
figure shows, per (parameterization, optimizer), each bias init's test RMSE relative to
the best configuration at the same (distribution, d), against d.

Deviations from the paper, stated in the outputs: momentum uses the SGD base step size
(PAPER.md gives none); the validation RMSE is evaluated every `eval_epochs` epochs
(not after every epoch); the "small" scale uses a narrower network and fewer epochs so
that it fits a laptop (see `SCALES`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu.engine import simulate
from gdrelu.experiment import Cell, ExperimentSpec, initial_runs, noise_keys

BIAS_INITS = (
    "zero",
    "unif",
    "unif-pos",
    "unif-neg",
    "pytorch",
    "kink-neg-unif",
    "kink-neg-point",
)
BASE_STEP = {  # (init, optimizer) -> base of the grid base·√2^k (PAPER.md)
    ("he", "sgd"): 8e-3,
    ("ntk", "sgd"): 0.8,
    ("he", "momentum"): 8e-3,
    ("ntk", "momentum"): 0.8,
    ("he", "adam"): 1e-2,
    ("ntk", "adam"): 8e-2,
}


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one Section 10 grid. Epochs are `epochs_times_d / d`; a run takes
    epochs · n_train / batch = epochs_times_d · 256 / batch steps whatever d."""

    dims: tuple[int, ...]
    width: int
    runs: int
    step_exponents: tuple[int, ...]
    epochs_times_d: int
    heldout: int
    eval_epochs_times_d: int
    batch_size: int = 256
    train_per_dim: int = 256
    distributions: tuple[str, ...] = ("p-ex", "radial")
    inits: tuple[str, ...] = ("he", "ntk")
    optimizers: tuple[str, ...] = ("sgd", "momentum", "adam")
    bias_inits: tuple[str, ...] = BIAS_INITS


SCALES = {
    "full": Scale(
        dims=(1, 2, 4, 8, 16, 32, 64),
        width=512,
        runs=100,
        step_exponents=tuple(range(-12, 11)),
        epochs_times_d=8192,
        heldout=1024,
        eval_epochs_times_d=64,
    ),
    "small": Scale(
        dims=(1, 2, 4),
        width=64,
        runs=20,
        step_exponents=(-4, 0, 4),
        epochs_times_d=512,
        heldout=256,
        eval_epochs_times_d=32,
    ),
}


def configurations(scale: Scale) -> list[dict[str, Any]]:
    """(distribution, d, init, optimizer) groups; each trains every bias init and step
    size in one batch. P_ex is 1-D only."""
    return [
        {"data": data, "dim": dim, "init": init, "optimizer": optimizer}
        for data in scale.distributions
        for dim in scale.dims
        if not (data == "p-ex" and dim != 1)
        for init in scale.inits
        for optimizer in scale.optimizers
    ]


def _spec(scale: Scale, group: dict[str, Any], bias_init: str, seed: int) -> ExperimentSpec:
    dim = group["dim"]
    epochs = max(1, scale.epochs_times_d // dim)
    steps_per_epoch = (scale.train_per_dim * dim) // scale.batch_size
    every = max(1, scale.eval_epochs_times_d // dim) * steps_per_epoch
    return ExperimentSpec(
        data=group["data"],
        dim=None if group["data"] == "p-ex" else dim,
        num_train=scale.train_per_dim * dim,
        num_heldout=scale.heldout,
        widths=(scale.width,),
        deltas=(0.0,),
        runs=scale.runs,
        seed=seed,
        init=group["init"],
        bias_init=bias_init,
        optimizer=group["optimizer"],
        sampler="epoch",
        batch_size=scale.batch_size,
        step_size=BASE_STEP[group["init"], group["optimizer"]],
        check_every=every,
        max_checks=max(1, epochs * steps_per_epoch // every),
        stop_on=(),
    )


def run_group(
    scale: Scale, group: dict[str, Any], *, seed: int = 0, on_check: Callable | None = None
) -> list[dict[str, Any]]:
    """Train one group (every bias init × step size × run) in one batch; one row per
    (bias init, step size) with mean validation and test RMSE and their standard errors."""
    parts, labels = [], []
    for bias_init in scale.bias_inits:
        spec = _spec(scale, group, bias_init, seed)
        cell = Cell(scale.width, 0.0, spec)
        indices = np.arange(scale.runs)
        params, data, (validation, test) = initial_runs(cell, indices)
        keys = noise_keys(cell, indices)
        for k in scale.step_exponents:
            step = spec.step_size * math.sqrt(2.0) ** k
            parts.append((params, data, validation, test, keys))
            labels.append((bias_init, k, step))
    params, data, validation, test, keys = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    steps = np.repeat([label[2] for label in labels], scale.runs)
    result = simulate(
        params,
        data,
        steps,
        optimizer=group["optimizer"],
        sampler="epoch",
        batch_size=scale.batch_size,
        key=keys,
        parameterization="ntk" if group["init"] == "ntk" else "standard",
        check_every=spec.check_every,
        max_checks=spec.max_checks,
        stop_on=(),
        validation=validation,
        test=test,
        on_check=on_check,
    )
    rows = []
    for i, (bias_init, k, step) in enumerate(labels):
        part = slice(i * scale.runs, (i + 1) * scale.runs)
        # weights 1/m: loss = ½ mean r², so RMSE = sqrt(2 loss); a diverged run scores inf
        val = _rmse(result.best_validation_loss[part])
        test_rmse = _rmse(result.test_loss_at_best[part])
        rows.append(
            {
                **group,
                "bias_init": bias_init,
                "step_exponent": k,
                "step_size": step,
                "runs": scale.runs,
                "validation_rmse": float(np.mean(val)),
                "test_rmse": float(np.mean(test_rmse)),
                "test_rmse_se": _standard_error(test_rmse),
                "diverged": int(np.sum(~np.isfinite(val))),
            }
        )
    return rows


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean; inf when a run diverged (its RMSE is inf)."""
    if values.size < 2 or not np.all(np.isfinite(values)):
        return math.inf
    return float(np.std(values, ddof=1) / math.sqrt(values.size))


def _rmse(loss: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(loss), np.sqrt(2.0 * np.maximum(loss, 0.0)), np.inf)


def best_step_sizes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration, the row of the step size with the best mean validation RMSE,
    with `relative_test_rmse` = its test RMSE over the best one at its (data, d)."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["data"], row["dim"], row["init"], row["optimizer"], row["bias_init"])
        if key not in best or row["validation_rmse"] < best[key]["validation_rmse"]:
            best[key] = row
    chosen = list(best.values())
    floor: dict[tuple, float] = {}
    for row in chosen:
        at = (row["data"], row["dim"])
        floor[at] = min(floor.get(at, math.inf), row["test_rmse"])
    return [
        {**r, "relative_test_rmse": r["test_rmse"] / floor[r["data"], r["dim"]]} for r in chosen
    ]


def format_table(best: list[dict[str, Any]]) -> str:
    """Markdown: test RMSE at the best-validation check, mean ± SE, per configuration."""
    lines = [
        "| data | d | init | optimizer | bias init | step | test RMSE | relative |",
        "|---|---:|---|---|---|---:|---|---:|",
    ]
    for r in sorted(best, key=lambda r: (r["data"], r["dim"], r["init"], r["optimizer"])):
        lines.append(
            f"| {r['data']} | {r['dim']} | {r['init']} | {r['optimizer']} | {r['bias_init']} "
            f"| {r['step_size']:.3g} | {r['test_rmse']:.4f} ± {r['test_rmse_se']:.4f} "
            f"| {r['relative_test_rmse']:.3f} |"
        )
    return "\n".join(lines)


def relative_rmse_plot(best: list[dict[str, Any]], path) -> None:
    """Relative test RMSE against d, one panel per (init, optimizer), one colour per bias
    init (circles: P_d against d, squares: P_ex at d = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = sorted({r["init"] for r in best})
    optimizers = list(dict.fromkeys(r["optimizer"] for r in best))
    biases = list(dict.fromkeys(r["bias_init"] for r in best))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(biases)}
    fig, axes = plt.subplots(
        len(inits), len(optimizers), figsize=(3.8 * len(optimizers), 3.2 * len(inits)),
        sharex=True, sharey=True, squeeze=False,
    )  # fmt: skip
    for (i, init), (j, optimizer) in itertools.product(enumerate(inits), enumerate(optimizers)):
        ax = axes[i][j]
        for data, bias_init in itertools.product(sorted({r["data"] for r in best}), biases):
            rows = sorted(
                (
                    r
                    for r in best
                    if (r["init"], r["optimizer"], r["data"], r["bias_init"])
                    == (init, optimizer, data, bias_init)
                ),
                key=lambda r: r["dim"],
            )
            if rows:
                ax.plot(
                    [r["dim"] for r in rows],
                    [r["relative_test_rmse"] for r in rows],
                    marker="o" if data == "radial" else "s",
                    linestyle="-" if len(rows) > 1 else "none",
                    color=colours[bias_init],
                    label=bias_init if data == "radial" else None,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{init}, {optimizer}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        if i == len(inits) - 1:
            ax.set_xlabel("input dimension d")
        if j == 0:
            ax.set_ylabel("test RMSE / best at (data, d)")
    axes[0][-1].legend(fontsize="x-small", title="bias init (■ P_ex)", title_fontsize="x-small")
    fig.suptitle("Section 10: test RMSE at the best validation check, best step size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
