"""The vectorized training engine: GD on many runs at once, with the paper's stopping checks.

A jit-compiled chunk runs `check_every` GD steps with `lax.scan` for each block of runs
(`blocking_for`: 64 on a CPU, a device's whole share on an accelerator), tracking
max_i |b_i/a_i| after every step; then it checks the runs in larger batches
(PAPER.md, "Outcome of a run"). Between chunks the host moves the runs still active to
the front, and the next chunk only visits their blocks (a traced count), so work shrinks
as runs finish while every array keeps its shape: one compile per path and width.

Paths (`_PATHS`): "general" (autodiff of the loss, any input dimension), "fixed_pattern"
(O(n) per step, `fastpath`) and "propagator" (O(1) per step, `propagator`); a chunk the
fast paths cannot do exactly is redone for its runs on an exact path.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdrelu import theory
from gdrelu.data import WeightedData
from gdrelu.fastpath import fixed_pattern_gradient, side_moments
from gdrelu.model import (
    STANDARD,
    Params,
    Scaling,
    activation_pattern,
    active_neurons,
    forward,
    loss_gradient,
    max_abs_kink,
    padded,
    scaling_of,
)
from gdrelu.optim import Optimizer, get_optimizer, minibatch
from gdrelu.propagator import (
    IRREGULAR_CAPACITY,
    ChunkEnd,
    Deferred,
    deferred,
    deferred_steps,
    materialize,
    regular_neurons,
)


class Status(enum.IntEnum):
    """How a run ended. RUNNING only appears while a simulation is in progress."""

    RUNNING = 0
    CROSSED = 1
    STUCK = 2
    A_DEGENERATE = 3
    X_DEGENERATE = 4
    EARLY_STOPPED = 5
    DIVERGED = 6
    UNFINISHED = 7

    @property
    def label(self) -> str:
        return self.name.lower()


STOP_RULES = ("crossed", "stuck", "degenerate")


class RunState(NamedTuple):
    """The scan carry of a batch of runs (leading runs axis on every field)."""

    params: Params
    max_kink: jax.Array  # (runs,) max over steps so far of max_i |b_i/a_i|
    best_val: jax.Array  # (runs,) best validation loss at a check so far
    stale_checks: jax.Array  # (runs,) checks since the validation loss last improved
    test_at_best: jax.Array  # (runs,) test loss at the check of best_val
    best_step: jax.Array  # (runs,) step of that check
    slope0: jax.Array  # (runs, n) w_i/a_i at the start, for the propagator path
    regular: jax.Array  # (runs, n) neuron i still lies in its side's plane (`propagator`)
    deferred: Deferred  # the propagator's unapplied Φ_t, Grams, tracked neurons
    opt_state: optax.OptState  # the optimizer's state (empty for GD)
    noise_key: jax.Array  # (runs, 2) uint32 key data of the run's minibatch noise
    step: jax.Array  # (runs,) steps taken
    pattern_change: jax.Array  # (runs,) first step whose activation pattern differs; -1: none
    scaling: Scaling  # (runs,) each: the parameterization's forward multipliers


class SimulationResult(NamedTuple):
    """Per-run outcome of `simulate`, as numpy arrays with a leading runs axis."""

    status: np.ndarray  # Status codes, int8
    stop_step: np.ndarray  # GD steps taken when the run stopped
    params: Params  # final parameters
    max_kink: np.ndarray  # max over all steps and neurons of |b_i/a_i|
    final_loss: np.ndarray  # training loss at the final parameters
    pattern_change_step: np.ndarray  # first step whose activation pattern differs; -1: none
    linear_threshold: np.ndarray  # L_lin: the loss of the linear-regime minimum
    escaped: np.ndarray  # final classification, valid for every optimizer (`detectors`)
    best_validation_loss: np.ndarray  # best validation loss over the checks
    test_loss_at_best: np.ndarray  # test loss at that check (NaN without a test set)
    best_step: np.ndarray  # the step of that check


class _CheckInputs(NamedTuple):
    data: WeightedData
    step_size: jax.Array
    validation: WeightedData  # the training points with validation weights, or held out
    test: WeightedData  # held-out test points (the validation set when none are given)
    roots: tuple[jax.Array, jax.Array]  # M^{1/2}, (M^{1/2})⁺ of the data (1-D), or zeros


@jax.jit
def check_inputs(data: WeightedData, step_size, validation, test) -> _CheckInputs:
    """What the checks need besides the state, batched; data-only terms computed once."""
    if data.x.ndim == 2:
        roots = jax.vmap(theory.moment_roots)(data)
    else:  # d-dim input: no certificate
        zeros = jnp.zeros((data.x.shape[0], 4, 4), data.y.dtype)
        roots = (zeros, zeros)
    return _CheckInputs(data, step_size, validation, test, roots)


def gd_step(params: Params, data: WeightedData, step_size, alpha=0.0) -> Params:
    """One GD step θ ← θ - h ∇L(θ) of one run."""
    grads = loss_gradient(params, data.x, data.y, data.weights, alpha)
    return jax.tree.map(lambda p, g: p - step_size * g, params, grads)


def _all_finite(params, loss) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]
    return jnp.all(jnp.stack(leaves)) & jnp.isfinite(loss)


def chunk_end(params: Params) -> ChunkEnd:
    """The checks' view of one run after a general or fixed-pattern chunk (O(n) or O(nm))."""
    if params.a.ndim > 1:  # d-dim input: no certificate
        zeros = jnp.zeros((2, 3, 3), params.b.dtype)
        return ChunkEnd(zeros, zeros[0, :1], jnp.ones(1, bool))
    theta = jnp.stack([params.a, params.b, params.w], -1)
    return ChunkEnd(theory.neuron_grams(params), theta, active_neurons(params))


def _network_outputs(state: RunState, data: WeightedData, end: ChunkEnd, alpha, fixed_pattern):
    """f(x_j): from the per-side lines when the pattern is known to be fixed, else directly."""
    if fixed_pattern:
        return theory.linear_outputs(end.grams, state.params.c, data.x, alpha)
    return forward(state.params, data.x, alpha, state.scaling)


def _held_out_loss(state: RunState, points: WeightedData, alpha) -> jax.Array:
    residual = forward(state.params, points.x, alpha, state.scaling) - points.y
    return 0.5 * jnp.sum(points.weights * residual * residual)


