"""Monte Carlo estimates against the numbers of the paper's own implementation (PAPER.md).

Slow (about a minute): run with `python -m pytest -m slow`.
"""

import numpy as np
import pytest

from gdrelu import ExperimentSpec, run_experiment
from gdrelu.outcome import STUCK_STATUSES

# PAPER.md, "Numbers measured with the paper's own implementation": (width, Δ) -> stuck/400
PAPER = {(16, 0.0): 262 / 400, (16, 0.1): 257 / 400}
PAPER_RUNS = 400
Z = 4.0  # two-sample tolerance in standard errors of the difference


@pytest.mark.slow
def test_failure_probability_matches_the_paper_within_monte_carlo_error():
    spec = ExperimentSpec(widths=(16,), deltas=(0.0, 0.1), runs=1000, seed=11)
    for cell_result in run_experiment(spec):
        cell = cell_result.cell
        status = cell_result.result.status
        ours = np.isin(status, STUCK_STATUSES).mean()
        theirs = PAPER[(cell.width, cell.delta)]
        pooled = (ours * status.size + theirs * PAPER_RUNS) / (status.size + PAPER_RUNS)
        se = np.sqrt(pooled * (1 - pooled) * (1 / status.size + 1 / PAPER_RUNS))
        assert abs(ours - theirs) < Z * se, (cell.width, cell.delta, ours, theirs)
