"""The vectorized training engine: GD on many runs at once, with the paper's stopping checks.

A jit-compiled chunk runs `check_every` GD steps with `lax.scan`, vmapped over the runs
in a bucket, tracking max_i |b_i/a_i| after every step; then it checks each run
(PAPER.md, "Outcome of a run"). Between chunks the host drops finished runs and gathers
the rest into the smallest bucket that holds them, so work shrinks as runs finish; the
bucket sizes (powers of two and, from 512 up, ¾ of one) bound the compiled programs.
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
    """The scan carry of a bucket of runs (leading runs axis on every field)."""

    params: Params
    max_kink: jax.Array  # (runs,) max over steps so far of max_i |b_i/a_i|
    best_val: jax.Array  # (runs,) best validation loss (early stopping)
    stale_checks: jax.Array  # (runs,) checks since the validation loss last improved


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


TRACE_COUNT = {"general": 0, "fixed_pattern": 0}


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


def _general_steps(params: Params, data: WeightedData, step_size, alpha, num_steps: int):
    """`num_steps` GD steps of one run and the max over them of max_i |b_i/a_i|."""

    def body(carry, _):
        params, kink = carry
        params = gd_step(params, data, step_size, alpha)
        return (params, jnp.maximum(kink, max_abs_kink(params))), None

    (params, kink), _ = jax.lax.scan(body, (params, jnp.zeros_like(params.c)), length=num_steps)
    return params, kink


def _fixed_pattern_steps(params, data, step_size, alpha, num_steps):
    return fixed_pattern_steps(params, side_moments(data), step_size, alpha, num_steps)


_PATHS = {"general": _general_steps, "fixed_pattern": _fixed_pattern_steps}


@functools.partial(jax.jit, static_argnames=("check_every", "rules", "path"))
def _chunk(
    state: RunState, inputs: _CheckInputs, alpha, min_delta, patience, *, check_every, rules, path
):
    """`check_every` GD steps for every run of the bucket, then the checks."""
    TRACE_COUNT[path] += 1
    steps = jax.vmap(_PATHS[path], in_axes=(0, 0, 0, None, None))
    params, kink = steps(state.params, inputs.data, inputs.step_size, alpha, check_every)
    state = state._replace(params=params, max_kink=jnp.maximum(state.max_kink, kink))
    check = jax.vmap(_check_one, in_axes=(0, 0, None, None, None, None))
    code, loss, best, stale = check(state, inputs, alpha, min_delta, patience, rules)
    return state._replace(best_val=best, stale_checks=stale), code, loss


def _redo_crossed(start, inputs, scalars, advance, state, code, loss, block):
    """Rerun on the general path the chunk of every lane that the fixed-pattern step left.

    The fixed-pattern step is exact only until a kink reaches the data; its max |b/a|
    still shows that this happened, and then the chunk is trained again from its start
    (so are diverged lanes: they may have crossed before their values blew up).
    """
    lanes = np.flatnonzero(np.isin(code, (Status.CROSSED, Status.DIVERGED)))
    code = code.copy()
    for first in range(0, lanes.size, block):
        part = lanes[first : first + block]
        picked = _padded(part, block)
        redo_state, redo_code, redo_loss = advance(
            _take(start, picked), _take(inputs, picked), *scalars, path="general"
        )
        state, loss = _put((state, loss), picked, (redo_state, redo_loss))
        code[part] = np.asarray(redo_code)[: part.size]
    return state, code, loss


def bucket_size(active: int, min_bucket: int = 32) -> int:
    """The smallest bucket that holds `active` runs: a power of two (at least `min_bucket`),
    or ¾ of one from 512 up, which trims padding where compute outweighs compiling."""
    size = max(min_bucket, 1 << max(active - 1, 0).bit_length())
    if size >= 512 and active <= size // 4 * 3:
        return size // 4 * 3
    return size


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
    min_bucket: int = 32,
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
    state = RunState(
        params=params,
        max_kink=jax.vmap(max_abs_kink)(params),
        best_val=jnp.full((runs,), jnp.inf, dtype),
        stale_checks=jnp.zeros((runs,), jnp.int32),
    )

    status = np.zeros(runs, np.int8)
    stop_step = np.zeros(runs, np.int64)
    max_kink = np.zeros(runs, dtype)
    final_loss = np.zeros(runs, dtype)
    final = [np.zeros(np.shape(leaf), dtype) for leaf in params]

    if path == "auto":
        path = "fixed_pattern" if params.a.ndim == 2 and "crossed" in rules else "general"
    elif path == "fixed_pattern" and "crossed" not in rules:
        raise ValueError("path='fixed_pattern' needs the 'crossed' stop rule")
    scalars = (jnp.asarray(alpha, dtype), jnp.asarray(min_delta, dtype), jnp.asarray(patience))
    advance = functools.partial(_chunk, check_every=check_every, rules=rules)

    active = np.arange(runs)
    lanes = _padded(active, bucket_size(runs, min_bucket))
    state, inputs = _take(state, lanes), _take(inputs, lanes)
    for k in range(1, max_checks + 1):
        start = state
        state, code, loss = advance(state, inputs, *scalars, path=path)
        code = np.asarray(code)[: active.size]  # the rest are padding lanes
        if path == "fixed_pattern":
            state, code, loss = _redo_crossed(
                start, inputs, scalars, advance, state, code, loss, min_bucket
            )
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
            if active.size:
                lanes = _padded(keep, bucket_size(active.size, min_bucket))
                state, inputs = _take(state, lanes), _take(inputs, lanes)
        if on_check is not None:
            on_check(k, status.copy())
        if not active.size:
            break
    return SimulationResult(status, stop_step, Params(*final), max_kink, final_loss)
