"""Several processes (`--distributed`): each trains runs index, index + count, ... of every
cell, and every process's share is gathered into each cell's whole result (a run's key
depends only on its index: the same runs as one process)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from gdrelu.cells import Cell, CellResult
from gdrelu.memory import BudgetError
from gdrelu.spec import SpecError

Work = Sequence[tuple[Cell, np.ndarray]]  # (cell, run indices), as `runner.Work`


class Processes(NamedTuple):
    """This process's place among `count` (index) and how to collect a pytree of host
    arrays of equal shapes from all of them (stacked on a new leading axis)."""

    index: int
    count: int
    gather: Callable[[Any], Any]

    def all_say(self, ok: bool) -> bool:
        """Whether every process says `ok` (each asks at the same point, as it gathers)."""
        return bool(np.asarray(self.gather(np.asarray(ok))).all())

    def agreed(self, fn: Callable[[], Any], errors, elsewhere: Exception) -> Any:
        """fn() on this process, once every process has said whether its own call raised
        one of `errors`. A refusal on one process then ends them all (it raises its own,
        the others `elsewhere`), where the others would wait at their next gather until it
        timed out, and end in a traceback."""
        try:
            value, refusal = fn(), None
        except errors as err:
            value, refusal = None, err
        everyone = self.all_say(refusal is None)
        if refusal is not None:
            raise refusal
        if not everyone:
            raise elsewhere
        return value


def trained_everywhere(train, work: Work, processes: Processes) -> list[CellResult]:
    """`train(work)` on this process, once every process has said whether its share was
    refused (`SpecError`: a step size that only its own draws refute; `BudgetError`: a
    batch its memory cannot hold): a refusal ends every process (`Processes.agreed`)."""
    elsewhere = SpecError("runs", "another process refused its share (it says why)")
    return processes.agreed(lambda: train(work), (SpecError, BudgetError), elsewhere)


def cell_from_processes(local: CellResult, runs: int, processes: Processes) -> CellResult:
    """A cell's whole result from every process's share (runs index::count each)."""
    share = -(-runs // processes.count)
    padded = jax.tree.map(
        lambda v: np.concatenate([v, np.repeat(v[-1:], share - v.shape[0], axis=0)]),
        (local.step_size, local.result),
    )
    stacked = processes.gather(padded)  # (count, share, ...)
    order = np.arange(runs)
    whole = jax.tree.map(
        lambda v: np.asarray(v)[order % processes.count, order // processes.count], stacked
    )
    return CellResult(local.cell, *whole)
