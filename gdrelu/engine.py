"""The vectorized training engine: GD on many runs at once, with the paper's stopping checks.

A jit-compiled chunk runs `check_every` GD steps with `lax.scan` for each block of
`BLOCK` runs, tracking max_i |b_i/a_i| after every step; then it checks each run
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
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import theory
from gdrelu.data import WeightedData
from gdrelu.fastpath import fixed_pattern_steps, side_moments
from gdrelu.model import Params, max_abs_kink, weighted_loss
from gdrelu.propagator import propagator_steps, regular_neurons


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
    best_val: jax.Array  # (runs,) best validation loss (early stopping)
    stale_checks: jax.Array  # (runs,) checks since the validation loss last improved
    slope0: jax.Array  # (runs, n) w_i/a_i at the start, for the propagator path
    regular: jax.Array  # (runs, n) neuron i still lies in its side's plane (`propagator`)


class SimulationResult(NamedTuple):
    """Per-run outcome of `simulate`, as numpy arrays with a leading runs axis."""

    status: np.ndarray  # Status codes, int8
    stop_step: np.ndarray  # GD steps taken when the run stopped
    params: Params  # final parameters
    max_kink: np.ndarray  # max over all steps and neurons of |b_i/a_i|
    final_loss: np.ndarray  # training loss at the final parameters


class _CheckInputs(NamedTuple):
    data: WeightedData
    step_size: jax.Array
    validation_weights: jax.Array


def gd_step(params: Params, data: WeightedData, step_size, alpha=0.0) -> Params:
    """One GD step θ ← θ - h ∇L(θ) of one run."""
    grads = jax.grad(weighted_loss)(params, data.x, data.y, data.weights, alpha)
    return jax.tree.map(lambda p, g: p - step_size * g, params, grads)


def _all_finite(params: Params, loss) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]
    return jnp.all(jnp.stack(leaves)) & jnp.isfinite(loss)


def _check_one(state: RunState, inputs: _CheckInputs, alpha, min_delta, patience, rules):
    """Stopping checks of one run after a chunk: (status code, loss, best_val, stale)."""
    params, data = state.params, inputs.data
    loss = weighted_loss(params, data.x, data.y, data.weights, alpha)
    conditions = [~_all_finite(params, loss)]
    codes = [Status.DIVERGED]
    if "crossed" in rules:
        conditions.append(state.max_kink >= jnp.min(jnp.abs(data.x)))
        codes.append(Status.CROSSED)
    if "degenerate" in rules:
        conditions += [theory.a_degenerate(params), theory.x_degenerate(data)]
        codes += [Status.A_DEGENERATE, Status.X_DEGENERATE]
    if "stuck" in rules:
        eigenvectors = "rows" if "reference_rows" in rules else "columns"
        stuck = theory.provably_stuck(
            params, data, inputs.step_size, alpha=alpha, eigenvectors=eigenvectors
        )
        conditions.append(stuck)
        codes.append(Status.STUCK)
    best, stale = state.best_val, state.stale_checks
    if "early_stopping" in rules:
        val = weighted_loss(params, data.x, data.y, inputs.validation_weights, alpha)
        improved = val < best - min_delta
        best = jnp.where(improved, val, best)
        stale = jnp.where(improved, 0, stale + 1)
        conditions.append(stale >= patience)
        codes.append(Status.EARLY_STOPPED)
    code = jnp.select(conditions, [jnp.int8(c) for c in codes], jnp.int8(Status.RUNNING))
    return code, loss, best, stale


def initial_state(params: Params) -> RunState:
    """The scan carry of a batch of runs before their first step."""
    runs, dtype = params.c.shape[0], params.c.dtype
    if params.a.ndim == 2:
        slope0, regular = jax.vmap(regular_neurons)(params)
    else:  # d-dim input: only the general path
        slope0, regular = jnp.zeros(params.b.shape, dtype), jnp.zeros(params.b.shape, bool)
    return RunState(
        params=params,
        max_kink=jax.vmap(max_abs_kink)(params),
        best_val=jnp.full((runs,), jnp.inf, dtype),
        stale_checks=jnp.zeros((runs,), jnp.int32),
        slope0=slope0,
        regular=regular,
    )


def _side_changes(params: Params, start: Params) -> jax.Array:
    """Which neurons of a 1-D run are on another side (sign a_i) than at `start`; (n,)."""
    if params.a.ndim > 1:
        return jnp.zeros(params.b.shape, bool)
    return (params.a > 0) != (start.a > 0)


def _general_steps(params: Params, data: WeightedData, step_size, alpha, num_steps: int):
    """`num_steps` GD steps of one run: (params, max over them of max_i |b_i/a_i|, which
    neurons changed side at some step)."""

    def body(carry, _):
        p, kink, changed = carry
        p = gd_step(p, data, step_size, alpha)
        return (p, jnp.maximum(kink, max_abs_kink(p)), changed | _side_changes(p, params)), None

    carry = (params, jnp.zeros_like(params.c), jnp.zeros(params.b.shape, bool))
    return jax.lax.scan(body, carry, length=num_steps)[0]


def _fixed_pattern_steps(params, data, step_size, alpha, num_steps):
    return fixed_pattern_steps(params, side_moments(data), step_size, alpha, num_steps)


def _exact_everywhere(steps):
    """A one-run path as a batched one, exact for every run."""

    def batched(params, data, step_size, alpha, num_steps, slope0, regular):
        one = jax.vmap(steps, in_axes=(0, 0, 0, None, None))
        params, kink, changed = one(params, data, step_size, alpha, num_steps)
        return params, kink, changed, jnp.ones(kink.shape, bool)

    return batched


def _propagator_steps(params, data, step_size, alpha, num_steps, slope0, regular):
    moments = jax.vmap(side_moments)(data)
    params, kink, exact = propagator_steps(
        params, moments, step_size, alpha, num_steps, slope0, regular
    )
    return params, kink, jnp.zeros(slope0.shape, bool), exact


# Batched GD paths: (params, data, step_size, alpha, num_steps, slope0, regular), a leading
# runs axis on all but alpha and num_steps, to (params, max |b/a|, changed side (runs, n),
# exact (runs,)).
_PATHS = {
    "general": _exact_everywhere(_general_steps),
    "fixed_pattern": _exact_everywhere(_fixed_pattern_steps),
    "propagator": _propagator_steps,
}
TRACE_COUNT = dict.fromkeys(_PATHS, 0)
BLOCK = 64  # runs per block: the propagator's per-step state then stays in L1 cache
REDO_BLOCK = 16  # runs per redo: few runs leave a chunk, and their redo costs O(n) or O(nm)


def _block_chunk(state, inputs, alpha, min_delta, patience, check_every, rules, path):
    """`check_every` GD steps for every run of one block, then the checks."""
    params, kink, changed, exact = _PATHS[path](
        state.params,
        inputs.data,
        inputs.step_size,
        alpha,
        check_every,
        state.slope0,
        state.regular,
    )
    state = state._replace(
        params=params,
        max_kink=jnp.maximum(state.max_kink, kink),
        regular=state.regular & ~changed,
    )
    check = jax.vmap(_check_one, in_axes=(0, 0, None, None, None, None))
    code, loss, best, stale = check(state, inputs, alpha, min_delta, patience, rules)
    return state._replace(best_val=best, stale_checks=stale), code, loss, exact


@functools.partial(jax.jit, static_argnames=("check_every", "rules", "path", "block"))
def _chunk(
    state: RunState,
    inputs: _CheckInputs,
    num_blocks,
    alpha,
    min_delta,
    patience,
    *,
    check_every,
    rules,
    path,
    block,
):
    """A chunk for the first `num_blocks` (traced) blocks of `block` runs: (state, status
    code, loss, exact) with a leading axis over all runs, the others left as they were.

    The runs' count only sets the shape, and blocks go one after the other: one compile
    per path and width, however many runs are still active.
    """
    TRACE_COUNT[path] += 1
    runs = state.max_kink.shape[0]
    block = min(block, runs)
    out = (
        state,
        jnp.full((runs,), Status.RUNNING, jnp.int8),
        jnp.zeros((runs,), state.max_kink.dtype),
        jnp.ones((runs,), bool),
    )

    def body(i, out):
        start = i * block
        part = jax.tree.map(
            lambda v: jax.lax.dynamic_slice_in_dim(v, start, block), (state, inputs)
        )
        done = _block_chunk(*part, alpha, min_delta, patience, check_every, rules, path)
        put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=0)
        return jax.tree.map(put, out, done)

    return jax.lax.fori_loop(0, num_blocks, body, out)


def _redo(lanes, path, start, inputs, scalars, advance, state, code, loss, block):
    """Train `lanes` again from the chunk's `start` on `path`, `block` lanes at a time."""
    code = code.copy()
    for first in range(0, lanes.size, block):
        part = lanes[first : first + block]
        picked = _padded(part, block)
        redo_state, redo_code, redo_loss, _ = advance(
            _take(start, picked), _take(inputs, picked), 1, *scalars, path=path
        )
        state, loss = _put((state, loss), picked, (redo_state, redo_loss))
        code[part] = np.asarray(redo_code)[: part.size]
    return state, code, loss


