"""The training paths: `check_every` steps of a batch of runs, and which path a run takes.

"general" (autodiff of the loss, any optimizer and input dimension, O(n·m) per step),
"fixed_pattern" (the per-side lines of `fastpath`, O(n)) and "propagator" (GD on the
propagator of `propagator`, O(1)); docs/design.md ("Training paths"). A fast path reports
the runs whose chunk it could not do exactly, and the engine redoes those on "general".
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdrelu import native_general, theory
from gdrelu.data import WeightedData
from gdrelu.detectors import below_linear
from gdrelu.engine.checks import chunk_end
from gdrelu.engine.state import RunState, materialized, refreshed
from gdrelu.fastpath import fixed_pattern_gradient, side_moments
from gdrelu.model import (
    Params,
    activation_pattern,
    active_neurons,
    loss_and_pattern,
    loss_gradient,
    loss_pattern_and_gradient,
    max_abs_kink,
)
from gdrelu.numbers import check_kind, has_real_dtype
from gdrelu.optim import (
    Optimizer,
    get_optimizer,
    minibatch,
    scan_steps,
    velocity,
    with_velocity,
    words_ahead,
)
from gdrelu.outcome import stop_rules
from gdrelu.propagator import HEAVY_BALL, ChunkEnd, Noise, deferred_steps, propagates, state_size


class Trained(NamedTuple):
    """A path's chunk of a batch of runs; leading runs axis on every field."""

    state: RunState
    kink: jax.Array  # (runs,) max over the chunk's steps of max_i |b_i/a_i|
    pattern_change: jax.Array  # (runs,) first step of the chunk whose pattern differs; -1
    loss_below: jax.Array  # (runs,) first step of the chunk with its loss below L_lin; -1
    exact: jax.Array  # (runs,) the path did the chunk exactly (else: redo it on "general")
    end: ChunkEnd  # what the checks need of the runs


def gd_step(params: Params, data: WeightedData, step_size, alpha=0.0) -> Params:
    """One GD step θ ← θ - h ∇L(θ) of one run (vmap it for a batch); h one positive number."""
    check_kind("params", params, Params)
    check_kind("data", data, WeightedData)
    theory.check_shapes(params, data)
    theory.check_alpha(alpha)
    if not isinstance(step_size, jax.core.Tracer):
        h = np.asarray(step_size)
        if h.ndim or not has_real_dtype(h) or not (np.isfinite(h) and h > 0):
            raise ValueError(f"step_size: {step_size!r}; one positive, finite number")
    grads = loss_gradient(params, data.x, data.y, data.weights, alpha)
    return jax.tree.map(lambda p, g: p - step_size * g, params, grads)


def _side_changes(params: Params, start: Params) -> jax.Array:
    """Which neurons of a 1-D run are on another side (sign a_i) than at `start`; (n,)."""
    if params.a.ndim > 1:
        return jnp.zeros(params.b.shape, bool)
    return (params.a > 0) != (start.a > 0)


def _batch_of(state: RunState, data, optimizer):
    """(t, words) -> the run's minibatch (WeightedData) at step t of the chunk
    (`optim.minibatch`; words: the step's multinomial words, or None)."""
    key = jax.random.wrap_key_data(state.noise_key)
    return lambda t, words: minibatch(optimizer, data, key, state.step + t, words)


def _gradient_of(state: RunState, data, alpha, optimizer, fixed_pattern):
    """(p, t, words) -> the gradient of the run's loss (or minibatch; words: `_batch_of`'s)
    at step t of the chunk: the loss's (`model.loss_gradient`, O(n·m)), or with
    `fixed_pattern` the per-side lines' (`fastpath.fixed_pattern_gradient`, O(n); exact
    while every kink stays inside the data)."""
    batch_at = _batch_of(state, data, optimizer)
    moments = side_moments(data) if fixed_pattern and not optimizer.stochastic else None

    def gradient(p, t, words):
        batch = batch_at(t, words)
        if not fixed_pattern:
            return loss_gradient(p, batch.x, batch.y, batch.weights, alpha, state.scaling)
        return fixed_pattern_gradient(p, side_moments(batch) if moments is None else moments, alpha)

    return gradient


