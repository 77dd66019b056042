"""The checks after a chunk: does a run stop, and how it does on validation and test points.

In the order of docs/theory.md ("Outcome of a run"), the paper code's: DIVERGED, CROSSED,
EARLY_STOPPED, X_DEGENERATE, A_DEGENERATE, STUCK (the certificate, "Provably stuck"); the
first that holds is the run's status.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import theory
from gdrelu.compiled import jit
from gdrelu.data import WeightedData
from gdrelu.engine.state import RunInfo, Runs, RunState
from gdrelu.model import Params, Scaling, active_neurons, forward, max_abs_kink
from gdrelu.outcome import Status
from gdrelu.propagator import ChunkEnd


class CheckInputs(NamedTuple):
    """What the checks need besides the runs, leading runs axis on every field."""

    data: WeightedData
    step_size: jax.Array
    validation: WeightedData  # the training points with validation weights, or held out
    test: WeightedData  # held-out test points (the validation set when none are given)
    roots: tuple[jax.Array, jax.Array]  # M^{1/2}, (M^{1/2})⁺ of the data (1-D), or zeros


class ChunkScalars(NamedTuple):
    """The traced scalars of a chunk: the same for every run, data to the compiled program."""

    alpha: jax.Array  # the leaky slope, for the steps and the checks
    min_delta: jax.Array  # least improvement of the validation loss that counts
    patience: jax.Array  # checks without improvement before EARLY_STOPPED
    check_every: jax.Array  # the chunk's steps (int32): one compiled chunk for every count


@jit
def check_inputs(data: WeightedData, step_size, validation, test) -> CheckInputs:
    """What the checks need besides the state, batched; data-only terms computed once."""
    if data.x.ndim == 2:
        roots = jax.vmap(theory.moment_roots)(data)
    else:  # d-dim input: no certificate
        zeros = jnp.zeros((data.x.shape[0], 4, 4), data.y.dtype)
        roots = (zeros, zeros)
    return CheckInputs(data, step_size, validation, test, roots)


@jit
def checked_inputs(data: WeightedData, step_size, validation, test, params: Params, scale_a):
    """`check_inputs`, whether each run's training, validation and test points are usable
    (runs, 3): x and y finite, weights finite, ≥ 0 and of positive sum, and two (runs,)
    flags of 1-D runs (d-dim: False): a training point at 0 (`theory.point_at_zero`), and
    no such point but a kink of `params` (s_a = `scale_a`) already at or beyond the nearest
    one, as non-zero biases put it. One program: `simulate` reads the flags back before any
    run trains."""
    usable = jnp.stack([_usable(points) for points in (data, validation, test)], -1)
    if data.x.ndim == 2:
        at_zero = theory.point_at_zero(data.x)
        nearest = jnp.min(jnp.abs(data.x), axis=1)
        among = (max_abs_kink(params, Scaling(scale_a, 1.0)) >= nearest) & ~at_zero
    else:
        at_zero = among = jnp.zeros(data.x.shape[0], bool)
    return check_inputs(data, step_size, validation, test), usable, at_zero, among


def _usable(points: WeightedData) -> jax.Array:
    """(runs,) whether every point of a run is finite and its weights a distribution's
    multiple (non-negative, positive sum)."""
    axes = tuple(range(1, points.x.ndim))
    finite = jnp.all(jnp.isfinite(points.x), axes) & jnp.all(jnp.isfinite(points.y), 1)
    weights = points.weights
    proper = jnp.all(jnp.isfinite(weights) & (weights >= 0), 1) & (jnp.sum(weights, 1) > 0)
    return finite & proper


def _runs_named(indices: np.ndarray) -> str:
    """ "run 3", or "run 3 and 4 more": the first of some runs and how many others."""
    more = f" and {indices.size - 1} more" if indices.size > 1 else ""
    return f"run {indices[0]}{more}"


def refuse_unusable(usable: np.ndarray, reweighted: bool) -> None:
    """Refuse runs whose points are not finite or whose weights are not those of a
    distribution (`checked_inputs`' flags, read back), naming the input and the first run:
    they would end diverged, or stopped on a meaningless loss, with no word of why."""
    names = ("data", "validation_weights" if reweighted else "validation", "test")
    for column, name in enumerate(names):
        bad = np.flatnonzero(~usable[:, column])
        if bad.size:
            raise ValueError(
                f"{name}: {_runs_named(bad)}: points that are not finite, or weights that "
                "are negative, not finite or of sum 0"
            )


class PointAtZeroWarning(UserWarning):
    """A run's 1-D training data have a point at x = 0 (`simulate`)."""


def warn_of_points_at_zero(at_zero: np.ndarray) -> None:
    """Warn of runs with a training point at x = 0 (`checked_inputs`' flags, read back):
    the kink rule stops them as crossed at their first check, whatever they would have
    done. Called from `simulate`'s helpers, so the warning points at `simulate`'s caller."""
    flagged = np.flatnonzero(at_zero)
    if flagged.size:
        warnings.warn(
            f"data: {_runs_named(flagged)}: a training point at x = 0, where the kink of "
            "every zero bias is; the kink rule stops such a run as crossed at its first "
            "check (the theory needs x_j ≠ 0, docs/theory.md)",
            PointAtZeroWarning,
            stacklevel=5,
        )


class KinksAmongDataWarning(UserWarning):
    """A run's 1-D network starts with a kink among its training points (`simulate`)."""


def warn_of_kinks_among_data(among: np.ndarray) -> None:
    """Warn of runs whose network starts with a kink at or beyond the nearest training
    point (`checked_inputs`' flags, read back): the kink rule stops them as crossed at
    their first check. As `warn_of_points_at_zero`, it points at `simulate`'s caller."""
    flagged = np.flatnonzero(among)
    if flagged.size:
        warnings.warn(
            f"params: {_runs_named(flagged)}: a kink |b_i / (s_a a_i)| at or beyond the "
            "nearest training point before any step (non-zero biases); the kink rule stops "
            "such a run as crossed at its first check: leave 'crossed' out of stop_on",
            KinksAmongDataWarning,
            stacklevel=5,
        )


def chunk_end(params: Params) -> ChunkEnd:
    """The checks' view of one run after a general or fixed-pattern chunk (O(n) or O(nm))."""
    if params.a.ndim > 1:  # d-dim input: no certificate
        zeros = jnp.zeros((2, 3, 3), params.b.dtype)
        return ChunkEnd(zeros, zeros[0, :1], jnp.ones(1, bool))
    theta = jnp.stack([params.a, params.b, params.w], -1)
    return ChunkEnd(theory.neuron_grams(params), theta, active_neurons(params))


def _all_finite(params, loss) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]
    return jnp.all(jnp.stack(leaves)) & jnp.isfinite(loss)


