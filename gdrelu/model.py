"""The two-layer (Leaky)ReLU network of PAPER.md, as pure functions over `Params`.

    f(x) = c + Σ_i w_i σ_α(a_i·x + b_i),   σ_α(t) = max(t, α t)

Every function here acts on one run; `jax.vmap` adds a leading runs axis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Params(NamedTuple):
    """Network parameters θ = (a, b, w, c).

    One run, 1-D input: a, b, w of shape (n,), c of shape ().
    One run, d-dim input: a of shape (d, n), b and w of shape (n,), c of shape ().
    Batched: a leading runs axis on every field.
    """

    a: jax.Array
    b: jax.Array
    w: jax.Array
    c: jax.Array


def activation(t: jax.Array, alpha: float | jax.Array = 0.0) -> jax.Array:
    """σ_α(t) = t for t ≥ 0, α t otherwise (α = 0: ReLU).

    Written with `where` so that the derivative at t = 0 is 1, the reference's convention.
    """
    return jnp.where(t >= 0, t, alpha * t)


def preactivations(params: Params, x: jax.Array) -> jax.Array:
    """z_ji = a_i·x_j + b_i for data x of shape (m,) or (m, d); returns (m, n)."""
    if x.ndim == 1:
        return x[:, None] * params.a + params.b
    return x @ params.a + params.b


def forward(params: Params, x: jax.Array, alpha: float | jax.Array = 0.0) -> jax.Array:
    """Network output f(x_j) for data x of shape (m,) or (m, d); returns (m,)."""
    return params.c + activation(preactivations(params, x), alpha) @ params.w


def activation_pattern(params: Params, x: jax.Array) -> jax.Array:
    """Which neuron is on at which data point: bool (m, n), z_ji ≥ 0."""
    return preactivations(params, x) >= 0


def kinks(params: Params) -> jax.Array:
    """Kink positions k_i = -b_i / a_i of a 1-D network, shape (n,)."""
    return -params.b / params.a


def max_abs_kink(params: Params) -> jax.Array:
    """max_i |b_i / a_i|: a kink crossed the data once this reaches min_j |x_j|."""
    return jnp.max(jnp.abs(params.b / params.a), axis=-1)


def weighted_loss(
    params: Params, x: jax.Array, y: jax.Array, weights: jax.Array, alpha=0.0
) -> jax.Array:
    """L(θ) = ½ Σ_j p_j (f(x_j) - y_j)²."""
    r = forward(params, x, alpha) - y
    return 0.5 * jnp.sum(weights * r * r)