class _Events(NamedTuple):
    """What the general path watches after every step of one run."""

    differs: jax.Array  # (n,) bool: the neuron's pattern differed from the initial one
    first: jax.Array  # () the first step whose pattern differs; -1
    below: jax.Array  # () the first step whose training loss is below (1 - ε) L_lin; -1

    @classmethod
    def none(cls, params: Params, step) -> _Events:
        never = jnp.full_like(step, -1)
        return cls(jnp.zeros(params.b.shape, bool), never, never)

    def watched(self, pattern, threshold, loss, now, step, valid=True) -> _Events:
        """These events with the parameters after step `step` watched: their loss and
        pattern `now` against L_lin = `threshold` and the initial `pattern`."""
        differs = jnp.any(now != pattern, axis=0) & valid  # (n,): which neurons' patterns
        low = below_linear(loss, threshold) & valid
        return _Events(
            self.differs | differs,
            jnp.where((self.first < 0) & jnp.any(differs), step, self.first),
            jnp.where((self.below < 0) & low, step, self.below),
        )


def _one_pass(p: Params, data: WeightedData, alpha, scaling, batch_weights=None):
    """(loss with the run's weights, activation pattern, gradient of the loss with
    `batch_weights` or None without them) at `p`, from one pass over the preactivations."""
    if batch_weights is None:
        return (*loss_and_pattern(p, data.x, data.y, data.weights, alpha, scaling), None)
    return loss_pattern_and_gradient(p, data.x, data.y, data.weights, batch_weights, alpha, scaling)


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
    max_i |b_i/a_i|, first step whose activation pattern differs, first step whose
    training loss is below (1 - ε) L_lin (-1: none; neither tracked with `fixed_pattern`),
    which neurons changed side or, on the general path, activation pattern at some step:
    they leave their side's plane, `RunState.regular`).

    On the general path the parameters after step t are watched at the start of step
    t + 1 (after the last step, in a pass of their own): the pass over the preactivations
    that gives their loss and pattern also gives that step's gradient (`one_pass`), so a
    step passes over the (m, n) arrays once, not twice. (Not with the epoch sampler, whose
    step sees B of the m points.)"""
    params, scaling = state.params, state.scaling
    transformation = optimizer.transformation(step_size)
    gradient = _gradient_of(state, data, alpha, optimizer, fixed_pattern)
    batch_at = _batch_of(state, data, optimizer)
    tracked = not fixed_pattern  # (an exact fixed-pattern chunk changes no group: `general`)
    one_pass = tracked and optimizer.sampler != "epoch"
    pattern = activation_pattern(params, data.x, scaling) if tracked else None
    threshold = state.linear_threshold
    active = active_neurons(params)  # padding stays padding: one mask for the chunk

    def body(carry, t, words):
        p, opt, kink, changed, events = carry
        grads = None
        if tracked:  # p: the parameters after step state.step + t (t = 0: watched already)
            weights = batch_at(t, words).weights if one_pass else None
            loss, now, grads = _one_pass(p, data, alpha, scaling, weights)
            events = events.watched(pattern, threshold, loss, now, state.step + t, t > 0)
        if grads is None:
            grads = gradient(p, t, words)
        updates, opt = transformation.update(grads, opt, p)
        p = optax.apply_updates(p, updates)
        changed = changed | _side_changes(p, params)
        kink = jnp.maximum(kink, max_abs_kink(p, scaling, active))
        return (p, opt, kink, changed, events), None

    none = _Events.none(params, state.step)  # and no neuron changed side
    carry = (params, state.opt_state, jnp.zeros_like(params.c), none.differs, none)
    words_for = words_ahead(optimizer, state.noise_key, state.step)
    params, opt, kink, changed, events = scan_steps(body, carry, num_steps, unroll, words_for)
    if tracked:  # the last step's parameters
        loss, now, _ = _one_pass(params, data, alpha, scaling)
        events = events.watched(pattern, threshold, loss, now, state.step + num_steps)
    state = state._replace(params=params, opt_state=opt)
    return state, kink, events.first, events.below, changed | events.differs


def general(
    state: RunState,
    data,
    step_size,
    alpha,
    num_steps,
    optimizer,
    unroll=1,
    kernel="xla",
    active=None,
) -> Trained:
    """Any optimizer on the loss's gradient: always exact. The only path that tracks the
    pattern change and the loss below L_lin after every step (in the pass over the points
    that gives the next step's gradient, `_trained`). With `kernel` "native"
    (`placement.Blocking.general`), the steps go through the C loop (`native_general`),
    which steps only the first `active` runs (padding after them keeps its state)."""
    state = materialized(state)
    if kernel == "native":
        trained = native_general.general_chunk(
            state, data, step_size, alpha, num_steps, optimizer, active
        )
    else:
        one = jax.vmap(_trained, in_axes=(0, 0, 0, None, None, None, None))
        trained = one(state, data, step_size, alpha, num_steps, optimizer, unroll)
    state, kink, first, below, changed = trained
    end = jax.vmap(chunk_end)(state.params)
    exact = jnp.ones(kink.shape, bool)
    return Trained(refreshed(state, changed), kink, first, below, exact, end)


def fixed_pattern(
    state: RunState, data, step_size, alpha, num_steps, optimizer, unroll=1
) -> Trained:
    """Any optimizer on the gradients of `fastpath` (O(n) per step; O(n + B) with
    minibatches), exact while no kink reaches the data and no neuron changes side.

    An exact chunk groups the points by their side of the origin throughout, and the
    network is affine on each side, so its loss is at least L_lin of that grouping: no
    step of it has a loss below the run's L_lin if the initial groups refine the sides
    (`RunState.within_sides`; the engine trains the other runs on the general path).
    Neither the pattern change nor the loss below L_lin is tracked here: the redo of an
    inexact chunk on the general path records both."""
    one = jax.vmap(
        functools.partial(_trained, fixed_pattern=True), in_axes=(0, 0, 0, None, None, None, None)
    )
    state = materialized(state)
    trained = one(state, data, step_size, alpha, num_steps, optimizer, unroll)
    state, kink, first, below, changed = trained
    exact = (kink < jnp.min(jnp.abs(data.x), axis=-1)) & ~jnp.any(changed, axis=-1)
    end = jax.vmap(chunk_end)(state.params)
    return Trained(refreshed(state, changed), kink, first, below, exact, end)


def propagator(
    state: RunState,
    data,
    step_size,
    alpha,
    num_steps,
    optimizer,
    unroll=1,
    blocks=None,
    kernel="xla",
) -> Trained:
    """GD, SGD or heavy ball on the propagator (`propagator.HEAVY_BALL`); `blocks` = (runs
    per block, traced count of blocks to train), by default the whole batch in one block;
    `kernel` as in `placement.Blocking`. The parameters (and the heavy ball's velocity)
    keep their Φ_t unapplied (`materialized`).

    Like an exact `fixed_pattern` chunk, an exact propagator chunk keeps every kink inside
    the data-free zone, where the run started: its groups are the initial ones, the two
    sides, and its loss is at least L_lin at every step. So it never sets the pattern
    change nor the loss below L_lin. A chunk in which a kink reached the data is not
    exact (and crossed, under that rule): the general path's redo records both."""
    moments = jax.vmap(side_moments)(data)
    block, count = blocks or (state.params.c.shape[0], None)
    noise = Noise(data, state.noise_key, state.step) if optimizer.stochastic else None
    trace = velocity(state.opt_state) if state_size(optimizer) == 6 else None
    stepped = deferred_steps(
        state.params,
        state.deferred,
        moments,
        step_size,
        alpha,
        num_steps,
        optimizer=optimizer,
        velocity=trace,
        noise=noise,
        block=block,
        unroll=unroll,
        num_blocks=count,
        kernel=kernel,
    )
    state = state._replace(params=state.params._replace(c=stepped.c), deferred=stepped.state)
    if trace is not None:
        trace = trace._replace(c=stepped.c_velocity)
        state = state._replace(opt_state=with_velocity(state.opt_state, trace))
    inside = stepped.kink < jnp.min(jnp.abs(data.x), axis=-1)
    none = jnp.full_like(state.step, -1)
    return Trained(state, stepped.kink, none, none, stepped.exact & inside, stepped.end)


# Batched paths: (state, data, step_size, alpha, num_steps, optimizer, unroll) -> Trained,
# a leading runs axis on all but the last four (unroll: GD steps per iteration of the
# compiled loop). Only "general" trains with any optimizer on any data; the propagator
# trains GD, SGD and heavy ball on 1-D data.
PATHS = {"general": general, "fixed_pattern": fixed_pattern, "propagator": propagator}


def choose_path(
    path: str, rules, optimizer: Optimizer, one_dimensional: bool, standard, held_out
) -> str:
    """`path`, checked; "auto": the propagator for GD, SGD and heavy ball (1-D, standard,
    no held-out points), else the general path. Without the crossing rule a run whose kinks
    reached the data goes on in the batch's general blocks (`mixes_paths`). The
    fixed-pattern path takes any optimizer on 1-D data in the standard parameterization
    but is not chosen by itself: with Adam most runs soon leave the fixed pattern, and the
    rest gain little at m = 6 points (`benchmarks/bench_optimizers.py`)."""
    fixed = one_dimensional and standard
    propagated = fixed and propagates(optimizer) and not held_out
    if path == "auto":
        return "propagator" if propagated else "general"
    if path not in PATHS:
        raise ValueError(f"path must be 'auto' or one of {sorted(PATHS)}, not {path!r}")
    if path == "fixed_pattern" and not fixed:
        raise ValueError("path='fixed_pattern' needs 1-D input and the standard parameterization")
    if path == "propagator" and not propagated:
        unmet = {
            f"one of {sorted(HEAVY_BALL)} (not {optimizer.name!r})": propagates(optimizer),
            "1-D input": one_dimensional,
            "the standard parameterization": standard,
            "no held-out points": not held_out,
        }
        raise ValueError(
            f"path='propagator' needs {', '.join(k for k, v in unmet.items() if not v)}"
        )
    return path


def mixes_paths(path: str, rules) -> bool:
    """Whether a batch on `path` keeps general blocks beside the path's own, for the runs
    it cannot train: on the fixed-pattern path those whose kinks are out of the data-free
    zone; on the propagator, without the crossing rule, those whose kinks reached the
    data (they go on training; the propagator would fail on them, and redo them, at every
    chunk). The others train on the path's blocks (docs/design.md, "Training paths")."""
    return path == "fixed_pattern" or (path == "propagator" and "crossed" not in rules)


def auto_plan(
    optimizer="gd",
    *,
    sampler: str | None = None,
    batch_size: int | None = None,
    stop_on=None,
    parameterization: str = "standard",
    one_dimensional: bool = True,
    early_stopping: bool = False,
    held_out: bool = False,
) -> tuple[str, bool]:
    """(path, mixed): the path `simulate(path="auto")` takes for these settings (its
    arguments of the same names; `one_dimensional`: 1-D input; `held_out`: validation or
    test points), and whether its batches keep general blocks (`mixes_paths`)."""
    optimizer = get_optimizer(optimizer, sampler=sampler, batch_size=batch_size)
    standard = parameterization == "standard"
    rules = stop_rules(stop_on, optimizer, standard, one_dimensional, "columns", early_stopping)
    path = choose_path("auto", rules, optimizer, one_dimensional, standard, held_out)
    return path, mixes_paths(path, rules)


def auto_path(optimizer="gd", **settings) -> str:
    """The path `simulate(path="auto")` takes (`auto_plan`'s, with its keyword settings)."""
    return auto_plan(optimizer, **settings)[0]
