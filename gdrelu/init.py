"""Weight initializations and layer-1 bias inits (docs/theory.md, "Model" and "Section 10");
every draw takes an explicit key.

Bias inits act on the effective layer-1 weights ã_i = s_a a_i (`model.Scaling`), so a
"kink" init puts the hyperplane ã_i·x + b_i = 0 where it promises whatever the
parameterization. With u ~ U(0, 1) per neuron:

- zero: b_i = 0;  normal(σ): N(0, σ²);  uniform(σ): U(-σ, σ);
- unif, unif-pos, unif-neg: U(-√6, √6), U(0, √6), U(-√6, 0);  pytorch: U(-1/√d, 1/√d);
- kink-unif: b_i = √3 (2u - 1) ‖ã_i‖, the kink at signed distance U(-√3, √3) from 0;
- kink-neg-unif: b_i = -√3 u ‖ã_i‖, at distance U(0, √3), active away from the origin;
- kink-uniform: b_i = -‖ã_i‖ t, t ~ U(min_j e_i·x_j, max_j e_i·x_j), e_i = ã_i/‖ã_i‖:
  the kink uniform over the data's range along e_i;
- he+k: b_i = -ã_i·z_i, z_i = Σ_l λ_l x_{j_l} for k training points j_l drawn by weight
  and λ ~ Dirichlet(1, …, 1): the kink at a random convex combination of k points;
- kink-neg-point: z_i = ã_i·x_j for a training point j drawn by weight; (a_i, w_i) flip
  sign if z_i < 0; b_i = -|z_i|: the kink at the point, active away from the origin;
- mean: b_i = -ã_i·x̄, x̄ = Σ_j p_j x_j: every kink through the data mean.

Data-dependent inits use the points of positive training weight.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp

from gdrelu.compiled import jit
from gdrelu.model import STANDARD, Params, Scaling, scaling_of
from gdrelu.numbers import check_key, is_integer


def _layers(key, n, d, var_a, var_w, dtype):
    key_a, key_w = jax.random.split(key)
    shape_a = (n,) if d == 1 else (d, n)
    a = jnp.sqrt(var_a) * jax.random.normal(key_a, shape_a, dtype)
    w = jnp.sqrt(var_w) * jax.random.normal(key_w, (n,), dtype)
    return Params(a=a, b=jnp.zeros((n,), dtype), w=w, c=jnp.zeros((), dtype))


# (Var a_i, Var w_i) of each weight init for n neurons in d dimensions (n may be traced)
VARIANCES = {
    "he": lambda n, d: (2.0 / d, 2.0 / n),
    "swapped": lambda n, d: (2.0 / n, 2.0),
    "ntk": lambda n, d: (1.0, 1.0),
}


def he_init(n: int, d: int = 1, *, key: jax.Array, dtype=None) -> Params:
    """Standard / He: a_i ~ N(0, 2/d I), w_i ~ N(0, 2/n), b = 0, c = 0."""
    return _initialized("he", n, d, key, dtype)


def swapped_init(n: int, d: int = 1, *, key: jax.Array, dtype=None) -> Params:
    """The paper's swapped variances: a_i ~ N(0, 2/n), w_i ~ N(0, 2), b = 0, c = 0."""
    return _initialized("swapped", n, d, key, dtype)


def ntk_init(n: int, d: int = 1, *, key: jax.Array, dtype=None) -> Params:
    """NTK: raw weights a_i, w_i ~ N(0, 1) (the forward pass scales them), b = 0, c = 0."""
    return _initialized("ntk", n, d, key, dtype)


def _initialized(init: str, n: int, d: int, key, dtype) -> Params:
    """One network of `n` neurons on R^d (n and d are shapes: static Python integers)."""
    for name, size in (("n", n), ("d", d)):
        if not is_integer(size) or size < 1:
            raise ValueError(f"{name}: {size!r} is not a positive integer (a static shape)")
    check_key("key", key)
    dtype = dtype or jnp.result_type(float)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype: {jnp.dtype(dtype).name} is not a floating-point dtype")
    return _layers(key, n, d, *VARIANCES[init](n, d), dtype)


