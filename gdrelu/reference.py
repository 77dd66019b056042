"""Slow, obvious implementations that tests use as oracles for the engine's fast paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdrelu.fastpath import SideMoments, fixed_pattern_gradient
from gdrelu.model import Params, active_neurons
from gdrelu.propagator import ChunkEnd, deferred, deferred_steps, materialize


def fixed_pattern_steps(
    params: Params, moments: SideMoments, step_size, alpha, num_steps: int
) -> tuple[Params, jax.Array, jax.Array]:
    """`num_steps` GD steps of one 1-D run under a fixed activation pattern.

    Returns the new parameters, max over the steps and neurons of |b_i/a_i|, which tells
    whether the pattern really stayed fixed (it did iff that is < min_j |x_j|), and which
    neurons were on the other side (sign a_i) than at the start after some step, (n,).
    """

    def body(carry, _):
        p, kink, changed = carry
        grads = fixed_pattern_gradient(p, moments, alpha)
        p = Params(*(v - step_size * g for v, g in zip(p, grads, strict=True)))
        real_kinks = jnp.where(active, jnp.abs(p.b / p.a), 0.0)
        kink = jnp.maximum(kink, jnp.max(real_kinks))
        return (p, kink, changed | ((p.a > 0) != start_plus)), None

    start_plus, active = params.a > 0, active_neurons(params)
    carry = (params, jnp.zeros_like(params.c), jnp.zeros(params.b.shape, bool))
    (params, kink, changed), _ = jax.lax.scan(body, carry, length=num_steps)
    return params, kink, changed


def propagator_steps(
    params: Params,
    moments: SideMoments,
    step_size,
    alpha,
    num_steps: int,
    slope0,
    regular,
) -> tuple[Params, jax.Array, jax.Array, ChunkEnd]:
    """`num_steps` GD steps of a batch of 1-D runs on the propagator, materialized.

    Every argument has a leading runs axis (step_size (runs,); slope0, regular (runs, n)).
    Returns the new parameters, per run the max over the steps of max_i |b_i/a_i|,
    whether the run is exact (False when some a_i changed sign, so the sides moved, or
    too many neurons are irregular), and what the checks need at the end (`ChunkEnd`).
    """
    state = deferred(params, slope0, regular)
    stepped = deferred_steps(params, state, moments, step_size, alpha, num_steps)
    params = materialize(params._replace(c=stepped.c), stepped.state.phi)
    return params, stepped.kink, stepped.exact, stepped.end
