"""The per-run table (runs.csv): one `RunRecord` per run, its columns the record's fields."""

from __future__ import annotations

from typing import NamedTuple

from gdrelu.cells import CellResult
from gdrelu.engine import Status


class RunRecord(NamedTuple):
    """One run: where it belongs, how it ended (`simulate`'s result) and its step size."""

    run_id: str  # "<cell id>-<index>": the same run under every optimizer
    seed: int
    width: int
    delta: float
    optimizer: str
    index: int
    status: str
    stop_step: int
    final_loss: float
    max_kink: float
    step_size: float
    pattern_change_step: int
    loss_below_step: int  # first step with loss < (1 - 1e-6) L_lin; -1: never
    linear_threshold: float
    escaped: bool
    best_validation_loss: float
    test_loss_at_best: float
    best_step: int


RUN_COLUMNS = RunRecord._fields


def run_records(cell_result: CellResult) -> list[RunRecord]:
    """The records of a cell's runs, in index order."""
    cell, res = cell_result.cell, cell_result.result
    spec, cell_id = cell.spec, cell.cell_id  # the id hashes the cell's settings: once
    return [
        RunRecord(
            run_id=f"{cell_id}-{i}",
            seed=spec.seed,
            width=cell.width,
            delta=cell.delta,
            optimizer=spec.optimizer,
            index=i,
            status=Status(int(res.status[i])).label,
            stop_step=int(res.stop_step[i]),
            final_loss=float(res.final_loss[i]),
            max_kink=float(res.max_kink[i]),
            step_size=float(cell_result.step_size[i]),
            pattern_change_step=int(res.pattern_change_step[i]),
            loss_below_step=int(res.loss_below_step[i]),
            linear_threshold=float(res.linear_threshold[i]),
            escaped=bool(res.escaped[i]),
            best_validation_loss=float(res.best_validation_loss[i]),
            test_loss_at_best=float(res.test_loss_at_best[i]),
            best_step=int(res.best_step[i]),
        )
        for i in range(res.status.size)
    ]


def table(cell_results) -> list[RunRecord]:
    """The records of every cell, in cell order."""
    return [record for cr in cell_results for record in run_records(cr)]