def _check_one(state, inputs, end, alpha, min_delta, patience, rules, fixed_pattern):
    """Stopping checks of one run after a chunk, and the validation bookkeeping:
    (status code, loss, state with best_val, stale_checks, test_at_best, best_step)."""
    params, data = state.params, inputs.data
    residual = _network_outputs(state, data, end, alpha, fixed_pattern) - data.y
    loss = 0.5 * jnp.sum(data.weights * residual * residual)
    if fixed_pattern:  # O(1): the Grams, c and the tracked neurons, not the n neurons
        finite = _all_finite((end.grams, end.witnesses), loss) & jnp.isfinite(params.c)
    else:
        finite = _all_finite(params, loss)
    conditions = [~finite]
    codes = [Status.DIVERGED]
    if "crossed" in rules:  # 1-D: the paper's kink rule; d-dim: the pattern changed
        if data.x.ndim == 1:
            conditions.append(state.max_kink >= jnp.min(jnp.abs(data.x)))
        else:
            conditions.append(state.pattern_change >= 0)
        codes.append(Status.CROSSED)
    if "degenerate" in rules:
        if fixed_pattern:  # no real neuron on a side: its Gram is 0 (a_i = 0 counts as -)
            one_sided = jnp.any(jnp.trace(end.grams, axis1=-2, axis2=-1) == 0)
        else:
            one_sided = theory.a_degenerate(params)
        conditions += [one_sided, theory.x_degenerate(data)]
        codes += [Status.A_DEGENERATE, Status.X_DEGENERATE]
    if "stuck" in rules:
        eigenvectors = "rows" if "reference_rows" in rules else "columns"
        stuck = theory.certificate(
            end.grams,
            params.c,
            data,
            inputs.step_size,
            inputs.roots,
            end.witnesses,
            end.real,
            alpha=alpha,
            eigenvectors=eigenvectors,
        )
        conditions.append(stuck)
        codes.append(Status.STUCK)
    if "held_out" in rules:
        val = _held_out_loss(state, inputs.validation, alpha)
        test = _held_out_loss(state, inputs.test, alpha)
    else:
        val = test = 0.5 * jnp.sum(inputs.validation.weights * residual * residual)
    improved = val < state.best_val - min_delta
    state = state._replace(
        best_val=jnp.where(improved, val, state.best_val),
        stale_checks=jnp.where(improved, 0, state.stale_checks + 1),
        test_at_best=jnp.where(improved, test, state.test_at_best),
        best_step=jnp.where(improved, state.step, state.best_step),
    )
    if "early_stopping" in rules:
        conditions.append(state.stale_checks >= patience)
        codes.append(Status.EARLY_STOPPED)
    code = jnp.select(conditions, [jnp.int8(c) for c in codes], jnp.int8(Status.RUNNING))
    return code, loss, state


GD = get_optimizer("gd")


@functools.partial(jax.jit, static_argnames=("optimizer",))
def initial_state(
    params: Params, step_size=None, noise_key=None, scaling=None, *, optimizer=GD
) -> RunState:
    """The scan carry of a batch of runs before their first step.

    step_size (runs,) builds the optimizer's state; noise_key (runs, 2) uint32 key data
    seeds the minibatches of a stochastic optimizer (zeros when not given); scaling holds
    (runs,) multipliers of the parameterization (standard when not given).
    """
    runs, dtype = params.c.shape[0], params.c.dtype
    scaling = Scaling(
        *(jnp.broadcast_to(jnp.asarray(v, dtype), (runs,)) for v in scaling or STANDARD)
    )
    if step_size is None:
        step_size = jnp.zeros((runs,), dtype)
    if noise_key is None:
        noise_key = jnp.zeros((runs, 2), jnp.uint32)
    opt_state = jax.vmap(lambda p, h: optimizer.transformation(h).init(p))(params, step_size)
    if params.a.ndim == 2:
        slope0, regular = jax.vmap(regular_neurons)(params)
    else:  # d-dim input: only the general path
        slope0, regular = jnp.zeros(params.b.shape, dtype), jnp.zeros(params.b.shape, bool)
    return RunState(
        params=params,
        max_kink=jax.vmap(max_abs_kink)(params, scaling),
        best_val=jnp.full((runs,), jnp.inf, dtype),
        stale_checks=jnp.zeros((runs,), jnp.int32),
        test_at_best=jnp.full((runs,), jnp.inf, dtype),
        best_step=jnp.zeros((runs,), jnp.int32),
        slope0=slope0,
        regular=regular,
        deferred=_deferred(params, slope0, regular),
        opt_state=opt_state,
        noise_key=noise_key,
        step=jnp.zeros((runs,), jnp.int32),
        pattern_change=jnp.full((runs,), -1, jnp.int32),
        scaling=scaling,
    )


def _deferred(params: Params, slope0, regular) -> Deferred:
    if params.a.ndim == 2:
        return deferred(params, slope0, regular)
    runs, dtype, size = params.c.shape[0], params.c.dtype, 4 + IRREGULAR_CAPACITY
    zeros = jnp.zeros((runs, 2, 3, 3), dtype)
    false = jnp.zeros((runs, size), bool)
    return Deferred(zeros, zeros, jnp.zeros((runs, size), jnp.int32), false, false[:, 0])


@jax.jit
def materialized_params(state: RunState) -> Params:
    """The parameters of a batch of runs, with the propagator's pending Φ_t applied."""
    if state.params.a.ndim != 2:
        return state.params
    return materialize(state.params, state.deferred.phi)


def _side_changes(params: Params, start: Params) -> jax.Array:
    """Which neurons of a 1-D run are on another side (sign a_i) than at `start`; (n,)."""
    if params.a.ndim > 1:
        return jnp.zeros(params.b.shape, bool)
    return (params.a > 0) != (start.a > 0)


def _trained(
    state: RunState,
    data: WeightedData,
    step_size,
    alpha,
    num_steps,
    optimizer,
    unroll=1,
    fixed_pattern=False,
):
    """`num_steps` steps of `optimizer` on one run: (state, max over the steps of
    max_i |b_i/a_i|, which neurons changed side at some step). The gradient is the
    loss's (`model.loss_gradient`, O(n·m)), or with `fixed_pattern` the per-side lines'
    (`fastpath.fixed_pattern_gradient`, O(n); exact while every kink stays inside the
    data, so the caller checks the max kink and the sides)."""
    params = state.params
    transformation = optimizer.transformation(step_size)
    key = jax.random.wrap_key_data(state.noise_key)
    scaling = state.scaling
    moments = side_moments(data) if fixed_pattern and not optimizer.stochastic else None
    if not fixed_pattern:  # the initial pattern until it changes
        pattern = activation_pattern(params, data.x, scaling)
    active = active_neurons(params)  # padding stays padding: one mask for the chunk

    def gradient(p, t):
        batch = minibatch(optimizer, data, key, state.step + t)
        if not fixed_pattern:
            return loss_gradient(p, batch.x, batch.y, batch.weights, alpha, scaling)
        return fixed_pattern_gradient(p, side_moments(batch) if moments is None else moments, alpha)

    def body(carry, t):
        p, opt, kink, changed, first = carry
        updates, opt = transformation.update(gradient(p, t), opt, p)
        p = optax.apply_updates(p, updates)
        if not fixed_pattern:  # (an exact fixed-pattern chunk changes no pattern)
            moved = jnp.any(activation_pattern(p, data.x, scaling) != pattern)
            first = jnp.where((first < 0) & moved, state.step + t + 1, first)
        changed = changed | _side_changes(p, params)
        kink = jnp.maximum(kink, max_abs_kink(p, scaling, active))
        return (p, opt, kink, changed, first), None

    carry = (
        params,
        state.opt_state,
        jnp.zeros_like(params.c),
        jnp.zeros(params.b.shape, bool),
        state.pattern_change,
    )
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    (params, opt, kink, changed, first), _ = jax.lax.scan(body, carry, steps, unroll=unroll)
    return state._replace(params=params, opt_state=opt, pattern_change=first), kink, changed


