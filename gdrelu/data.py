"""Training data as weighted empirical distributions (PAPER.md, "Data")."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

SIX_POINTS_X = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)
SIX_POINTS_Y = (-1.0, 2.0, -1.0, 1.0, -2.0, 1.0)


class WeightedData(NamedTuple):
    """An empirical distribution Σ_j p_j δ_(x_j, y_j).

    x: (m,) or (m, d); y: (m,); weights p: (m,), summing to 1.
    Batched: a leading runs axis on every field.
    """

    x: jax.Array
    y: jax.Array
    weights: jax.Array


def six_points(delta: float | jax.Array = 0.0, dtype=None) -> tuple[jax.Array, jax.Array]:
    """The paper's 1-D data: x = (-3, -2, -1, 1, 2, 3), y = (-1, 2, -1, 1, -2, 1) + Δ."""
    x = jnp.asarray(SIX_POINTS_X, dtype=dtype)
    y = jnp.asarray(SIX_POINTS_Y, dtype=dtype) + delta
    return x, y


def multinomial_weights(
    key: jax.Array, num_points: int, num_samples: int | jax.Array, dtype=None
) -> jax.Array:
    """p_j = count_j / N for N draws from the uniform distribution on `num_points` points.

    Returns (num_points,). `num_samples` may be traced (it is data, not a shape).
    """
    dtype = dtype or jnp.result_type(float)
    probs = jnp.full((num_points,), 1.0 / num_points, dtype=dtype)
    n = jnp.asarray(num_samples, dtype=dtype)
    counts = jax.random.multinomial(key, n, probs, dtype=dtype)
    return counts / n


def paper_data(
    key: jax.Array, delta: float | jax.Array, num_samples: int | jax.Array, dtype=None
) -> WeightedData:
    """One run's training distribution: the six points with multinomial weights (N samples)."""
    x, y = six_points(delta, dtype)
    return WeightedData(x, y, multinomial_weights(key, x.shape[0], num_samples, y.dtype))


def side_masks(x: jax.Array) -> jax.Array:
    """(2, m) masks of the data on each side of the origin, order (+, -)."""
    return jnp.stack([x > 0, x < 0]).astype(x.dtype)
