"""The state of a batch of runs between chunks: what training reads (`RunState`) and what
each run reports (`RunInfo`), as blackjax keeps `HMCState` apart from `HMCInfo`."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdrelu.compiled import jit
from gdrelu.data import WeightedData
from gdrelu.detectors import batched_map, linear_regime
from gdrelu.model import Params, Scaling, max_abs_kink, per_run_scaling
from gdrelu.optim import get_optimizer, velocity, with_velocity
from gdrelu.propagator import (
    IRREGULAR_CAPACITY,
    Deferred,
    deferred,
    materialized_neurons,
    regular_neurons,
    state_size,
)

GD = get_optimizer("gd")
MAX_STEPS = 2**31 - 1  # a run's step counters (step, pattern_change, ...) are int32


def check_step_budget(check_every: int, max_checks: int) -> None:
    """ValueError naming check_every if one check's steps, else max_checks if a run's
    `check_every × max_checks` steps, would overflow its int32 step counters (`MAX_STEPS`)."""
    if check_every > MAX_STEPS:
        raise ValueError(
            f"check_every: {check_every} steps exceed {MAX_STEPS}, the most a run's int32 "
            "step counter holds"
        )
    if check_every * max_checks > MAX_STEPS:
        raise ValueError(
            f"max_checks: {check_every} × {max_checks} steps exceed {MAX_STEPS}, the most a "
            "run's int32 step counter holds"
        )


class RunState(NamedTuple):
    """What training reads and writes, leading runs axis on every field."""

    params: Params
    opt_state: optax.OptState  # the optimizer's state (empty for GD)
    noise_key: jax.Array  # (runs, 2) uint32 key data of the run's minibatch noise
    step: jax.Array  # (runs,) steps taken
    scaling: Scaling  # (runs,) each: the parameterization's forward multipliers
    slope0: jax.Array  # (runs, n) w_i/a_i at the start, for the propagator path
    regular: jax.Array  # (runs, n) neuron i still lies in its side's plane (`propagator`)
    deferred: Deferred  # the propagator's unapplied Φ_t (on θ, and v for heavy ball), Grams…
    linear_threshold: jax.Array  # (runs,) L_lin at the initial parameters (`detectors`)
    within_sides: jax.Array  # (runs,) its groups refine the sides (`detectors.linear_regime`)


class RunInfo(NamedTuple):
    """What a run reports, updated after each chunk; (runs,) each."""

    max_kink: jax.Array  # max over steps so far of max_i |b_i/a_i|
    pattern_change: jax.Array  # first step whose activation pattern differs; -1: none
    loss_below: jax.Array  # first step whose training loss is below (1 - ε) L_lin; -1: none
    best_val: jax.Array  # best validation loss at a check so far
    stale_checks: jax.Array  # checks since the validation loss last improved
    test_at_best: jax.Array  # test loss at the check of best_val
    best_step: jax.Array  # step of that check


class Runs(NamedTuple):
    """A batch of runs: the chunk's carry, moved between devices as one tree."""

    state: RunState
    info: RunInfo


REPORTED = (
    "max_kink",
    "pattern_change",
    "loss_below",
    "best_val",
    "test_at_best",
    "best_step",
)
STEPS_REPORTED = ("pattern_change", "loss_below", "best_step")  # integers: step numbers


