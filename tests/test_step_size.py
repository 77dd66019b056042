"""Step-size rules through the spec, against direct computations on the initial runs."""

import jax
import numpy as np
import pytest

from gdrelu import ExperimentSpec, run_experiment
from gdrelu.cells import Cell, initial_runs


@pytest.mark.parametrize(("data", "width"), [("star", 16), ("six-points", 8)])
def test_param_norm_rule_is_the_factor_over_the_squared_parameter_norm(data, width):
    """`--step-size param-norm --step-factor 2`: h = 2 / Σ (a² + b² + w² + c²) of each run's
    initial network, as the paper's star code applied (its Gram's λ_max twice per epoch)."""
    spec = ExperimentSpec(
        data=data, widths=(width,), deltas=(0.0,), runs=3, step_size="param-norm",
        step_factor=2.0, check_every=10, max_checks=1, stop_on=(),
    )  # fmt: skip
    (cell_result,) = run_experiment(spec)
    params, _, _ = jax.device_get(initial_runs(Cell(width, 0.0, spec), np.arange(3)))
    squares = sum(np.sum(np.square(leaf).reshape(3, -1), axis=1) for leaf in params)
    np.testing.assert_allclose(cell_result.step_size, 2.0 / squares, rtol=1e-13)
