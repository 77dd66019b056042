"""The vectorized training engine: many runs at once, with the paper's stopping checks.

A compiled chunk trains every active run `check_every` steps on one of three paths
(`paths`) and checks it (`checks`, docs/theory.md "Outcome of a run"); between chunks the
host moves the runs still active to the front of each device (`placement`), so that work
shrinks as runs finish while shapes stay put: one compile per path and width (`chunk`,
docs/design.md). `simulate` (`simulation`) drives it.

    state       RunState (training), RunInfo (diagnostics), initial_state
    checks      CheckInputs, check_one, checked_inputs and its refusals and warnings
    paths       general / fixed_pattern / propagator, choose_path, auto_plan, gd_step
    placement   Blocking, blocking_for, Layout, arrange, own_lanes_at, put_own_lanes, placed
    chunk       ChunkSettings, chunk_settings, chunk_program, run_chunk, exact_chunk
    simulation  simulate: validate, place, train until stopped, collect
    bench       chunk_runner, for benchmarks
"""

from gdrelu.engine.bench import chunk_runner
from gdrelu.engine.checks import KinksAmongDataWarning, PointAtZeroWarning, check_inputs
from gdrelu.engine.chunk import TRACE_COUNT
from gdrelu.engine.paths import PATHS, auto_path, auto_plan, gd_step, mixes_paths
from gdrelu.engine.placement import (
    KERNEL_VARIABLE,
    MIN_BLOCK,
    REDO_BLOCK,
    REDO_NEURONS,
    RUNS_AXIS,
    Blocking,
    blocking_for,
    general_kernel,
    propagator_kernel,
    requested_kernel,
)
from gdrelu.engine.simulation import simulate
from gdrelu.engine.state import (
    GD,
    Runs,
    check_step_budget,
    initial_state,
    materialized_params,
)
from gdrelu.outcome import PROOF_RULES, STOP_RULES, SimulationResult, Status

__all__ = [
    "GD",
    "KERNEL_VARIABLE",
    "MIN_BLOCK",
    "PATHS",
    "PROOF_RULES",
    "REDO_BLOCK",
    "REDO_NEURONS",
    "RUNS_AXIS",
    "STOP_RULES",
    "TRACE_COUNT",
    "Blocking",
    "KinksAmongDataWarning",
    "PointAtZeroWarning",
    "Runs",
    "SimulationResult",
    "Status",
    "auto_path",
    "auto_plan",
    "blocking_for",
    "check_inputs",
    "check_step_budget",
    "chunk_runner",
    "gd_step",
    "general_kernel",
    "initial_state",
    "materialized_params",
    "mixes_paths",
    "propagator_kernel",
    "requested_kernel",
    "simulate",
]