@functools.partial(jit, static_argnames=("optimizer",))
def initial_state(
    params: Params, step_size=None, noise_key=None, scaling=None, *, optimizer=GD, data=None
) -> Runs:
    """A batch of runs before their first step.

    step_size (runs,) builds the optimizer's state; noise_key (runs, 2) uint32 key data
    seeds the minibatches of a stochastic optimizer (zeros when not given); scaling holds
    (runs,) multipliers of the parameterization (standard when not given). `data`, the
    training points (leading runs axis), gives each run its L_lin (O(n·m), once); without
    it L_lin is NaN and no loss is ever below it.
    """
    runs, dtype = params.c.shape[0], params.c.dtype
    scaling = per_run_scaling(scaling, runs, dtype)
    if step_size is None:
        step_size = jnp.zeros((runs,), dtype)
    if noise_key is None:
        noise_key = jnp.zeros((runs, 2), jnp.uint32)
    opt_state = jax.vmap(lambda p, h: optimizer.transformation(h).init(p))(params, step_size)
    if params.a.ndim == 2:
        slope0, regular = jax.vmap(regular_neurons)(params)
    else:  # d-dim input: only the general path
        slope0, regular = jnp.zeros(params.b.shape, dtype), jnp.zeros(params.b.shape, bool)
    state = RunState(
        params=params,
        opt_state=opt_state,
        noise_key=noise_key,
        step=jnp.zeros((runs,), jnp.int32),
        scaling=scaling,
        slope0=slope0,
        regular=regular,
        deferred=_deferred(params, slope0, regular, _deferred_velocity(opt_state, optimizer)),
        **_linear_regime(params, data, scaling),
    )
    info = RunInfo(
        max_kink=jax.vmap(max_abs_kink)(params, scaling),
        pattern_change=jnp.full((runs,), -1, jnp.int32),
        loss_below=jnp.full((runs,), -1, jnp.int32),
        best_val=jnp.full((runs,), jnp.inf, dtype),
        stale_checks=jnp.zeros((runs,), jnp.int32),
        test_at_best=jnp.full((runs,), jnp.inf, dtype),
        best_step=jnp.zeros((runs,), jnp.int32),
    )
    return Runs(state, info)


def _linear_regime(params: Params, data, scaling: Scaling) -> dict[str, jax.Array]:
    """L_lin and within_sides of each run (`detectors.linear_regime`), 64 runs at a time."""
    runs, dtype = params.c.shape[0], params.c.dtype
    if data is None:
        return {
            "linear_threshold": jnp.full((runs,), jnp.nan, dtype),
            "within_sides": jnp.zeros((runs,), bool),
        }
    data = WeightedData(*(jnp.asarray(v, dtype) for v in data))
    threshold, within = batched_map(linear_regime, (params, data, scaling))
    return {"linear_threshold": threshold, "within_sides": within}


def _deferred_velocity(opt_state, optimizer):
    """The velocity the propagator defers with the parameters (heavy ball), else None."""
    return velocity(opt_state) if state_size(optimizer) == 6 else None


def _deferred(params: Params, slope0, regular, velocity=None) -> Deferred:
    if params.a.ndim == 2:
        return deferred(params, slope0, regular, velocity)
    runs, dtype, size = params.c.shape[0], params.c.dtype, 4 + IRREGULAR_CAPACITY
    zeros = jnp.zeros((runs, 2, 3, 3), dtype)
    false = jnp.zeros((runs, size), bool)
    return Deferred(zeros, zeros, jnp.zeros((runs, size), jnp.int32), false, false[:, 0])


def _velocity_of(state: RunState):
    """The heavy ball's velocity if the propagator defers it (D = 6), else None."""
    return velocity(state.opt_state) if state.deferred.phi.shape[-1] == 6 else None


@jit
def materialized(state: RunState) -> RunState:
    """A batch of runs with the propagator's pending Φ_t applied to the parameters (and
    to the heavy ball's velocity), as every path but the propagator needs them."""
    if state.params.a.ndim != 2:
        return state
    params, new = materialized_neurons(state.params, state.deferred.phi, _velocity_of(state))
    if new is None:
        return state._replace(params=params)
    return state._replace(params=params, opt_state=with_velocity(state.opt_state, new))


@jit
def materialized_params(state: RunState) -> Params:
    """The parameters of a batch of runs, with the propagator's pending Φ_t applied."""
    return materialized(state).params


def refreshed(state: RunState, changed) -> RunState:
    """`state` with the propagator's bookkeeping recomputed from its materialized params
    (and velocity); `changed` (runs, n): the neurons that left their side's plane."""
    regular = state.regular & ~changed
    pending = _deferred(state.params, state.slope0, regular, _velocity_of(state))
    return state._replace(regular=regular, deferred=pending)
