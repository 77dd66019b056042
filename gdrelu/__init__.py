"""gdrelu: Monte Carlo studies of how gradient descent fails on two-layer ReLU networks.

Holzmüller & Steinwart (JMLR 2022) proved that two-layer (Leaky)ReLU networks with He
initialization and zero biases, trained by GD on least squares, usually cannot move
their kinks past the data and end in a per-side linear regression. gdrelu trains many
such networks at once (jit + vmap + lax.scan) and estimates how often.
"""

from gdrelu import theory
from gdrelu.cells import Cell, run_key
from gdrelu.data import WeightedData, multinomial_weights, paper_data, six_points
from gdrelu.engine import gd_step, simulate
from gdrelu.init import he_init, swapped_init
from gdrelu.model import (
    Params,
    activation,
    activation_pattern,
    forward,
    kinks,
    max_abs_kink,
    weighted_loss,
)
from gdrelu.outcome import SimulationResult, Status
from gdrelu.runner import run_experiment
from gdrelu.spec import ExperimentSpec, SpecError
from gdrelu.stats import clopper_pearson, failure_probability

__all__ = [
    "Cell",
    "ExperimentSpec",
    "Params",
    "SimulationResult",
    "SpecError",
    "Status",
    "WeightedData",
    "activation",
    "activation_pattern",
    "clopper_pearson",
    "failure_probability",
    "forward",
    "gd_step",
    "he_init",
    "kinks",
    "max_abs_kink",
    "multinomial_weights",
    "paper_data",
    "run_experiment",
    "run_key",
    "simulate",
    "six_points",
    "swapped_init",
    "theory",
    "weighted_loss",
]
