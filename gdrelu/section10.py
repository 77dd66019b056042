"""The Section 10 protocol of the paper as a preset (docs/theory.md, "Section 10").

A grid over distributions × d × parameterizations × optimizers × bias inits × step
sizes; each configuration trains `runs` networks with epoch-wise minibatches, keeps for
each run the test RMSE at its best-validation check, picks the step size with the best
mean validation RMSE, and reports the test RMSE there as mean ± standard error. The
figure shows, per (parameterization, optimizer), each bias init's test RMSE relative to
the best configuration at the same (distribution, d), against d.

Each group trains through the runner's memory-budgeted batches and is stored as one unit,
so a grid is resumable. The deviations from the paper are stated in the outputs
(`deviations`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gdrelu import memory, provenance, store
from gdrelu.cells import Cell, CellResult
from gdrelu.parts import train_keeping_parts
from gdrelu.runner import stored_cells, train_cells
from gdrelu.spec import ExperimentSpec

BIAS_INITS = (
    "zero",
    "unif",
    "unif-pos",
    "unif-neg",
    "pytorch",
    "kink-neg-unif",
    "kink-neg-point",
)
BASE_STEP = {  # (init, optimizer) -> base of the grid base·√2^k (the paper's)
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
    "tiny": Scale(  # `gdrelu reproduce --scale small`: minutes on a 2-core CPU
        dims=(1, 2),
        width=32,
        runs=10,
        step_exponents=(-2, 2),
        epochs_times_d=256,
        heldout=256,
        eval_epochs_times_d=32,
        inits=("he",),
        optimizers=("sgd", "adam"),
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


def deviations(name: str, scale: Scale) -> list[str]:
    """How a grid of `scale` (named `name`) departs from the paper's Section 10, as its
    summary.json says: the evaluation interval, momentum's step sizes where it trains,
    and every size other than the "full" scale's (the paper's)."""
    said = [
        "the validation RMSE is evaluated every max(1, eval_epochs_times_d / d) epochs "
        "(`sizes`), not after every epoch"
    ]
    if "momentum" in scale.optimizers:
        said.append("momentum uses the SGD base step size (the paper gives none)")
    full = SCALES["full"]
    cuts = [
        f"{field.name} {_short(getattr(scale, field.name))} (full: "
        f"{_short(getattr(full, field.name))})"
        for field in dataclasses.fields(Scale)
        if getattr(scale, field.name) != getattr(full, field.name)
    ]
    if cuts:
        said.append(
            f"the {name!r} scale is cut down to fit a laptop from 'full', the paper's sizes "
            f"(but the evaluation interval): {'; '.join(cuts)}"
        )
    return said


def _short(value) -> str:
    """A size as summary.json states it: a long tuple by its ends."""
    if isinstance(value, tuple) and len(value) > 8:
        return f"({value[0]}, ..., {value[-1]})"
    return str(value)


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


def _spec(scale: Scale, group: dict[str, Any], bias_init: str, step: float, seed: int):
    """The spec of one (bias init, step size) of a group: its cell's runs."""
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
        step_size=step,
        check_every=every,
        max_checks=max(1, epochs * steps_per_epoch // every),
        stop_on=(),
    )


def group_cells(scale: Scale, group: dict[str, Any], seed: int) -> list[tuple[tuple, Cell]]:
    """((bias init, step exponent, step size), cell) of every configuration of a group, in
    order. The step sizes of a bias init share a cell hash: the same data and networks."""
    base = BASE_STEP[group["init"], group["optimizer"]]
    return [
        ((bias_init, k, step), Cell(scale.width, 0.0, _spec(scale, group, bias_init, step, seed)))
        for bias_init in scale.bias_inits
        for k in scale.step_exponents
        for step in (base * math.sqrt(2.0) ** k,)
    ]


def group_size(scale: Scale) -> int:
    """Cells of a group (its configurations), whose results stay until the group ends."""
    return len(scale.bias_inits) * len(scale.step_exponents)


def _results_bytes(cells: list[Cell]) -> int:
    """Bytes of a group's finished runs, held until the group ends (`memory.results_bytes`
    of each configuration's spec, which holds one cell)."""
    return sum(memory.results_bytes(cell.spec) for cell in cells)


def unit_name(group: dict[str, Any]) -> str:
    return f"section10-{group['data']}-d{group['dim']}-{group['init']}-{group['optimizer']}"


def group_specs(scale: Scale, seed: int = 0) -> list[ExperimentSpec]:
    """One spec per group of the grid (its first configuration's): what the memory budget,
    the progress clock and the recorded kernels (`provenance.settings`) need to know of
    each group (its configurations differ in step size and bias init only)."""
    return [group_cells(scale, group, seed)[0][1].spec for group in configurations(scale)]