def _general(state: RunState, data, step_size, alpha, num_steps, optimizer, unroll=1):
    one = jax.vmap(_trained, in_axes=(0, 0, 0, None, None, None, None))
    state = state._replace(params=materialized_params(state))
    state, kink, changed = one(state, data, step_size, alpha, num_steps, optimizer, unroll)
    return (
        _refreshed(state, changed),
        kink,
        jnp.ones(kink.shape, bool),
        jax.vmap(chunk_end)(state.params),
    )


def _refreshed(state: RunState, changed) -> RunState:
    """`state` with the propagator's bookkeeping recomputed from its (materialized) params."""
    regular = state.regular & ~changed
    return state._replace(regular=regular, deferred=_deferred(state.params, state.slope0, regular))


def _fixed_pattern(state: RunState, data, step_size, alpha, num_steps, optimizer, unroll=1):
    """Any optimizer on the gradients of `fastpath` (O(n) per step; O(n + B) with
    minibatches), exact while no kink reaches the data and no neuron changes side (the
    redo on the general path then records the step of the pattern change)."""
    one = jax.vmap(
        functools.partial(_trained, fixed_pattern=True), in_axes=(0, 0, 0, None, None, None, None)
    )
    state = state._replace(params=materialized_params(state))
    state, kink, changed = one(state, data, step_size, alpha, num_steps, optimizer, unroll)
    exact = (kink < jnp.min(jnp.abs(data.x), axis=-1)) & ~jnp.any(changed, axis=-1)
    return _refreshed(state, changed), kink, exact, jax.vmap(chunk_end)(state.params)


def _propagator_steps(
    state: RunState,
    data,
    step_size,
    alpha,
    num_steps,
    optimizer,
    unroll=1,
    blocks=None,
    kernel="xla",
):
    """GD on the propagator; `blocks` = (runs per block, traced count of blocks to train),
    by default the whole batch in one block; `kernel` as in `Blocking`."""
    del optimizer  # GD only
    moments = jax.vmap(side_moments)(data)
    block, count = blocks or (state.params.c.shape[0], None)
    c, pending, kink, exact, end = deferred_steps(
        state.params,
        state.deferred,
        moments,
        step_size,
        alpha,
        num_steps,
        block=block,
        unroll=unroll,
        num_blocks=count,
        kernel=kernel,
    )
    return state._replace(params=state.params._replace(c=c), deferred=pending), kink, exact, end


# Batched training paths: (state, data, step_size, alpha, num_steps, optimizer, unroll),
# a leading runs axis on all but the last four (unroll: GD steps per iteration of the
# compiled loop), to (state, max |b/a| over the steps, exact
# (runs,), ChunkEnd). Only "general" trains with any optimizer; the others are GD. The
# fast paths' results may be inexact (then redone on "general"); the propagator leaves
# its Φ_t unapplied (`materialized_params`), and the checks read the network's outputs
# at the data from the per-side lines.
_PATHS = {
    "general": _general,
    "fixed_pattern": _fixed_pattern,
    "propagator": _propagator_steps,
}
TRACE_COUNT = dict.fromkeys(_PATHS, 0)
RUNS_AXIS = "runs"
BLOCK = 64  # runs per block on a CPU: the propagator's per-step state stays in L1 cache
CHECK_BLOCK = 512  # runs per check batch on a CPU: fewer kernel launches per run
REDO_BLOCK = 16  # runs per redo on a CPU: few runs leave a chunk, a redo costs O(n) or O(nm)
ACCELERATOR_BLOCK = 1 << 15  # most runs per block on a GPU or TPU
ACCELERATOR_REDO = 256
ACCELERATOR_UNROLL = 8  # GD steps per loop iteration on a GPU or TPU


class Blocking(NamedTuple):
    """How a device's runs go through a chunk: `block` runs at a time (one after the
    other), redos of `redo` runs, `unroll` GD steps per iteration of the compiled loop,
    the checks `check` runs at a time, the propagator's steps on `kernel` ("xla": XLA's
    loop; "pallas": one Pallas kernel, `gdrelu.kernel`; "interpret": that kernel in
    Pallas' interpret mode, on a CPU)."""

    block: int
    redo: int
    unroll: int
    check: int
    kernel: str = "xla"


KERNEL_VARIABLE = "GDRELU_PROPAGATOR_KERNEL"


def propagator_kernel(platform: str, kernel: str | None = None) -> str:
    """`kernel` (default: $GDRELU_PROPAGATOR_KERNEL, else "xla"), checked for `platform`."""
    kernel = kernel or os.environ.get(KERNEL_VARIABLE) or "xla"
    if kernel not in ("xla", "pallas", "interpret"):
        raise ValueError(
            f"kernel (${KERNEL_VARIABLE}): 'xla', 'pallas' or 'interpret', not {kernel!r}"
        )
    if kernel == "pallas" and platform != "gpu":
        raise ValueError(
            f"kernel (${KERNEL_VARIABLE}) 'pallas' compiles with Triton for GPUs, not "
            f"{platform}; 'interpret' runs it in Pallas' interpret mode"
        )
    return kernel


