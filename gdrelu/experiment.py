"""Compatibility names for code not yet moved to the modules that replaced this one:
`spec`, `cells`, `buckets`, `runner`, `analysis` (and `step_size`, `records`). New code
imports from those."""

from gdrelu.analysis import STUCK_STATUSES, interval_halfwidth, status_counts, stuck_runs
from gdrelu.buckets import shared_width, width_buckets
from gdrelu.cells import Cell, CellResult, initial_runs, noise_keys, run_key
from gdrelu.runner import Processes, run_bytes, run_experiment
from gdrelu.spec import STEP_SIZE_RULES, ExperimentSpec, SpecError

__all__ = [
    "STEP_SIZE_RULES",
    "STUCK_STATUSES",
    "Cell",
    "CellResult",
    "ExperimentSpec",
    "Processes",
    "SpecError",
    "initial_runs",
    "interval_halfwidth",
    "noise_keys",
    "run_bytes",
    "run_experiment",
    "run_key",
    "shared_width",
    "status_counts",
    "stuck_runs",
    "width_buckets",
]