def _exact_chunk(path, start, inputs, scalars, advance, block, real):
    """One chunk of `path` for the first `real` runs, and those it left redone exactly:
    (state, code of the `real` runs, loss).

    The propagator is exact while the sides of the neurons stay put, the fixed-pattern
    step while no kink reaches the data; a run that crossed or diverged (it may have
    crossed before its values blew up) is trained again on the general path, one whose
    neurons changed side on the fixed-pattern path (and then, if it crossed, generally).
    """
    num_blocks = -(-real // block)
    state, code, loss, exact = advance(start, inputs, num_blocks, *scalars, path=path)
    code, exact = np.asarray(code)[:real], np.asarray(exact)[:real]
    redo = functools.partial(
        _redo, start=start, inputs=inputs, scalars=scalars, advance=advance, block=REDO_BLOCK
    )
    left = np.isin(code, (Status.CROSSED, Status.DIVERGED))
    if path == "propagator":
        moved = np.flatnonzero(~exact & ~left)
        state, code, loss = redo(moved, "fixed_pattern", state=state, code=code, loss=loss)
        left |= np.isin(code, (Status.CROSSED, Status.DIVERGED))
    if path != "general":
        state, code, loss = redo(np.flatnonzero(left), "general", state=state, code=code, loss=loss)
    return state, code, loss


@jax.jit
def _take(tree, positions):
    return jax.tree.map(lambda leaf: jnp.take(leaf, positions, axis=0), tree)


@jax.jit
def _put(tree, positions, parts):
    return jax.tree.map(lambda leaf, part: leaf.at[positions].set(part), tree, parts)


def _padded(positions: np.ndarray, size: int) -> jax.Array:
    """`positions` padded to `size` with copies of its first entry (shapes stay few)."""
    pad = np.full(size - positions.size, positions[0], dtype=positions.dtype)
    return jnp.asarray(np.concatenate([positions, pad]))


def simulate(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    check_every: int = 1000,
    max_checks: int = 1000,
    alpha: float = 0.0,
    validation_weights=None,
    min_delta: float = 1e-8,
    patience: int = 10,
    stop_on: tuple[str, ...] = STOP_RULES,
    eigenvectors: str = "columns",
    path: str = "auto",
    block: int = BLOCK,
    on_check: Callable[[int, np.ndarray], None] | None = None,
) -> SimulationResult:
    """Train every run with GD until it stops, checking every `check_every` steps.

    params, data: a leading runs axis on every field; step_size: (runs,) or a scalar.
    At each check, in this order: DIVERGED (non-finite), CROSSED (some |b_i/a_i| ≥
    min_j |x_j| after any step so far), A_DEGENERATE, X_DEGENERATE, STUCK (the
    certificate `theory.provably_stuck` with the run's step size), EARLY_STOPPED (the
    loss on `validation_weights` did not improve by `min_delta` for `patience` checks).
    Runs still going after `max_checks` checks are UNFINISHED. `stop_on` selects the
    rules (crossed, stuck, degenerate); divergence always stops a run. `eigenvectors=
    "rows"` applies the reference code's variant of the certificate. `on_check(k,
    status)` is called after check k with every run's current status code.

    `path="auto"` trains 1-D networks with the O(n) fixed-pattern step (`fastpath`)
    and redoes, on the general path, the chunk of every run whose kink reached the
    data in it, so results equal those of `path="general"`.
    """
    runs = int(np.shape(params.c)[0])
    dtype = params.b.dtype
    if check_every < 1 or max_checks < 1:
        raise ValueError("check_every and max_checks must be at least 1")
    if eigenvectors not in ("columns", "rows"):
        raise ValueError(f"eigenvectors must be 'columns' or 'rows', not {eigenvectors!r}")
    rules = tuple(sorted(set(stop_on)))
    unknown = set(rules) - set(STOP_RULES)
    if unknown:
        raise ValueError(f"stop_on: unknown rules {sorted(unknown)}; known: {STOP_RULES}")
    if eigenvectors == "rows":
        rules += ("reference_rows",)
    if validation_weights is not None:
        rules += ("early_stopping",)
    else:
        validation_weights = data.weights

    inputs = _CheckInputs(
        data=WeightedData(*(jnp.asarray(v, dtype) for v in data)),
        step_size=jnp.broadcast_to(jnp.asarray(step_size, dtype), (runs,)),
        validation_weights=jnp.asarray(validation_weights, dtype),
    )
    params = Params(*(jnp.asarray(v, dtype) for v in params))
    state = initial_state(params)

    status = np.zeros(runs, np.int8)
    stop_step = np.zeros(runs, np.int64)
    max_kink = np.zeros(runs, dtype)
    final_loss = np.zeros(runs, dtype)
    final = [np.zeros(np.shape(leaf), dtype) for leaf in params]

    if path == "auto":
        path = "propagator" if params.a.ndim == 2 and "crossed" in rules else "general"
    elif path not in _PATHS:
        raise ValueError(f"path must be 'auto' or one of {sorted(_PATHS)}, not {path!r}")
    elif path != "general" and ("crossed" not in rules or params.a.ndim != 2):
        raise ValueError(f"path={path!r} needs 1-D input and the 'crossed' stop rule")
    scalars = (jnp.asarray(alpha, dtype), jnp.asarray(min_delta, dtype), jnp.asarray(patience))
    advance = functools.partial(_chunk, check_every=check_every, rules=rules, block=block)

    active = np.arange(runs)
    capacity = -(-runs // block) * block
    state, inputs = _take((state, inputs), _padded(active, capacity))
    for k in range(1, max_checks + 1):
        state, code, loss = _exact_chunk(path, state, inputs, scalars, advance, block, active.size)
        if k == max_checks:
            code = np.where(code == Status.RUNNING, np.int8(Status.UNFINISHED), code)
        done = code != Status.RUNNING
        if done.any():
            where = np.flatnonzero(done)
            ids = active[where]
            status[ids] = code[where]
            stop_step[ids] = k * check_every
            host_params, host_kink, host_loss = jax.device_get((state.params, state.max_kink, loss))
            max_kink[ids] = host_kink[where]
            final_loss[ids] = host_loss[where]
            for out, leaf in zip(final, host_params, strict=True):
                out[ids] = leaf[where]
            keep = np.flatnonzero(~done)
            active = active[keep]
            if active.size:  # the active runs first, in order: shapes never change
                state, inputs = _take((state, inputs), _padded(keep, capacity))
        if on_check is not None:
            on_check(k, status.copy())
        if not active.size:
            break
    return SimulationResult(status, stop_step, Params(*final), max_kink, final_loss)
