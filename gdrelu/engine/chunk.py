"""The compiled chunk: `check_every` steps of every active run, then the checks.

On each device the runs go through the chunk in blocks (`placement.Blocking`), the first
num_blocks of them only (a traced count), and are then checked in larger batches: the
run count sets only the shapes, so there is one compile per path and width however many
runs are still active (docs/design.md, "Buckets"). `exact_chunk` redoes on the general
path the runs a fast path could not do exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from gdrelu.compiled import CPU_COMPILER_OPTIONS, jit
from gdrelu.engine.checks import CheckInputs, ChunkScalars, check_one
from gdrelu.engine.paths import PATHS
from gdrelu.engine.placement import (
    RUNS_AXIS,
    STATIC_STEP_KERNELS,
    Blocking,
    Layout,
    fixed_pattern_ready,
    own_lanes_at,
    put_own_lanes,
    shard_map,
)
from gdrelu.engine.state import Runs, RunState
from gdrelu.model import Params, max_abs_kink
from gdrelu.optim import Optimizer
from gdrelu.outcome import Status

TRACE_COUNT = dict.fromkeys(PATHS, 0)  # traces of the chunk program per path, for tests


class ChunkSettings(NamedTuple):
    """What a compiled chunk is specialized to (hashable: a static argument). The chunk's
    step count is data (`ChunkScalars.check_every`) but for the Pallas kernel, whose loop
    count is compiled in (`static_steps`, with `chunk_settings`)."""

    rules: tuple[str, ...]
    path: str
    optimizer: Optimizer
    blocking: Blocking
    static_steps: int | None = None


def chunk_settings(check_every: int, rules, path: str, optimizer, blocking) -> ChunkSettings:
    """The settings of a chunk of `check_every` steps: the count stays data unless the
    propagator's steps go through the Pallas kernel."""
    static = path == "propagator" and blocking.kernel in STATIC_STEP_KERNELS
    return ChunkSettings(rules, path, optimizer, blocking, check_every if static else None)


def _trained_block(
    runs: Runs, inputs: CheckInputs, scalars, settings: ChunkSettings, active=None, **blocks
):
    """`check_every` steps for every run of one block: (runs, exact, ChunkEnd). On the
    general path, only the first `active` lanes are runs (a traced count; None: all)."""
    num_steps = scalars.check_every if settings.static_steps is None else settings.static_steps
    if settings.path == "general":
        blocks = {"kernel": settings.blocking.general, "active": active}
    trained = PATHS[settings.path](
        runs.state,
        inputs.data,
        inputs.step_size,
        scalars.alpha,
        num_steps,
        settings.optimizer,
        settings.blocking.unroll,
        **blocks,
    )
    info = runs.info
    info = info._replace(
        max_kink=jnp.maximum(info.max_kink, trained.kink),
        pattern_change=_first(info.pattern_change, trained.pattern_change),
        loss_below=_first(info.loss_below, trained.loss_below),
    )
    state = trained.state._replace(step=trained.state.step + num_steps)
    return Runs(state, info), trained.exact, trained.end


def _first(before, now):
    """The first step of an event: `before` if it happened already (≥ 0), else `now`."""
    return jnp.where(before >= 0, before, now)


def _checked_block(runs: Runs, inputs, end, scalars: ChunkScalars, settings: ChunkSettings):
    """The checks of a block of trained runs: (runs, status code, loss, fixed_next: whether
    the run may train the next chunk on the path's own blocks, `paths.mixes_paths`)."""
    lines = settings.path == "propagator"  # params not materialized: outputs from the lines
    check = functools.partial(check_one, rules=settings.rules, lines=lines)
    code, loss, info = jax.vmap(check, in_axes=(0, 0, 0, None))(runs, inputs, end, scalars)
    params = runs.state.params
    if lines:  # an exact propagator chunk leaves every kink in the data-free zone
        fixed_next = jnp.ones(code.shape, bool)
    elif params.a.ndim > 2:
        fixed_next = jnp.zeros(code.shape, bool)
    else:  # whether the next chunk can start on the fixed-pattern path: every kink inside
        kinks = jax.vmap(max_abs_kink)(params)
        fixed_next = fixed_pattern_ready(kinks, inputs.data.x, runs.state.within_sides)
    return runs._replace(info=info), code, loss, fixed_next


