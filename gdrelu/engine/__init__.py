"""The vectorized training engine: many runs at once, with the paper's stopping checks.

A compiled chunk trains every active run `check_every` steps on one of three paths
(`paths`) and checks it (`checks`, docs/theory.md "Outcome of a run"); between chunks the
host moves the runs still active to the front of each device (`placement`), so that work
shrinks as runs finish while shapes stay put: one compile per path and width (`chunk`,
docs/design.md). `simulate` (`simulation`) drives it.

    state       RunState (training), RunInfo (diagnostics), initial_state
    checks      CheckInputs, ChunkScalars, check_one, chunk_end
    paths       general / fixed_pattern / propagator, choose_path, auto_path, gd_step
    placement   Blocking, blocking_for, Layout, arrange, own_lanes_at, put_own_lanes, placed
    chunk       ChunkSettings, chunk_program, run_chunk, exact_chunk
    simulation  simulate: validate, place, train until stopped, collect
    bench       chunk_runner, for benchmarks
"""

from gdrelu.engine.bench import chunk_runner
from gdrelu.engine.checks import CheckInputs, ChunkScalars, check_inputs, chunk_end
from gdrelu.engine.chunk import CPU_COMPILER_OPTIONS, TRACE_COUNT, ChunkSettings
from gdrelu.engine.paths import PATHS, Trained, auto_path, gd_step
from gdrelu.engine.placement import (
    ACCELERATOR_BLOCK,
    ACCELERATOR_REDO,
    ACCELERATOR_UNROLL,
    BLOCK,
    CHECK_BLOCK,
    KERNEL_VARIABLE,
    MIN_BLOCK,
    REDO_BLOCK,
    REDO_NEURONS,
    RUNS_AXIS,
    Blocking,
    blocking_for,
    propagator_kernel,
)
from gdrelu.engine.simulation import simulate
from gdrelu.engine.state import (
    GD,
    MAX_STEPS,
    RunInfo,
    Runs,
    RunState,
    check_step_budget,
    initial_state,
    materialized_params,
)
from gdrelu.outcome import STOP_RULES, STUCK_STATUSES, SimulationResult, Status

__all__ = [
    "ACCELERATOR_BLOCK",
    "ACCELERATOR_REDO",
    "ACCELERATOR_UNROLL",
    "BLOCK",
    "CHECK_BLOCK",
    "CPU_COMPILER_OPTIONS",
    "GD",
    "KERNEL_VARIABLE",
    "MAX_STEPS",
    "MIN_BLOCK",
    "PATHS",
    "REDO_BLOCK",
    "REDO_NEURONS",
    "RUNS_AXIS",
    "STOP_RULES",
    "STUCK_STATUSES",
    "TRACE_COUNT",
    "Blocking",
    "CheckInputs",
    "ChunkScalars",
    "ChunkSettings",
    "RunInfo",
    "RunState",
    "Runs",
    "SimulationResult",
    "Status",
    "Trained",
    "auto_path",
    "blocking_for",
    "check_inputs",
    "check_step_budget",
    "chunk_end",
    "chunk_runner",
    "gd_step",
    "initial_state",
    "materialized_params",
    "propagator_kernel",
    "simulate",
]
