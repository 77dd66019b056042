"""Parts: the finished batches of a bucket (or Section 10 group) whose units are not yet
stored, read back on resume instead of trained again (docs/design.md, "Resume").

`train_keeping_parts` wraps `runner.train_cells`: each batch it trains is stored
(`store.save_part`), and the runs the parts hold (`HeldRuns`) are read. The batches are
planned on all the runs, as the uninterrupted run planned them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from gdrelu import store
from gdrelu.cells import Cell, CellResult

Work = Sequence[tuple[Cell, np.ndarray]]  # (cell, run indices), as `runner.Work`


class HeldRuns(NamedTuple):
    """The runs of one cell stored in parts: their indices, sorted and unique, and their
    results in that order."""

    indices: np.ndarray
    result: CellResult


def train_keeping_parts(
    train, work: Work, directory: Path, units: Sequence[str], every_batch=False
) -> tuple[Callable, float]:
    """(`train` (`train_cells` but for the work) storing the runs each batch trains as a
    part under `directory` (`store.save_part`, of the units named `units`, the work's)
    and reading the runs stored there (a batch trains only those it lacks), the seconds
    the parts stored took). What a batch trains is stored only with `every_batch` if it
    is all of `work` (its unit follows at once otherwise). The batches are planned on the
    whole work, as the uninterrupted run planned them, so a resume with the same memory
    budget trains the same batches."""
    cells = [cell for cell, _ in work]
    pieces, seconds = store.load_parts(directory, cells, units)
    held = {cell: held_runs(cell, p) for cell, p in pieces.items()}
    total = sum(idx.size for _, idx in work)

    def keep(done, took):
        if every_batch or sum(idx.size for _, idx in done) < total:
            store.save_part(directory, done, took, units)

    return functools.partial(train, on_batch_done=keep, held=held), seconds


def held_runs(cell: Cell, pieces) -> HeldRuns:
    """One cell's runs from (run indices, step sizes, result) pieces, by run index; a
    run stored twice (by batches of two memory budgets) is taken once."""
    indices = np.concatenate([idx for idx, _, _ in pieces])
    indices, first = np.unique(indices, return_index=True)
    step = np.concatenate([step for _, step, _ in pieces])[first]
    join = functools.partial(jax.tree.map, lambda *v: np.concatenate(v)[first])
    return HeldRuns(indices, CellResult(cell, step, join(*(result for _, _, result in pieces))))


def not_held(held: Mapping[Cell, Any], pieces) -> Work:
    """The (cell, indices) of a batch's `pieces` with the runs in `held` ({cell: HeldRuns
    or its indices}) left out, and the cells with none left."""
    indices = {cell: getattr(h, "indices", h) for cell, h in held.items()}
    left = [(cell, idx[~np.isin(idx, indices.get(cell, ()))]) for cell, idx in pieces]
    return [(cell, idx) for cell, idx in left if idx.size]


def batch_result(cell: Cell, indices, held: HeldRuns | None, trained) -> CellResult:
    """A cell's result of the runs `indices` (ascending) of a batch: those `held` read,
    the others from `trained` = (their result, their indices), or None."""
    if trained is None:
        return taken(held, indices)
    cr, idx = trained
    if idx.size == indices.size:
        return cr
    read = indices[np.isin(indices, held.indices)]
    got = taken(held, read)
    pieces = [(read, got.step_size, got.result), (idx, cr.step_size, cr.result)]
    return held_runs(cell, pieces).result


def taken(held: HeldRuns, indices: np.ndarray) -> CellResult:
    """The held results of the runs `indices`, in that order."""
    at = np.searchsorted(held.indices, indices)
    cr = held.result
    return CellResult(cr.cell, cr.step_size[at], jax.tree.map(lambda v: v[at], cr.result))