def run_group(
    scale: Scale,
    group: dict[str, Any],
    *,
    seed: int = 0,
    on_check: Callable[[int, np.ndarray], None] | None = None,
    on_done: Callable[[list[CellResult], bool], None] | None = None,
    memory_budget: int | None = None,
    units: Path | None = None,
    on_batches: Callable[[list[list[Cell]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train one group (every bias init × step size × run) in batches that fit in
    `memory_budget` bytes (`runner.train_cells`); one row per (bias init, step size) with
    mean validation and test RMSE and their standard errors. With `units` (a run
    directory), a stored group is read back and a trained one stored, and so is each
    batch of a group trained in several, which a resume does not train again. `on_check(k,
    status)` follows the training, `on_batches` hears of its batches before the first
    trains (`runner.batch_plan`); `on_done(cell results, read back)` ends the group."""
    labelled = group_cells(scale, group, seed)
    cells = [cell for _, cell in labelled]
    done = stored_cells(units, unit_name(group), cells)
    stored = done is not None
    if stored:  # its parts, where a kill left them after its unit was stored
        store.remove_superseded_parts(units)
    else:
        start = time.perf_counter()
        train = functools.partial(
            train_cells,
            bucket=scale.width,
            classify_width=scale.width,
            budget=memory.memory_budget(memory_budget) - _results_bytes(cells),
            on_batches=on_batches,
        )
        checked = None if on_check is None else (lambda widths, k, status: on_check(k, status))
        work = [(cell, np.arange(scale.runs)) for cell in cells]
        before = 0.0
        if units is not None:
            train, before = train_keeping_parts(train, work, units, [unit_name(group)])
        done = train(work, on_check=checked)
        if units is not None:
            took = before + time.perf_counter() - start
            store.save_unit(units, unit_name(group), done, took)
            store.remove_superseded_parts(units)
    if on_done is not None:
        on_done(done, stored)
    return [_row(scale, group, label, cr) for (label, _), cr in zip(labelled, done, strict=True)]


def _row(scale: Scale, group: dict[str, Any], label: tuple, cell_result: CellResult) -> dict:
    """A configuration's row: mean RMSEs at each run's best-validation check. The label
    must be that of the cell the results come from (a row of another step size's results
    would pick the wrong best step size)."""
    bias_init, k, step = label
    spec = cell_result.cell.spec
    if (spec.bias_init, spec.step_size) != (bias_init, step):
        raise ValueError(f"row {label} holds the results of {(spec.bias_init, spec.step_size)}")
    result = cell_result.result
    # weights 1/m: loss = ½ mean r², so RMSE = sqrt(2 loss); a diverged run scores inf
    val = _rmse(result.best_validation_loss)
    test_rmse = _rmse(result.test_loss_at_best)
    return {
        **group,
        "bias_init": bias_init,
        "step_exponent": k,
        "step_size": step,
        "runs": int(result.status.size),
        "validation_rmse": float(np.mean(val)),
        "test_rmse": float(np.mean(test_rmse)),
        "test_rmse_se": _standard_error(test_rmse),
        "diverged": int(np.sum(~np.isfinite(val))),
    }


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean; inf when a run diverged (its RMSE is inf)."""
    if values.size < 2 or not np.all(np.isfinite(values)):
        return math.inf
    return float(np.std(values, ddof=1) / math.sqrt(values.size))


def _rmse(loss: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(loss), np.sqrt(2.0 * np.maximum(loss, 0.0)), np.inf)


def best_step_sizes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration, the row of the step size with the best mean validation RMSE (a
    tie keeps the earlier row: in the grid's order, the smaller step size), with
    `relative_test_rmse` = its test RMSE over the best one at its (data, d)."""
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


def manifest(scale_name: str, scale: Scale, seed: int) -> dict[str, Any]:
    """manifest.json of a grid run: a resume must match its scale, seed and settings."""
    grid = {"preset": "section10", "scale": scale_name, "sizes": dataclasses.asdict(scale)}
    return provenance.manifest([{**grid, "seed": seed}], group_specs(scale, seed))


def summary(
    scale_name: str,
    scale: Scale,
    best: list[dict[str, Any]],
    *,
    seconds: float,
    backend: str,
    seed: int,
) -> dict[str, Any]:
    """summary.json of a grid run: the best step size per configuration, the deviations
    from the paper, and the settings that change results (`provenance`)."""
    return {
        "preset": "section10",
        "scale": scale_name,
        "sizes": dataclasses.asdict(scale),
        "best": best,
        "seconds": seconds,
        "backend": backend,
        "deviations": deviations(scale_name, scale),
        **provenance.recorded(group_specs(scale, seed)),
    }
