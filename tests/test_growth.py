"""Cells grown to a target half-width: the forecast of where each will end."""

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