def _network_outputs(state: RunState, data: WeightedData, end: ChunkEnd, alpha, lines):
    """f(x_j): from the per-side lines when the pattern is known to be fixed, else directly."""
    if lines:
        return theory.linear_outputs(end.grams, state.params.c, data.x, alpha)
    return forward(state.params, data.x, alpha, state.scaling)


def _held_out_loss(state: RunState, points: WeightedData, alpha) -> jax.Array:
    residual = forward(state.params, points.x, alpha, state.scaling) - points.y
    return 0.5 * jnp.sum(points.weights * residual * residual)


def _stops(runs: Runs, inputs: CheckInputs, end: ChunkEnd, loss, alpha, rules, lines, stale):
    """The stop conditions of one run, in order: (conditions, status codes). `stale`: its
    validation loss has not improved for `patience` checks."""
    params, data = runs.state.params, inputs.data
    if lines:  # O(1): the Grams, c and the tracked neurons, not the n neurons
        finite = _all_finite((end.grams, end.witnesses), loss) & jnp.isfinite(params.c)
    else:
        finite = _all_finite(params, loss)
    conditions, codes = [~finite], [Status.DIVERGED]
    if "crossed" in rules:  # 1-D: the paper's kink rule; d-dim: the pattern changed
        if data.x.ndim == 1:
            conditions.append(runs.info.max_kink >= jnp.min(jnp.abs(data.x)))
        else:
            conditions.append(runs.info.pattern_change >= 0)
        codes.append(Status.CROSSED)
    if "early_stopping" in rules:
        conditions.append(stale)
        codes.append(Status.EARLY_STOPPED)
    if "degenerate" in rules:
        if lines:  # no real neuron on a side: its Gram is 0 (a_i = 0 counts as -)
            one_sided = jnp.any(jnp.trace(end.grams, axis1=-2, axis2=-1) == 0)
        else:
            one_sided = theory.a_degenerate(params)
        conditions += [theory.x_degenerate(data), one_sided]
        codes += [Status.X_DEGENERATE, Status.A_DEGENERATE]
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
    return conditions, codes


def _validated(info: RunInfo, step, val, test, min_delta) -> RunInfo:
    """`info` after a check with validation loss `val` and test loss `test` at `step`.
    `min_delta` is on the paper code's validation loss Σ p r², twice `val` = ½ Σ p r²
    (halving is exact, so the comparison is the paper code's to the bit)."""
    improved = val < info.best_val - 0.5 * min_delta
    return info._replace(
        best_val=jnp.where(improved, val, info.best_val),
        stale_checks=jnp.where(improved, 0, info.stale_checks + 1),
        test_at_best=jnp.where(improved, test, info.test_at_best),
        best_step=jnp.where(improved, step, info.best_step),
    )


def check_one(
    runs: Runs, inputs: CheckInputs, end: ChunkEnd, scalars: ChunkScalars, *, rules, lines
):
    """Stopping checks of one run after a chunk, and the validation bookkeeping:
    (status code, training loss, info). `lines`: the network's outputs come from the
    per-side lines (a propagator chunk, whose parameters are not materialized)."""
    state, data, alpha = runs.state, inputs.data, scalars.alpha
    residual = _network_outputs(state, data, end, alpha, lines) - data.y
    loss = 0.5 * jnp.sum(data.weights * residual * residual)
    if "held_out" in rules:
        val = _held_out_loss(state, inputs.validation, alpha)
        test = _held_out_loss(state, inputs.test, alpha)
    else:
        val = test = 0.5 * jnp.sum(inputs.validation.weights * residual * residual)
    info = _validated(runs.info, state.step, val, test, scalars.min_delta)
    stale = info.stale_checks >= scalars.patience
    conditions, codes = _stops(runs, inputs, end, loss, alpha, rules, lines, stale)
    code = jnp.select(conditions, [jnp.int8(c) for c in codes], jnp.int8(Status.RUNNING))
    return code, loss, info