INITS = {"he": he_init, "swapped": swapped_init, "ntk": ntk_init}
PARAMETERIZATION = {"he": "standard", "swapped": "standard", "ntk": "ntk"}


def parameterization_of(init: str) -> str:
    """The parameterization a weight init trains in (`model.scaling_of`): "ntk" scales the
    raw N(0, 1) weights in the forward pass, the others are standard."""
    return PARAMETERIZATION[init]


def padded_init(init: str, size: int, width: jax.Array, *, key: jax.Array, dtype) -> Params:
    """`padded(INITS[init](width, key=key), size)` of a 1-D network, with `width` data: one
    compiled program draws every width up to `size`.

    The normals are drawn at `size`, and the first `width` are those of a width-`width`
    draw: JAX's (partitionable, default) threefry makes an entry's bits depend on its
    position alone. (Not so along the neurons of a (d, n) draw: d-dim inits take `INITS`.)
    """
    params = _layers(key, size, 1, *VARIANCES[init](width.astype(dtype), 1), dtype)
    real = jnp.arange(size) < width
    return params._replace(**{f: jnp.where(real, getattr(params, f), 0.0) for f in "abw"})


SQRT6, SQRT3 = math.sqrt(6.0), math.sqrt(3.0)
BIAS_INITS = (
    "zero",
    "normal(σ)",
    "uniform(σ)",
    "unif",
    "unif-pos",
    "unif-neg",
    "pytorch",
    "kink-unif",
    "kink-neg-unif",
    "kink-uniform",
    "he+k",
    "kink-neg-point",
    "mean",
)
MAX_MIXED_POINTS = 64  # he+k: k training points drawn per neuron at start-up, at most
_PARAMETRIC = re.compile(r"^(normal|uniform)\(([^()]+)\)$|^he\+(\d+)$")


def parse_bias_init(name: str) -> tuple[str, float | None]:
    """("normal", σ), ("uniform", σ), ("he+k", k) or (name, None); ValueError names the field."""
    match = _PARAMETRIC.match(name)  # no stripping: the name is hashed into the cell
    if match:
        if match.group(3) is not None:
            k = int(match.group(3))
            if not 1 <= k <= MAX_MIXED_POINTS:
                raise ValueError(
                    f"bias_init: {name!r} needs 1 ≤ k ≤ {MAX_MIXED_POINTS}: each neuron draws k "
                    "training points at start-up (k → ∞ is bias init 'mean')"
                )
            return "he+k", float(k)
        try:
            sigma = float(match.group(2))
        except ValueError:
            raise ValueError(f"bias_init: {name!r} needs a number in parentheses") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"bias_init: {name!r} needs σ > 0")
        return match.group(1), sigma
    if name not in BIAS_INITS or "(" in name or name == "he+k":
        raise ValueError(
            f"bias_init: {name!r} is not one of {', '.join(BIAS_INITS)}, σ > 0 and "
            f"1 ≤ k ≤ {MAX_MIXED_POINTS} written as numbers: normal(0.1), he+1"
        )
    return name, None


def points_per_neuron(name: str) -> int:
    """How many training points bias init `name` draws per neuron (k of he+k; else 1): the
    start-up draws hold (runs, n, k, d) of them."""
    mode, value = parse_bias_init(name)
    return int(value) if mode == "he+k" else 1


def _as_matrix(x):
    return x[:, None] if x.ndim == 1 else x


def _columns(a):
    """Effective layer-1 weights as (d, n) whatever the input dimension."""
    return a[None, :] if a.ndim == 1 else a


def _training_points(key, x, weights, count):
    """`count` indices of training points drawn with probability p_j."""
    return jax.random.choice(key, x.shape[0], (count,), p=weights / jnp.sum(weights))