def _part_at(tree, start, size):
    return jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, start, size), tree)


def _put_at(out, done, start):
    put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=0)
    return jax.tree.map(put, out, done)


def _trained_blocks(runs: Runs, inputs, num_blocks, scalars, settings: ChunkSettings):
    """The first num_blocks[1] blocks of one device's share trained: (runs, exact, end).
    On the fixed-pattern path the blocks from num_blocks[0] on train on the general path;
    the propagator trains the first num_blocks[0] only (`exact_chunk` redoes the others)."""
    count = runs.info.max_kink.shape[0]
    block = min(settings.blocking.block, count)

    def on(path, active=None):
        chunk_settings = settings._replace(path=path)
        return lambda part: _trained_block(*part, scalars, chunk_settings, active=active)

    if settings.path == "propagator":  # O(1) per step: only its steps go block by block
        visited = _visited_blocks(num_blocks, settings)
        blocks = {"blocks": (block, visited), "kernel": settings.blocking.kernel}
        return _trained_block(runs, inputs, scalars, settings, **blocks)

    def runs_in(j, lanes):  # the runs of the j-th block of a part whose first `lanes` are runs
        return jnp.clip(lanes - j * block, 0, block)

    def train(i, out):
        part = _part_at((out[0], inputs), i * block, block)
        if settings.path == "fixed_pattern":
            general = on("general", runs_in(i - num_blocks[0], num_blocks[3]))
            done = jax.lax.cond(i < num_blocks[0], on("fixed_pattern"), general, part)
        else:
            done = on(settings.path, runs_in(i, num_blocks[2]))(part)
        return _put_at(out, done, i * block)

    one_block = jax.eval_shape(on(settings.path), _part_at((runs, inputs), 0, block))
    end = jax.tree.map(lambda v: jnp.zeros((count, *v.shape[1:]), v.dtype), one_block[2])
    start = (runs, jnp.ones((count,), bool), end)
    return jax.lax.fori_loop(0, num_blocks[1], train, start)


def _visited_blocks(num_blocks, settings: ChunkSettings):
    """The blocks a chunk trains and checks: num_blocks[1], but num_blocks[0] on the
    propagator, which leaves its batch's general blocks to `exact_chunk`'s redos."""
    return num_blocks[0] if settings.path == "propagator" else num_blocks[1]


def _local_chunk(runs: Runs, inputs, num_blocks, scalars: ChunkScalars, *, settings):
    """`run_chunk` on one device's share of the runs: the first num_blocks[1] blocks train,
    then their runs are checked `settings.blocking.check` at a time (the checks' small
    kernels and eigendecompositions cost less per run in larger batches than the steps'
    blocks)."""
    count = runs.info.max_kink.shape[0]
    block = min(settings.blocking.block, count)
    check = min(settings.blocking.check, count)
    trained, exact, end = _trained_blocks(runs, inputs, num_blocks, scalars, settings)

    def checked(j, out):
        # the last batch ends at the share's end; lanes it checks twice get the same result
        start = jnp.minimum(j * check, count - check)
        part = _part_at((trained, inputs, end), start, check)
        return _put_at(out, _checked_block(*part, scalars, settings), start)

    out = (
        trained,
        jnp.full((count,), Status.RUNNING, jnp.int8),
        jnp.zeros((count,), runs.info.max_kink.dtype),
        jnp.zeros((count,), bool),
    )
    batches = (_visited_blocks(num_blocks, settings) * block + check - 1) // check
    runs, code, loss, fixed_next = jax.lax.fori_loop(0, batches, checked, out)
    return runs, code, loss, exact, fixed_next


