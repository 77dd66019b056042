"""Cells grown to a target half-width (`ExperimentSpec.target_halfwidth`): batches of
`runs` more runs for each cell whose 95% interval of P(stuck) is still too wide, and the
forecast of where each will end, for the progress bar (docs/design.md, "Adaptive Monte
Carlo")."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from gdrelu.analysis import interval_halfwidth, stuck_runs
from gdrelu.cells import CellResult, joined_cell
from gdrelu.progress import progress_after
from gdrelu.spec import ExperimentSpec
from gdrelu.stats import expected_runs


class Forecast(NamedTuple):
    """Where a growing cell is expected to end (`stats.expected_runs`): `added` runs
    beyond its first batch of `runs`, `later` batches after the one beginning."""

    added: int
    later: int


OnForecast = Callable[[Mapping[tuple[int, float], Forecast]], None]  # by (width, Δ)


def grown_to_target(
    spec: ExperimentSpec, cells, done, train, on_check, on_forecast: OnForecast | None = None
) -> list[CellResult]:
    """`done` (each cell's results, in `cells`' order) with `runs` more runs for each cell
    whose interval is wider than 2H, until none is or it has `max_runs` runs. `on_check`
    sees each added batch after the runs before it, as `train_cells` reports its batches;
    `on_forecast` hears every cell's `Forecast` before each batch, and after the last
    (then each cell's final count, no batch later)."""
    done = list(done)
    while True:
        forecasts = [forecast(spec, cr) for cr in done]
        if on_forecast is not None:
            cells_at = [(cr.cell.width, cr.cell.delta) for cr in done]
            on_forecast(dict(zip(cells_at, forecasts, strict=True)))
        sizes = [cr.result.status.size for cr in done]
        wanted = [
            (i, np.arange(size, min(size + spec.runs, spec.max_runs)))
            for i, (size, ends) in enumerate(zip(sizes, forecasts, strict=True))
            if ends.added + spec.runs > size  # a cell that grows ends beyond its count
        ]
        if not wanted:
            return done
        callback = None
        if on_check is not None:
            before = np.concatenate([cr.result.status for cr in done])
            callback = functools.partial(progress_after, on_check, before)
        more = train([(cells[i], idx) for i, idx in wanted], on_check=callback)
        for (i, _), extra in zip(wanted, more, strict=True):
            done[i] = joined_cell(done[i], extra)


def _grows(spec: ExperimentSpec, cell_result: CellResult) -> bool:
    """Whether the cell takes another batch: fewer than `max_runs` runs and an interval
    wider than 2H."""
    return cell_result.result.status.size < spec.max_runs and bool(
        interval_halfwidth(cell_result) > spec.target_halfwidth
    )


def forecast(spec: ExperimentSpec, cell_result: CellResult) -> Forecast:
    """Where the cell is expected to end, from its runs so far: its own count if it takes
    no other batch, else `stats.expected_runs` of its stuck runs."""
    size = cell_result.result.status.size
    if not _grows(spec, cell_result):
        return Forecast(size - spec.runs, 0)
    stuck = int(stuck_runs(cell_result).sum())
    end = expected_runs(stuck, size, spec.target_halfwidth, spec.runs, spec.max_runs)
    end = max(end, min(size + spec.runs, spec.max_runs))  # it takes the next batch at least
    return Forecast(end - spec.runs, -(-(end - size) // spec.runs) - 1)
