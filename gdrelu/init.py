"""Weight initializations (PAPER.md, "Parameterizations"); every draw takes an explicit key."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdrelu.model import Params


def _layers(key, n, d, var_a, var_w, dtype):
    key_a, key_w = jax.random.split(key)
    shape_a = (n,) if d == 1 else (d, n)
    a = jnp.sqrt(var_a) * jax.random.normal(key_a, shape_a, dtype)
    w = jnp.sqrt(var_w) * jax.random.normal(key_w, (n,), dtype)
    return Params(a=a, b=jnp.zeros((n,), dtype), w=w, c=jnp.zeros((), dtype))


def he_init(n: int, d: int = 1, *, key: jax.Array, dtype=None) -> Params:
    """Standard / He: a_i ~ N(0, 2/d I), w_i ~ N(0, 2/n), b = 0, c = 0."""
    dtype = dtype or jnp.result_type(float)
    return _layers(key, n, d, 2.0 / d, 2.0 / n, dtype)


def swapped_init(n: int, d: int = 1, *, key: jax.Array, dtype=None) -> Params:
    """The paper's swapped variances: a_i ~ N(0, 2/n), w_i ~ N(0, 2), b = 0, c = 0."""
    dtype = dtype or jnp.result_type(float)
    return _layers(key, n, d, 2.0 / n, 2.0, dtype)


INITS = {"he": he_init, "swapped": swapped_init}