def chunk_program(
    runs: Runs,
    inputs: CheckInputs,
    num_blocks,
    scalars: ChunkScalars,
    *,
    settings: ChunkSettings,
    mesh,
):
    """A chunk on every device of `mesh`, each visiting the first num_blocks[d, 1] blocks
    of `settings.blocking.block` runs of its share: (runs, status code, loss, exact,
    fixed_next), runs axis first. On the fixed-pattern path, the blocks from
    num_blocks[d, 0] on (runs whose kinks left the data-free zone) train on the general
    path; the propagator visits the first num_blocks[d, 0] only. `fixed_next` says which
    runs can start the next chunk on the path's own blocks (`paths.mixes_paths`).
    """
    TRACE_COUNT[settings.path] += 1
    local = functools.partial(_local_chunk, settings=settings)
    lanes, scalar = PartitionSpec(RUNS_AXIS), PartitionSpec()
    return shard_map(
        lambda r, i, count, s: local(r, i, count[0], s),
        mesh=mesh,
        in_specs=(lanes, lanes, lanes, scalar),  # num_blocks: (devices, 2)
        out_specs=lanes,
    )(runs, inputs, num_blocks, scalars)


def compiled_programs(program=chunk_program) -> dict[str, Callable]:
    """`program` (a chunk program) jitted with the options of each kind of platform
    (`compiled.CPU_COMPILER_OPTIONS`), chosen by its mesh's platform."""
    return {
        platform: jax.jit(program, static_argnames=("settings", "mesh"), compiler_options=opts)
        for platform, opts in (("cpu", CPU_COMPILER_OPTIONS), ("other", None))
    }


CHUNK_PROGRAMS = compiled_programs()


def run_chunk(
    runs: Runs, inputs: CheckInputs, num_blocks, scalars: ChunkScalars, *, settings, mesh
):
    """`chunk_program`, compiled for the mesh's platform (one program for every kernel off
    the propagator path); on the propagator path the neurons never enter or leave the
    compiled program (they do not change), so a chunk copies O(1) data per run."""
    platform = "cpu" if mesh.devices.flat[0].platform == "cpu" else "other"
    program = functools.partial(CHUNK_PROGRAMS[platform], mesh=mesh)
    settings = settings._replace(blocking=_compiled_blocking(settings, runs, mesh))
    if settings.path != "propagator":
        return program(runs, inputs, num_blocks, scalars, settings=settings)
    compact = runs._replace(state=_compact(runs.state))
    compact, *rest = program(compact, inputs, num_blocks, scalars, settings=settings)
    return (compact._replace(state=_expanded(compact.state, runs.state)), *rest)


def _compiled_blocking(settings: ChunkSettings, runs: Runs, mesh):
    """The settings' blocking as the chunk program reads it: blocks and check batches of at
    most a device's lanes, no redo sizes, the propagator's kernel on the propagator only,
    and the general path's on the paths with general blocks only (settings that differ
    only elsewhere share one program)."""
    blocking, count = settings.blocking, runs.info.max_kink.shape[0] // mesh.size
    propagated = settings.path == "propagator"
    kernel = blocking.kernel if propagated else "xla"
    general = "xla" if propagated else blocking.general  # and the fixed-pattern path's blocks
    block, check = min(blocking.block, count), min(blocking.check, count)
    return blocking._replace(
        block=block, check=check, redo=0, redo_block=None, kernel=kernel, general=general
    )


@jit
def _compact(state: RunState) -> RunState:
    """The propagator's view of a batch: the tracked neurons as the only neurons (runs, T),
    in the parameters and the optimizer's state, and no slope0/regular, so that a chunk
    moves O(1) data per run, not O(n)."""
    tracked, shape = state.deferred.tracked, state.params.b.shape

    def pick(v):  # a leaf with a neurons axis: a, b, w and the heavy ball's velocity of them
        return jnp.take_along_axis(v, tracked, axis=1) if v.shape == shape else v

    index = jnp.broadcast_to(jnp.arange(tracked.shape[1], dtype=tracked.dtype), tracked.shape)
    return state._replace(
        params=Params(*map(pick, state.params[:3]), state.params.c),
        opt_state=jax.tree.map(pick, state.opt_state),
        slope0=None,
        regular=None,
        deferred=state.deferred._replace(tracked=index),
    )


