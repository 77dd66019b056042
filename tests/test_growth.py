"""Cells grown to a target half-width: the forecast of where each will end."""

import numpy as np
import pytest
from conftest import finished_cell

from gdrelu import growth
from gdrelu.cells import Cell
from gdrelu.outcome import Status
from gdrelu.spec import ExperimentSpec


def _cell(stuck: int, runs: int, **growth_fields):
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=10, **growth_fields)
    status = [Status.STUCK] * stuck + [Status.CROSSED] * (runs - stuck)
    return spec, finished_cell(Cell(4, 0.0, spec), status, [False] * runs)


def test_a_cell_that_stops_growing_is_forecast_at_its_own_count():
    """Met (0 of 30 stuck: interval [0, 0.116], half-width 0.058 ≤ 0.1) or at max_runs:
    no batch later, and its runs beyond the first batch of 10 are all it adds."""
    spec, met = _cell(0, 30, target_halfwidth=0.1, max_runs=60)
    assert growth.forecast(spec, met) == growth.Forecast(20, 0)
    spec, full = _cell(15, 60, target_halfwidth=0.01, max_runs=60)
    assert growth.forecast(spec, full) == growth.Forecast(50, 0)


def test_a_growing_cell_is_forecast_at_the_first_count_narrow_enough():
    """0 of 10 stuck toward 0.05: [0, 1 - 0.025^(1/n)] is narrow enough (width 0.1) first
    at n = 36 (ln 0.025 / ln 0.9 = 35.01), so in batches of 10 it ends at 40: 30 runs
    added, 2 batches after the one beginning."""
    spec, cell = _cell(0, 10, target_halfwidth=0.05, max_runs=1000)
    assert growth.forecast(spec, cell) == growth.Forecast(30, 2)


def test_a_growing_cell_takes_its_next_batch_whatever_the_forecast_says(monkeypatch):
    """The bisection reads the fraction observed as p·n stuck, whose rounding can put the
    count a cell has just under the target where the runner's own interval is above it: the
    forecast still counts the batch the runner is about to train, never -1 batches."""
    monkeypatch.setattr(growth, "expected_runs", lambda stuck, runs, *rest: runs)
    spec, cell = _cell(3, 10, target_halfwidth=0.01, max_runs=1000)
    assert growth.forecast(spec, cell) == growth.Forecast(10, 0)


@pytest.mark.parametrize("stuck", [0, 10])
def test_forecasts_at_p_0_and_1_mirror_each_other(stuck):
    """All stuck: the interval [0.025^(1/n), 1], the mirror image of none stuck above."""
    spec, cell = _cell(stuck, 10, target_halfwidth=0.05, max_runs=1000)
    assert growth.forecast(spec, cell) == growth.Forecast(30, 2)


def test_cells_grow_batch_by_batch_until_narrow_enough_or_at_max_runs():
    """The loop itself, with a trainer that makes up its runs (no training): a cell whose
    runs are never stuck meets H = 0.05 first at 36 runs (the forecast test's closed form),
    so from 10 it takes runs 10-19, 20-29 and 30-39 and stops at 40; a cell stuck every
    other run would need hundreds, and stops at max_runs = 45, its last batch cut to runs
    40-44. Each batch holds the next run indices; the last forecasts are the final counts."""
    spec = ExperimentSpec(widths=(4, 8), deltas=(0.0,), runs=10, target_halfwidth=0.05,
                          max_runs=45)  # fmt: skip
    cells = [Cell(4, 0.0, spec), Cell(8, 0.0, spec)]

    def made_up(cell, indices):
        stuck = (indices % 2 == 0) if cell.width == 8 else np.zeros(indices.size, bool)
        status = np.where(stuck, Status.STUCK, Status.CROSSED)
        return finished_cell(cell, status, [False] * indices.size)

    batches, heard = [], []

    def train(wanted, on_check):
        batches.append([(cell.width, indices.tolist()) for cell, indices in wanted])
        return [made_up(cell, indices) for cell, indices in wanted]

    first = [made_up(cell, np.arange(10)) for cell in cells]
    grown = growth.grown_to_target(spec, cells, first, train, None, heard.append)
    assert [cr.result.status.size for cr in grown] == [40, 45]
    runs = [list(range(start, start + 10)) for start in (10, 20, 30)]
    assert batches == [[(4, r), (8, r)] for r in runs] + [[(8, list(range(40, 45)))]]
    np.testing.assert_array_equal(
        grown[1].result.status, made_up(cells[1], np.arange(45)).result.status
    )
    assert heard[0][(4, 0.0)].added == 30
    assert heard[-1] == {(4, 0.0): growth.Forecast(30, 0), (8, 0.0): growth.Forecast(35, 0)}