def init_bias(
    params: Params,
    x: jax.Array,
    weights: jax.Array,
    name: str = "zero",
    *,
    key: jax.Array,
    scaling: Scaling = STANDARD,
) -> Params:
    """`params` (one run, zero biases) with layer-1 biases drawn by bias init `name`;
    x (m,) or (m, d) and weights p (m,) are the run's training data."""
    mode, value = parse_bias_init(name)
    n, dtype = params.b.shape[0], params.b.dtype
    u = jax.random.uniform(key, (n,), dtype)
    effective = scaling.a * _columns(params.a)  # (d, n)
    norms = jnp.linalg.norm(effective, axis=0)
    d = effective.shape[0]
    points = _as_matrix(x)  # (m, d)
    if mode == "zero":
        return params
    if mode == "normal":
        return params._replace(b=value * jax.random.normal(key, (n,), dtype))
    simple = {
        "uniform": (-(value or 0.0), value or 0.0),
        "unif": (-SQRT6, SQRT6),
        "unif-pos": (0.0, SQRT6),
        "unif-neg": (-SQRT6, 0.0),
        "pytorch": (-1.0 / math.sqrt(d), 1.0 / math.sqrt(d)),
    }
    if mode in simple:
        low, high = simple[mode]
        return params._replace(b=low + (high - low) * u)
    if mode == "kink-unif":
        return params._replace(b=SQRT3 * (2.0 * u - 1.0) * norms)
    if mode == "kink-neg-unif":
        return params._replace(b=-SQRT3 * u * norms)
    if mode == "kink-uniform":
        live = weights > 0
        along = points @ (effective / norms)  # (m, n): e_i·x_j
        low = jnp.min(jnp.where(live[:, None], along, jnp.inf), axis=0)
        high = jnp.max(jnp.where(live[:, None], along, -jnp.inf), axis=0)
        return params._replace(b=-norms * (low + (high - low) * u))
    if mode == "mean":
        centre = weights @ points / jnp.sum(weights)
        return params._replace(b=-(centre @ effective))
    if mode == "he+k":
        k = int(value)
        key_points, key_mix = jax.random.split(key)
        chosen = _training_points(key_points, points, weights, n * k).reshape(n, k)
        mix = jax.random.dirichlet(key_mix, jnp.ones(k, dtype), (n,))  # (n, k)
        centres = jnp.einsum("nk,nkd->nd", mix, points[chosen])
        return params._replace(b=-jnp.sum(centres.T * effective, axis=0))
    # kink-neg-point
    chosen = _training_points(key, points, weights, n)
    z = jnp.sum(points[chosen].T * effective, axis=0)
    flip = jnp.where(z < 0, -1.0, 1.0).astype(dtype)
    return params._replace(a=params.a * flip, w=params.w * flip, b=-jnp.abs(z))


# ---------------------------------------------------------------------------------------
# Batched draws: one run per key, one compiled program per shape.
# ---------------------------------------------------------------------------------------


@functools.partial(jit, static_argnames=("width", "dim", "init"))
def draw_params(keys: jax.Array, like: jax.Array, *, width: int, dim: int, init: str) -> Params:
    """Networks of `width` neurons on `dim`-dim inputs, one per key (runs,), in the dtype
    of `like`: one compiled program per (width, dim, init, dtype, run count)."""
    return jax.vmap(lambda key: INITS[init](width, dim, key=key, dtype=like.dtype))(keys)


@functools.partial(jit, static_argnames=("size", "init"))
def draw_padded_params(
    keys: jax.Array, width: jax.Array, like: jax.Array, *, size: int, init: str
) -> Params:
    """1-D networks of `width` neurons padded to `size` (`padded_init`), one per key: one
    compiled program per (size, init, dtype, run count), whatever the width."""
    return jax.vmap(lambda key: padded_init(init, size, width, key=key, dtype=like.dtype))(keys)


@functools.partial(jit, static_argnames=("bias_init", "init"))
def draw_biases(
    keys: jax.Array, params: Params, x: jax.Array, weights: jax.Array, *, bias_init: str, init: str
) -> Params:
    """`init_bias` of every run: keys (runs,), params with a leading runs axis, the runs'
    training inputs x (runs, m) or (runs, m, d) and weights (runs, m)."""
    dim = 1 if params.a.ndim == 2 else params.a.shape[1]
    scaling = scaling_of(parameterization_of(init), params.b.shape[-1], dim)

    def one(p, points, p_weights, key):
        return init_bias(p, points, p_weights, bias_init, key=key, scaling=scaling)

    return jax.vmap(one)(params, x, weights, keys)