def _expanded(compact: RunState, full: RunState) -> RunState:
    """`compact` after a propagator chunk with the neurons of `full` back (they do not
    change: the chunk's Φ_t is deferred), in the parameters and the optimizer's state."""
    shape = full.params.b.shape
    opt_state = jax.tree.map(
        lambda f, c: f if f.shape == shape else c, full.opt_state, compact.opt_state
    )
    return compact._replace(
        params=full.params._replace(c=compact.params.c),
        opt_state=opt_state,
        slope0=full.slope0,
        regular=full.regular,
        deferred=compact.deferred._replace(tracked=full.deferred.tracked),
    )


def _redo(lanes, start: Runs, inputs, scalars, settings: ChunkSettings, layout: Layout, out):
    """Train `lanes` again from the chunk's `start` with `settings`, a few lanes at a time,
    each device its own; `out` = (runs, code, loss, fixed_next) of the chunk, updated."""
    runs, code, loss, fixed_next = out
    code, fixed_next = code.copy(), fixed_next.copy()
    mesh = layout.sharding.mesh
    # The fields the chunk left unchanged are `start`'s own arrays in `runs`, which the
    # first put (donating `runs`) deletes: they are read from `runs`, whose real lanes not
    # yet redone still hold the start's values (a padding lane may read a redone one: its
    # result is dropped). (Gathering every batch first would hold them
    # all at once: up to a second copy of the batch where every run diverged.)
    unchanged = jax.tree.map(lambda first, now: first is now, start, runs)
    blocking = settings.blocking._replace(block=layout.redo_block)
    settings = settings._replace(blocking=blocking)
    for positions, taken in layout.own_batches(lanes, layout.redo_lanes):
        source = jax.tree.map(lambda s, r, same: r if same else s, start, runs, unchanged)
        redo_runs, redo_inputs = own_lanes_at((source, inputs), positions, mesh)
        redo_runs, redo_code, redo_loss, _, redo_next = run_chunk(
            redo_runs, redo_inputs, layout.redo_blocks(taken), scalars, settings=settings, mesh=mesh
        )
        runs, loss = put_own_lanes((runs, loss), positions, (redo_runs, redo_loss), mesh)
        # read back now: with every redo in flight at once (reading back after the loop),
        # XLA's CPU devices hung until XLA aborted the process (2026-12-03, when the lanes
        # were all-gathered)
        real = taken >= 0
        code[lanes[taken[real]]] = np.asarray(redo_code)[real]
        fixed_next[lanes[taken[real]]] = np.asarray(redo_next)[real]
    return runs, code, loss, fixed_next


def exact_chunk(
    start: Runs, inputs, scalars: ChunkScalars, settings: ChunkSettings, layout: Layout
):
    """One chunk for the active lanes, with those it left redone exactly: (runs, code of
    every lane, loss, fixed_next: whether every kink is inside the data).

    The propagator is exact while the sides of the neurons stay put, the fixed-pattern
    step while no kink reaches the data: a run for which that failed, or that crossed or
    diverged (it may have crossed before its values blew up), is trained again on the
    general path. Few runs need this, once each (a crossed GD run stops; another
    optimizer's run goes on in the general blocks of its batch while its kinks are out of
    the data-free zone). The propagator leaves the runs of those blocks untrained: they
    are trained here, as redos (`placement.redone_blocking`).
    """
    mesh = layout.sharding.mesh
    runs, code, loss, exact, fixed_next = run_chunk(
        start, inputs, layout.num_blocks, scalars, settings=settings, mesh=mesh
    )
    code, exact, fixed_next = np.asarray(code), np.asarray(exact), np.asarray(fixed_next)
    left = np.isin(code, (Status.CROSSED, Status.DIVERGED)) | ~exact
    if settings.path == "propagator":
        left |= layout.general
    left &= layout.slots >= 0
    out = (runs, code, loss, fixed_next)
    if settings.path == "general" or not left.any():
        return out
    general = settings._replace(path="general")
    return _redo(np.flatnonzero(left), start, inputs, scalars, general, layout, out)