def blocking_for(devices, runs: int, block: int | None = None, kernel=None) -> Blocking:
    """`Blocking` of `runs` runs spread over `devices`. A CPU takes blocks of `BLOCK` runs
    that stay in cache, and checks `CHECK_BLOCK` runs at a time. An accelerator takes its
    whole share in one block (rounded up to `BLOCK`, at most `ACCELERATOR_BLOCK`): a
    block's steps are a loop of small kernels
    whose launch cost does not grow with the runs, so small blocks would leave it idle;
    for the same reason it checks them all at once, redoes `ACCELERATOR_REDO` runs at a
    time and unrolls its loops. `block` overrides the block size; `kernel` is the
    propagator's (`Blocking`; default $GDRELU_PROPAGATOR_KERNEL, else "xla")."""
    kernel = propagator_kernel(devices[0].platform, kernel)
    if devices[0].platform == "cpu":
        block = block or BLOCK
        return Blocking(block, REDO_BLOCK, 1, block * max(1, CHECK_BLOCK // block), kernel)
    share = -(-runs // len(devices))
    if block is None:
        block = min(ACCELERATOR_BLOCK, BLOCK * -(-share // BLOCK))
    return Blocking(block, ACCELERATOR_REDO, ACCELERATOR_UNROLL, block, kernel)


def _shard_map(fn, *, mesh, in_specs, out_specs):
    """`jax.shard_map` without the replication checks (scan carries start unvarying)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


class _ChunkSettings(NamedTuple):
    """What a compiled chunk is specialized to (hashable: a static argument)."""

    check_every: int
    rules: tuple[str, ...]
    path: str
    optimizer: Optimizer
    blocking: Blocking


def _trained_block(state, inputs, alpha, settings: _ChunkSettings, **blocks):
    """`check_every` steps for every run of one block: (state, exact, ChunkEnd)."""
    state, kink, exact, end = _PATHS[settings.path](
        state,
        inputs.data,
        inputs.step_size,
        alpha,
        settings.check_every,
        settings.optimizer,
        settings.blocking.unroll,
        **blocks,
    )
    state = state._replace(
        max_kink=jnp.maximum(state.max_kink, kink), step=state.step + settings.check_every
    )
    return state, exact, end


def _checked_block(state, inputs, end, alpha, min_delta, patience, settings: _ChunkSettings):
    """The checks of a block of trained runs: (state, status code, loss, fixed_next)."""
    check = jax.vmap(_check_one, in_axes=(0, 0, 0, None, None, None, None, None))
    lines = settings.path == "propagator"  # params not materialized: outputs from the lines
    code, loss, state = check(state, inputs, end, alpha, min_delta, patience, settings.rules, lines)
    if settings.path == "propagator" or state.params.a.ndim > 2:
        fixed_next = jnp.zeros(code.shape, bool)
    else:  # whether the next chunk can start on the fixed-pattern path: every kink inside
        kinks = jax.vmap(max_abs_kink)(state.params)
        fixed_next = kinks < jnp.min(jnp.abs(inputs.data.x), axis=-1)
    return state, code, loss, fixed_next


def _chunk(state: RunState, inputs: _CheckInputs, num_blocks, *scalars, settings, mesh):
    """`_compiled_chunk`; on the propagator path its neurons never enter or leave the
    compiled program (they do not change), so a chunk copies O(1) data per run."""
    if settings.path != "propagator":
        return _compiled_chunk(state, inputs, num_blocks, *scalars, settings=settings, mesh=mesh)
    compact, *rest = _compiled_chunk(
        _compact(state), inputs, num_blocks, *scalars, settings=settings, mesh=mesh
    )
    return (_expanded(compact, state), *rest)


def _chunk_program(
    state: RunState,
    inputs: _CheckInputs,
    num_blocks,
    alpha,
    min_delta,
    patience,
    *,
    settings: _ChunkSettings,
    mesh,
):
    """A chunk on every device of `mesh`, each visiting the first num_blocks[d, 1] blocks
    of `settings.blocking.block` runs of its share: (state, status code, loss, exact,
    fixed_next), runs axis first. On the fixed-pattern path, the blocks from
    num_blocks[d, 0] on (runs whose kinks left the data-free zone) train on the general
    path; `fixed_next` says which runs can start the next chunk on the fixed-pattern path.

    The run count only sets the shape and each device's blocks go one after the other:
    one compile per path and width, however many runs are still active.
    """
    TRACE_COUNT[settings.path] += 1
    local = functools.partial(_local_chunk, settings=settings)
    runs, scalar = PartitionSpec(RUNS_AXIS), PartitionSpec()
    return _shard_map(
        lambda s, i, count, *rest: local(s, i, count[0], *rest),
        mesh=mesh,
        in_specs=(runs, runs, runs, scalar, scalar, scalar),  # num_blocks: (devices, 2)
        out_specs=runs,
    )(state, inputs, num_blocks, alpha, min_delta, patience)


# XLA's CPU backend (jax 0.10) hands reductions to YNNPACK, several times slower than its
# own loops on the checks' sums over 3 and 4 entries: without it a check costs 0.17 µs
# per run instead of 0.8 µs besides its eigendecomposition, and the general path's step
# is ~15% faster (2 cores, float64). Other platforms ignore the option.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_CHUNK_PROGRAMS = {
    platform: jax.jit(_chunk_program, static_argnames=("settings", "mesh"), compiler_options=opts)
    for platform, opts in (("cpu", CPU_COMPILER_OPTIONS), ("other", None))
}


def _compiled_chunk(state, inputs, num_blocks, *scalars, settings, mesh):
    """`_chunk_program`, compiled with the options of the mesh's platform."""
    platform = "cpu" if mesh.devices.flat[0].platform == "cpu" else "other"
    return _CHUNK_PROGRAMS[platform](
        state, inputs, num_blocks, *scalars, settings=settings, mesh=mesh
    )


def _local_chunk(state, inputs, num_blocks, alpha, min_delta, patience, *, settings):
    """`_chunk` on one device's share of the runs: the first num_blocks[1] blocks train,
    then their runs are checked `settings.blocking.check` at a time (the checks' small
    kernels and eigendecompositions cost less per run in larger batches than the steps'
    blocks)."""
    runs = state.max_kink.shape[0]
    block = min(settings.blocking.block, runs)
    check = min(settings.blocking.check, runs)

    def on(path):
        chunk_settings = settings._replace(path=path)
        return lambda part: _trained_block(*part, alpha, chunk_settings)

    def part_at(tree, start, size):
        return jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, start, size), tree)

    def put_at(out, done, start):
        put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=0)
        return jax.tree.map(put, out, done)

    def train(i, out):
        part = part_at((out[0], inputs), i * block, block)
        if settings.path == "fixed_pattern":
            done = jax.lax.cond(i < num_blocks[0], on("fixed_pattern"), on("general"), part)
        else:
            done = on(settings.path)(part)
        return put_at(out, done, i * block)

    if settings.path == "propagator":  # O(1) per step: only its steps go block by block
        blocks = {"blocks": (block, num_blocks[1]), "kernel": settings.blocking.kernel}
        trained, exact, end = _trained_block(state, inputs, alpha, settings, **blocks)
    else:
        one_block = jax.eval_shape(on(settings.path), part_at((state, inputs), 0, block))
        end = jax.tree.map(lambda v: jnp.zeros((runs, *v.shape[1:]), v.dtype), one_block[2])
        trained, exact, end = jax.lax.fori_loop(
            0, num_blocks[1], train, (state, jnp.ones((runs,), bool), end)
        )

    def checked(j, out):
        # the last batch ends at the share's end; lanes it checks twice get the same result
        start = jnp.minimum(j * check, runs - check)
        part = part_at((trained, inputs, end), start, check)
        return put_at(out, _checked_block(*part, alpha, min_delta, patience, settings), start)

    out = (
        trained,
        jnp.full((runs,), Status.RUNNING, jnp.int8),
        jnp.zeros((runs,), state.max_kink.dtype),
        jnp.zeros((runs,), bool),
    )
    batches = (num_blocks[1] * block + check - 1) // check
    state, code, loss, fixed_next = jax.lax.fori_loop(0, batches, checked, out)
    return state, code, loss, exact, fixed_next


@jax.jit
def _compact(state: RunState) -> RunState:
    """The propagator's view of a batch: the tracked neurons as the only neurons (runs, T)
    and no slope0/regular, so that a chunk moves O(1) data per run, not O(n)."""
    tracked = state.deferred.tracked
    picked = [jnp.take_along_axis(v, tracked, axis=1) for v in state.params[:3]]
    index = jnp.broadcast_to(jnp.arange(tracked.shape[1], dtype=tracked.dtype), tracked.shape)
    return state._replace(
        params=Params(*picked, state.params.c),
        slope0=None,
        regular=None,
        deferred=state.deferred._replace(tracked=index),
    )


def _expanded(compact: RunState, full: RunState) -> RunState:
    """`compact` after a propagator chunk with the neurons of `full` back (they do not
    change: the chunk's Φ_t is deferred)."""
    return compact._replace(
        params=full.params._replace(c=compact.params.c),
        slope0=full.slope0,
        regular=full.regular,
        deferred=compact.deferred._replace(tracked=full.deferred.tracked),
    )


def _redo(lanes, path, start, inputs, scalars, advance, layout, out):
    """Train `lanes` again from the chunk's `start` on `path`, a few lanes at a time;
    `out` = (state, code, loss, fixed_next) of the chunk, updated."""
    state, code, loss, fixed_next = out
    code, fixed_next = code.copy(), fixed_next.copy()
    size, mesh = layout.redo_lanes, layout.sharding.mesh
    for first in range(0, lanes.size, size):
        part = lanes[first : first + size]
        picked = jnp.asarray(_padded(part, size))
        redo_state, redo_code, redo_loss, _, redo_next = advance(
            *_gathered((start, inputs), picked, mesh),
            layout.one_block,
            *scalars,
            path=path,
        )
        state, loss = _put((state, loss), picked, (redo_state, redo_loss), mesh)
        code[part] = np.asarray(redo_code)[: part.size]
        fixed_next[part] = np.asarray(redo_next)[: part.size]
    return state, code, loss, fixed_next


def _exact_chunk(path, start, inputs, scalars, advance, layout):
    """One chunk of `path` for the active lanes, with those it left redone exactly:
    (state, code of every lane, loss, fixed_next: whether every kink is inside the data).

    The propagator is exact while the sides of the neurons stay put, the fixed-pattern
    step while no kink reaches the data: a run for which that failed, or that crossed or
    diverged (it may have crossed before its values blew up), is trained again on the
    general path. Few runs need this, once each (a crossed GD run stops; another
    optimizer's run goes on in the general blocks of the fixed-pattern path while its
    kinks are out of the data-free zone).
    """
    state, code, loss, exact, fixed_next = advance(
        start, inputs, layout.num_blocks, *scalars, path=path
    )
    code, exact, fixed_next = np.asarray(code), np.asarray(exact), np.asarray(fixed_next)
    left = (layout.slots >= 0) & (np.isin(code, (Status.CROSSED, Status.DIVERGED)) | ~exact)
    out = (state, code, loss, fixed_next)
    if path == "general" or not left.any():
        return out
    return _redo(np.flatnonzero(left), "general", start, inputs, scalars, advance, layout, out)


class _Layout(NamedTuple):
    """Where the runs are: lane j of the state holds run slots[j] (-1: padding). Each
    device's share of the lanes starts with its active runs, num_blocks[d, 1] blocks of
    them, of which the first num_blocks[d, 0] train on the chunk's path and the rest,
    the lanes flagged `general`, on the general path (the fixed-pattern path only)."""

    slots: np.ndarray
    general: np.ndarray
    num_blocks: jax.Array
    one_block: jax.Array
    blocking: Blocking
    sharding: NamedSharding

    @property
    def redo_lanes(self) -> int:
        devices = self.sharding.mesh.size
        return devices * -(-self.blocking.redo // devices)


def _arrange(lanes, slots, per_device, blocking: Blocking, sharding, general=None):
    """Spread the runs at `lanes` evenly over the devices, on each the runs flagged
    `general` (bool per entry of `lanes`) after the others, from a new block, each share
    padded to `per_device` lanes with copies of an active run: (positions to take, new
    layout)."""
    devices, block = sharding.mesh.size, blocking.block
    general = np.zeros(lanes.size, bool) if general is None else np.asarray(general, bool)
    positions, new_slots, new_general, counts = [], [], [], []
    parts = zip(
        np.array_split(lanes[~general], devices),
        np.array_split(lanes[general], devices),
        strict=True,
    )
    for fixed, other in parts:
        fixed_blocks = -(-fixed.size // block)
        gap = fixed_blocks * block - fixed.size if other.size else 0
        filler = np.concatenate([fixed, other, lanes])[:1]
        own = np.concatenate([fixed, np.repeat(filler, gap), other])
        flags = np.arange(own.size) >= fixed.size + gap  # the general lanes
        real = flags | (np.arange(own.size) < fixed.size)
        extra = per_device - own.size
        positions.append(np.concatenate([own, np.repeat(filler, extra)]))
        new_slots.append(np.concatenate([np.where(real, slots[own], -1), np.full(extra, -1)]))
        new_general.append(np.concatenate([flags, np.zeros(extra, bool)]))
        counts.append((fixed_blocks, fixed_blocks + -(-other.size // block)))
    layout = _Layout(
        slots=np.concatenate(new_slots),
        general=np.concatenate(new_general),
        num_blocks=jax.device_put(np.asarray(counts, np.int32), sharding),
        one_block=jax.device_put(np.ones((devices, 2), np.int32), sharding),
        blocking=blocking,
        sharding=sharding,
    )
    return np.concatenate(positions), layout


@functools.partial(jax.jit, static_argnames=("sharding",))
def _take(tree, positions, sharding):
    taken = jax.tree.map(lambda leaf: jnp.take(leaf, positions, axis=0, mode="clip"), tree)
    return jax.lax.with_sharding_constraint(taken, sharding)


def _lanes(tree, positions, mesh):
    """The lanes at `positions` (k,) of a runs-sharded `tree`, sharded over the runs axis
    (k a multiple of the devices). Each device picks the lanes it holds and the devices
    swap only those: O(k · devices) traffic, where `_take` gathers the whole batch onto
    every device."""
    if positions.shape[0] % mesh.size:
        raise ValueError(f"_lanes: {positions.shape[0]} lanes on {mesh.size} devices")

    def local(tree, positions):
        per_device = jax.tree.leaves(tree)[0].shape[0]
        device = jax.lax.axis_index(RUNS_AXIS)
        share = positions.shape[0] // mesh.size
        mine = device * share + jnp.arange(share)
        owner = (positions // per_device)[mine]
        own = positions - device * per_device

        def picked(leaf):
            every = jax.lax.all_gather(jnp.take(leaf, own, axis=0, mode="clip"), RUNS_AXIS)
            return every[owner, mine]

        return jax.tree.map(picked, tree)

    runs, scalar = PartitionSpec(RUNS_AXIS), PartitionSpec()
    return _shard_map(local, mesh=mesh, in_specs=(runs, scalar), out_specs=runs)(tree, positions)


_gathered = jax.jit(_lanes, static_argnames=("mesh",))


@functools.partial(jax.jit, static_argnames=("mesh",))
def _put(tree, positions, parts, mesh):
    """`tree` with the lanes at `positions` set to `parts` (sharded like the result of
    `_lanes`; a repeated position must carry the same part each time, as the padding
    copies of `_padded` do); each device writes the lanes it holds. (Not donated: a
    chunk's outputs share the buffers of the fields it leaves unchanged with its inputs,
    which a redo reads again.)"""

    def local(tree, positions, parts):
        per_device = jax.tree.leaves(tree)[0].shape[0]
        own = positions - jax.lax.axis_index(RUNS_AXIS) * per_device
        own = jnp.where((own >= 0) & (own < per_device), own, per_device)  # others: dropped

        def put(leaf, part):
            every = jax.lax.all_gather(part, RUNS_AXIS, tiled=True)
            return leaf.at[own].set(every, mode="drop")

        return jax.tree.map(put, tree, parts)

    runs, scalar = PartitionSpec(RUNS_AXIS), PartitionSpec()
    put = _shard_map(local, mesh=mesh, in_specs=(runs, scalar, runs), out_specs=runs)
    return put(tree, positions, parts)


def _padded(positions: np.ndarray, size: int) -> np.ndarray:
    """`positions` padded to `size` with copies of its first entry (shapes stay few)."""
    pad = np.full(size - positions.size, positions[0], dtype=positions.dtype)
    return np.concatenate([positions, pad])


def _placed(
    params, inputs: _CheckInputs, noise_key, scaling, optimizer, block, devices, mixed, kernel=None
):
    """The runs' initial state and check inputs spread evenly over `devices` (default: all
    local ones), each device's share padded to whole blocks (`blocking_for`, `block`
    overrides its size): (state, inputs, layout, mesh).
    `mixed`: the runs whose kinks start outside the data-free zone go in general blocks
    (one block more per device leaves room to start them on a new block)."""
    runs = params.c.shape[0]
    devices = jax.local_devices() if devices is None else list(devices)
    mesh = Mesh(np.asarray(devices), (RUNS_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(RUNS_AXIS))
    blocking = blocking_for(devices, runs, block, kernel)
    per_device = (-(-runs // (mesh.size * blocking.block)) + mixed) * blocking.block
    state = initial_state(params, inputs.step_size, noise_key, scaling, optimizer=optimizer)
    general = None
    if mixed:
        general = ~np.asarray(state.max_kink < jnp.min(jnp.abs(inputs.data.x), axis=-1))
    lanes = np.arange(runs)
    positions, layout = _arrange(lanes, lanes, per_device, blocking, sharding, general)
    state, inputs = _take((state, inputs), jnp.asarray(positions), sharding)
    return state, inputs, layout, mesh


def chunk_runner(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    path: str,
    check_every: int,
    alpha: float = 0.0,
    block: int | None = None,
    unroll: int | None = None,
    devices=None,
    rules: tuple[str, ...] = STOP_RULES,
    kernel: str | None = None,
) -> Callable[[int], None]:
    """For benchmarks: `run(chunks)` trains every run with GD for `chunks` chunks of
    `check_every` steps with the checks after each, as `simulate` does, but drops no run
    and redoes nothing (the work stays the same from chunk to chunk). `block` and
    `unroll` override the device's `blocking_for`; `rules` are the stopping checks;
    `kernel` is the propagator's (`Blocking`)."""
    dtype = params.c.dtype
    steps = jnp.broadcast_to(jnp.asarray(step_size, dtype), params.c.shape)
    inputs = check_inputs(data, steps, data, data)
    state, inputs, layout, mesh = _placed(
        params, inputs, None, None, GD, block, devices, False, kernel
    )
    scalars = (jnp.asarray(alpha, dtype), jnp.asarray(1e-8, dtype), jnp.asarray(10))
    blocking = layout.blocking if unroll is None else layout.blocking._replace(unroll=unroll)
    settings = _ChunkSettings(check_every, rules, path, GD, blocking)

    def run(chunks: int) -> None:
        current = state
        for _ in range(chunks):
            current, code, *_ = _chunk(
                current, inputs, layout.num_blocks, *scalars, settings=settings, mesh=mesh
            )
            np.asarray(code)  # the host reads the codes after every chunk, as simulate does

    return run


_RUN_END = ("max_kink", "pattern_change", "best_val", "test_at_best", "best_step")


def _run_end(state: RunState) -> dict[str, jax.Array]:
    """The per-run fields of `state` that a finished run reports (`_RUN_END`)."""
    return {name: getattr(state, name) for name in _RUN_END}


@functools.partial(jax.jit, static_argnames=("mesh",))
def _ending(state: RunState, loss, positions, mesh) -> tuple[Params, dict[str, jax.Array]]:
    """The lanes at `positions`: their materialized parameters and run-end values."""
    state, loss = _lanes((state, loss), positions, mesh)
    return materialized_params(state), {"loss": loss, **_run_end(state)}


def _finished(state, loss, lanes, layout, final, ends, ids) -> None:
    """Copy the parameters and run-end values of `lanes` into `final` and `ends` at `ids`,
    `layout.redo_lanes` at a time: only the finished runs cross to the host."""
    size, mesh = layout.redo_lanes, layout.sharding.mesh
    for first in range(0, lanes.size, size):
        part = lanes[first : first + size]
        got = ids[first : first + size]
        host_params, host_ends = jax.device_get(_ending(state, loss, _padded(part, size), mesh))
        for name, values in host_ends.items():
            ends[name][got] = values[: part.size]
        for out, leaf in zip(final, host_params, strict=True):
            out[got] = leaf[: part.size]


def _stop_rules(
    stop_on, optimizer: Optimizer, standard: bool, one_dimensional, eigenvectors, early_stopping
) -> tuple[str, ...]:
    """The checks to apply: `stop_on` (default: those valid for the optimizer and the
    parameterization) and flags."""
    proven = optimizer.certificate and standard and one_dimensional
    if stop_on is None:
        stop_on = STOP_RULES if proven else ()
    rules = tuple(sorted(set(stop_on)))
    unknown = set(rules) - set(STOP_RULES)
    if unknown:
        raise ValueError(f"stop_on: unknown rules {sorted(unknown)}; known: {STOP_RULES}")
    proofs = set(rules) & {"stuck", "degenerate"}
    if proofs and not proven:
        raise ValueError(
            f"stop_on: {sorted(proofs)} are proofs for full-batch GD on 1-D data in the "
            f"standard parameterization only (here: {optimizer.name!r}, "
            f"{'1-D' if one_dimensional else 'd-dim'} data)"
        )
    if eigenvectors not in ("columns", "rows"):
        raise ValueError(f"eigenvectors must be 'columns' or 'rows', not {eigenvectors!r}")
    if eigenvectors == "rows":
        rules += ("reference_rows",)
    if early_stopping:
        rules += ("early_stopping",)
    return rules


def _choose_path(
    path: str, rules, optimizer: Optimizer, one_dimensional: bool, standard, held_out
) -> str:
    """`path`, checked; "auto": the propagator for GD that stops at a crossing (1-D,
    standard, no held-out points), else the general path. The fixed-pattern path takes
    any optimizer on 1-D data in the standard parameterization but is not chosen by
    itself: with momentum, Adam and SGD most runs soon leave the fixed pattern, and the
    rest gain little at m = 6 points (0.5-1.1× the general path's speed,
    `benchmarks/bench_optimizers.py`)."""
    fixed = one_dimensional and standard
    propagator = fixed and "crossed" in rules and optimizer.name == "gd" and not held_out
    if path == "auto":
        return "propagator" if propagator else "general"
    if path not in _PATHS:
        raise ValueError(f"path must be 'auto' or one of {sorted(_PATHS)}, not {path!r}")
    if path == "fixed_pattern" and not fixed:
        raise ValueError("path='fixed_pattern' needs 1-D input and the standard parameterization")
    if path == "propagator" and not propagator:
        raise ValueError(
            "path='propagator' needs GD, 1-D input, the standard parameterization, the "
            "'crossed' stop rule and no held-out points"
        )
    return path


def auto_path(
    optimizer="gd",
    *,
    sampler: str | None = None,
    batch_size: int = 16,
    stop_on=None,
    parameterization: str = "standard",
    one_dimensional: bool = True,
    early_stopping: bool = False,
    held_out: bool = False,
) -> str:
    """The path `simulate(path="auto")` takes for these settings (its arguments of the
    same names; `one_dimensional`: 1-D input; `held_out`: validation or test points)."""
    optimizer = get_optimizer(optimizer, sampler=sampler, batch_size=batch_size)
    standard = parameterization == "standard"
    rules = _stop_rules(stop_on, optimizer, standard, one_dimensional, "columns", early_stopping)
    return _choose_path("auto", rules, optimizer, one_dimensional, standard, held_out)


def _noise_keys(key, runs: int):
    """Per-run key data (runs, 2) uint32 from typed keys or key data, or None."""
    if key is None:
        return None
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    key = jnp.asarray(key)
    if key.shape != (runs, 2):
        raise ValueError(f"key: expected one threefry key per run, got shape {key.shape}")
    return key.astype(jnp.uint32)


def simulate(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    optimizer="gd",
    parameterization: str = "standard",
    sampler: str | None = None,
    batch_size: int = 16,
    key=None,
    check_every: int = 1000,
    max_checks: int = 1000,
    alpha: float = 0.0,
    validation_weights=None,
    validation: WeightedData | None = None,
    test: WeightedData | None = None,
    early_stopping: bool | None = None,
    min_delta: float = 1e-8,
    patience: int = 10,
    stop_on: tuple[str, ...] | None = None,
    eigenvectors: str = "columns",
    path: str = "auto",
    block: int | None = None,
    devices=None,
    kernel: str | None = None,
    on_check: Callable[[int, np.ndarray], None] | None = None,
    classify_width: int | None = None,
) -> SimulationResult:
    """Train every run until it stops, checking every `check_every` steps.

    params, data: a leading runs axis on every field; step_size: (runs,) or a scalar
    (None for an optax transformation that carries its own learning rate).
    `optimizer`: "gd", "sgd", "momentum", "adam", a function h -> optax transformation,
    or an optax transformation (`optim.get_optimizer`, with `sampler` and `batch_size`);
    a stochastic sampler needs `key`, one key per run (typed, or (runs, 2) key data).
    `parameterization`: "standard" (He) or "ntk" (`model.scaling_of`, the true width).
    At each check, in this order: DIVERGED (non-finite), CROSSED (some |b_i/a_i| ≥
    min_j |x_j| after any step so far; d-dim input: the activation pattern on the data
    changed), A_DEGENERATE, X_DEGENERATE, STUCK (the
    certificate `theory.provably_stuck` with the run's step size), EARLY_STOPPED (if
    `early_stopping`, by default when `validation_weights` are given: the loss with
    `validation_weights` on the training points, or on held-out `validation` points, did
    not improve by `min_delta` for `patience` checks). Either way
    each run reports its best validation loss over the checks, the step of that check and
    the loss on held-out `test` points there (WeightedData, a leading runs axis).
    Runs still going after `max_checks` checks are UNFINISHED. `stop_on` selects the
    rules (crossed, stuck, degenerate); by default all three for GD, none for the other
    optimizers (the certificate is a proof for GD only): `stop_on=()` just trains
    check_every × max_checks steps. Divergence always stops a run. `eigenvectors="rows"`
    applies the reference code's variant of the certificate. `on_check(k, status)` is
    called after check k with every run's current status code.

    Every run also gets the detectors of `detectors`: the first step whose activation
    pattern differs from the initial one, L_lin, and the final escaped/stuck label.
    `classify_width` pads the networks for that last classification (padding neurons
    change no activation group), so that one compiled program serves batches of several
    widths.

    `path="auto"` trains 1-D networks with GD on the O(1) propagator (`propagator`) and
    redoes, on the general path, the chunk of every run it could not do exactly (a kink
    reached the data, a neuron changed side), so results equal those of
    `path="general"`. The runs are sharded over `devices` (default: all local ones) and
    go through a chunk in blocks (`blocking_for`; `block` sets their size). `kernel` does
    the propagator's steps: "xla" (XLA's loop), "pallas" (one Pallas kernel per chunk, on
    NVIDIA GPUs, `gdrelu.kernel`) or "interpret" (that kernel in interpret mode); by
    default $GDRELU_PROPAGATOR_KERNEL, else "xla".
    """
    from gdrelu.detectors import classify

    runs = int(np.shape(params.c)[0])
    dtype = params.b.dtype
    if check_every < 1 or max_checks < 1:
        raise ValueError("check_every and max_checks must be at least 1")
    optimizer = get_optimizer(optimizer, sampler=sampler, batch_size=batch_size)
    standard = parameterization == "standard"
    one_dimensional = np.ndim(data.x) == 2
    if validation is not None and validation_weights is not None:
        raise ValueError("validation: give held-out points or validation_weights, not both")
    if early_stopping is None:
        early_stopping = validation_weights is not None
    if early_stopping and validation is None and validation_weights is None:
        raise ValueError("early_stopping: needs validation points or validation_weights")
    rules = _stop_rules(stop_on, optimizer, standard, one_dimensional, eigenvectors, early_stopping)
    held_out = validation is not None or test is not None
    if held_out:
        rules += ("held_out",)
    if optimizer.uses_step_size == (step_size is None):
        raise ValueError(
            "step_size: needed for a named optimizer or a function of h, and must be None "
            "for an optax transformation with its own learning rate"
        )
    if step_size is None:
        step_size = 0.0
    noise_key = _noise_keys(key, runs)
    if optimizer.stochastic and noise_key is None:
        raise ValueError(f"key: sampler {optimizer.sampler!r} needs one key per run")

    data = WeightedData(*(jnp.asarray(v, dtype) for v in data))
    params = Params(*(jnp.asarray(v, dtype) for v in params))
    if validation is None:
        weights = data.weights if validation_weights is None else validation_weights
        validation = data._replace(weights=jnp.asarray(weights, dtype))
    validation = WeightedData(*(jnp.asarray(v, dtype) for v in validation))
    test = validation if test is None else WeightedData(*(jnp.asarray(v, dtype) for v in test))
    if optimizer.sampler == "epoch" and optimizer.batch_size > data.x.shape[1]:
        raise ValueError(f"batch_size: {optimizer.batch_size} exceeds the {data.x.shape[1]} points")

    status = np.zeros(runs, np.int8)
    stop_step = np.zeros(runs, np.int64)
    final = [np.zeros(np.shape(leaf), dtype) for leaf in params]
    ends = {name: np.zeros(runs, dtype) for name in ("loss", *_RUN_END)}

    path = _choose_path(path, rules, optimizer, params.a.ndim == 2, standard, held_out)
    mixed = path == "fixed_pattern"
    dim = 1 if params.a.ndim == 2 else params.a.shape[-2]
    widths = jnp.sum(active_neurons(params), axis=-1)  # the true widths of padded runs
    scaling = scaling_of(parameterization, widths, dim)
    scalars = (jnp.asarray(alpha, dtype), jnp.asarray(min_delta, dtype), jnp.asarray(patience))
    steps = jnp.broadcast_to(jnp.asarray(step_size, dtype), (runs,))
    inputs = check_inputs(data, steps, validation, test)
    state, inputs, layout, mesh = _placed(
        params, inputs, noise_key, scaling, optimizer, block, devices, mixed, kernel
    )
    per_device = layout.slots.size // mesh.size
    blocking = layout.blocking
    settings = _ChunkSettings(check_every, rules, path, optimizer, blocking)

    def advance(state, inputs, num_blocks, *scalars, path):
        chunk_settings = settings._replace(path=path)
        return _chunk(state, inputs, num_blocks, *scalars, settings=chunk_settings, mesh=mesh)

    for k in range(1, max_checks + 1):
        state, code, loss, fixed_next = _exact_chunk(path, state, inputs, scalars, advance, layout)
        if k == max_checks:
            code = np.where(code == Status.RUNNING, np.int8(Status.UNFINISHED), code)
        done = (layout.slots >= 0) & (code != Status.RUNNING)
        keep = np.flatnonzero((layout.slots >= 0) & ~done)
        moved = mixed and np.any(layout.general[keep] == fixed_next[keep])
        if done.any():
            where = np.flatnonzero(done)
            ids = layout.slots[where]
            status[ids] = code[where]
            stop_step[ids] = k * check_every
            _finished(state, loss, where, layout, final, ends, ids)
        if not keep.size:
            layout = layout._replace(slots=np.full_like(layout.slots, -1))
        elif done.any() or moved:  # the active runs first on each device: shapes never change
            general = ~fixed_next[keep] if mixed else None
            positions, layout = _arrange(
                keep, layout.slots, per_device, blocking, layout.sharding, general
            )
            state, inputs = _take((state, inputs), jnp.asarray(positions), layout.sharding)
        if on_check is not None:
            on_check(k, status.copy())
        if not (layout.slots >= 0).any():
            break
    final = Params(*final)
    scaling = Scaling(*(jnp.broadcast_to(jnp.asarray(v, dtype), (runs,)) for v in scaling))
    initial, last = params, final
    if classify_width is not None:  # on the host: no compiled padding per width
        initial = padded(jax.device_get(params), classify_width, xp=np)
        last = padded(final, classify_width, xp=np)
    threshold, escaped = jax.device_get(
        classify(initial, last, data, jnp.asarray(ends["loss"]), scaling)
    )
    return SimulationResult(
        status=status,
        stop_step=stop_step,
        params=final,
        max_kink=ends["max_kink"],
        final_loss=ends["loss"],
        pattern_change_step=ends["pattern_change"].astype(np.int64),
        linear_threshold=threshold,
        escaped=escaped,
        best_validation_loss=ends["best_val"],
        test_loss_at_best=ends["test_at_best"] if "held_out" in rules else np.full(runs, np.nan),
        best_step=ends["best_step"].astype(np.int64),
    )
