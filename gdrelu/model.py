"""The two-layer (Leaky)ReLU network of docs/theory.md ("Model"), as pure functions over `Params`.

    f(x) = c + s_w Σ_i w_i σ_α(s_a a_i·x + b_i),   σ_α(t) = max(t, α t)

with the parameterization's multipliers (s_a, s_w) = `Scaling`: (1, 1) standard / He,
(sqrt(2/d), sqrt(2/n)) NTK (docs/theory.md, "Model"; n the true width). Every
function here acts on one run; `jax.vmap` adds a leading runs axis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdrelu.numbers import check_kind


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


class Scaling(NamedTuple):
    """Forward multipliers of the layer-1 weights a and the layer-2 weights w (scalars or
    traced arrays: data, not constants, so that widths can share a program)."""

    a: float | jax.Array = 1.0
    w: float | jax.Array = 1.0


STANDARD = Scaling(1.0, 1.0)
PARAMETERIZATIONS = ("standard", "ntk")


def check_neurons(params: Params) -> None:
    """Refuse a network whose a, b and w disagree on the neurons: b and w of shape
    ([runs,] n), a of b's shape or, on d-dim data, ([runs,] d, n)."""
    a, b, w = (jnp.shape(v) for v in params[:3])
    if w != b or not b or a[-1] != b[-1] or a[: len(b) - 1] != b[:-1] or len(a) > len(b) + 1:
        raise ValueError(
            f"params: a of shape {a}, b of {b}, w of {w}; each run needs one a, b and w per neuron"
        )


def per_run_scaling(scaling: Scaling | None, runs: int, dtype, xp=jnp) -> Scaling:
    """`scaling` (standard when None) as (runs,) arrays of `dtype` each."""
    return Scaling(*(xp.broadcast_to(xp.asarray(v, dtype), (runs,)) for v in scaling or STANDARD))


def scaling_of(parameterization: str, width, dim: int, xp=jnp) -> Scaling:
    """(s_a, s_w) of a parameterization: standard (1, 1), ntk (sqrt(2/d), sqrt(2/n));
    `xp=numpy` computes them on the host (in JAX's default float type)."""
    if parameterization == "standard":
        return STANDARD
    if parameterization == "ntk":
        width = xp.asarray(width, jnp.result_type(float))
        return Scaling(xp.sqrt(xp.asarray(2.0 / dim, width.dtype)), xp.sqrt(2.0 / width))
    raise ValueError(f"parameterization: {parameterization!r} is not one of {PARAMETERIZATIONS}")


def activation(t: jax.Array, alpha: float | jax.Array = 0.0) -> jax.Array:
    """σ_α(t) = t for t ≥ 0, α t otherwise (α = 0: ReLU).

    Written with `where` so that the derivative at t = 0 is 1, the reference's convention.
    """
    if jnp.ndim(alpha) != 0:
        raise ValueError(f"alpha: shape {jnp.shape(alpha)}; one number (vmap for several)")
    return jnp.where(t >= 0, t, alpha * t)


def preactivations(params: Params, x: jax.Array, scaling: Scaling = STANDARD) -> jax.Array:
    """z_ji = s_a a_i·x_j + b_i for data x of shape (m,) (a 1-D network: a of shape (n,))
    or (m, d) (a (d, n)); returns (m, n). Other shapes of x are refused: they broadcast,
    and so is a batch of networks (b of shape (runs, n)): vmap over its runs."""
    check_kind("params", params, Params)
    x = jnp.asarray(x)
    if params.b.ndim != 1:
        raise ValueError(
            f"params: b of shape {params.b.shape}; one run's network, b of shape (n,): "
            "jax.vmap over a batch of runs"
        )
    if params.a.ndim == params.b.ndim:
        if x.ndim != 1:
            raise ValueError(f"x: shape {x.shape}; a 1-D network takes points of shape (m,)")
        return scaling.a * (x[:, None] * params.a) + params.b
    if x.ndim != 2 or x.shape[1] != params.a.shape[0]:
        raise ValueError(
            f"x: shape {x.shape}; this network takes points of shape (m, {params.a.shape[0]})"
        )
    return scaling.a * (x @ params.a) + params.b


def forward(
    params: Params, x: jax.Array, alpha: float | jax.Array = 0.0, scaling: Scaling = STANDARD
) -> jax.Array:
    """Network output f(x_j) for data x of shape (m,) or (m, d); returns (m,)."""
    hidden = activation(preactivations(params, x, scaling), alpha)
    return params.c + scaling.w * (hidden @ params.w)


def loss_and_pattern(
    params: Params, x: jax.Array, y: jax.Array, weights: jax.Array, alpha=0.0, scaling=STANDARD
) -> tuple[jax.Array, jax.Array]:
    """(L(θ), activation pattern (m, n) bool) from one pass over the preactivations."""
    z = preactivations(params, x, scaling)
    r = params.c + scaling.w * (activation(z, alpha) @ params.w) - y
    return 0.5 * jnp.sum(weights * r * r), z >= 0


def activation_pattern(params: Params, x: jax.Array, scaling: Scaling = STANDARD) -> jax.Array:
    """Which neuron is on at which data point: bool (m, n), z_ji ≥ 0."""
    return preactivations(params, x, scaling) >= 0


def active_neurons(params: Params) -> jax.Array:
    """Which neurons are real, (n,) bool (leading runs axis if batched).

    A padding neuron has a = b = w = 0 (`padded`): it adds nothing to f, every gradient
    of it is zero, so no gradient method moves it, and it is left out of the kinks, the
    checks and the NTK width. (A real neuron is never exactly 0 at a random init.)
    """
    a_nonzero = params.a != 0
    if params.a.ndim > params.b.ndim:
        a_nonzero = jnp.any(a_nonzero, axis=-2)
    return a_nonzero | (params.b != 0) | (params.w != 0)


def padded(params: Params, width: int, xp=jnp) -> Params:
    """`params` with padding neurons appended up to `width` (the last axis of a, b, w).
    `xp=numpy` pads host arrays, without a compiled program per width."""
    extra = width - params.b.shape[-1]
    if extra < 0:
        raise ValueError(f"width: cannot pad {params.b.shape[-1]} neurons to {width}")
    if extra == 0:
        return params

    def pad(leaf):
        return xp.pad(leaf, [(0, 0)] * (leaf.ndim - 1) + [(0, extra)])

    return Params(pad(params.a), pad(params.b), pad(params.w), params.c)


def kinks(params: Params, scaling: Scaling = STANDARD) -> jax.Array:
    """Kink positions k_i = -b_i / (s_a a_i) of a 1-D network, shape (n,) (or (runs, n))."""
    check_kind("params", params, Params)
    check_neurons(params)
    if params.a.ndim != params.b.ndim:
        raise ValueError(f"params: a of shape {params.a.shape} is not a 1-D network's (n,)")
    return -params.b / (scaling.a * params.a)


def max_abs_kink(params: Params, scaling: Scaling = STANDARD, active=None) -> jax.Array:
    """max_i |b_i / (s_a a_i)|: a kink crossed the data once this reaches min_j |x_j|.

    In d dimensions: max_i |b_i| / ‖s_a a_i‖, the largest distance of a kink hyperplane
    from the origin. Padding neurons (`active_neurons`, or the given `active` mask: it
    never changes during training) have no kink."""
    if params.a.ndim == params.b.ndim:
        ratios = jnp.abs(params.b / (scaling.a * params.a))
    else:
        ratios = jnp.abs(params.b) / (scaling.a * jnp.linalg.norm(params.a, axis=-2))
    active = active_neurons(params) if active is None else active
    return jnp.max(jnp.where(active, ratios, 0.0), axis=-1)


def weighted_loss(
    params: Params, x: jax.Array, y: jax.Array, weights: jax.Array, alpha=0.0, scaling=STANDARD
) -> jax.Array:
    """L(θ) = ½ Σ_j p_j (f(x_j) - y_j)², y and p of shape (m,) for the m points x."""
    f = forward(params, x, alpha, scaling)
    y, weights = jnp.asarray(y), jnp.asarray(weights)
    for name, value in (("y", y), ("weights", weights)):
        if value.shape != f.shape:
            raise ValueError(f"{name}: shape {value.shape}; one value per point, {f.shape}")
    r = f - y
    return 0.5 * jnp.sum(weights * r * r)


def loss_gradient(
    params: Params, x: jax.Array, y: jax.Array, weights: jax.Array, alpha=0.0, scaling=STANDARD
) -> Params:
    """∇_θ ½ Σ_j p_j (f(x_j) - y_j)², written out (equal to `jax.grad(weighted_loss)` up
    to round-off, with fewer passes over the (m, n) arrays):

        r_j = p_j (f(x_j) - y_j),  g_ji = r_j σ'_α(z_ji),
        ∂/∂a_i = s_w s_a w_i Σ_j g_ji x_j,  ∂/∂b_i = s_w w_i Σ_j g_ji,
        ∂/∂w_i = s_w Σ_j r_j σ_α(z_ji),      ∂/∂c = Σ_j r_j.
    """
    return loss_pattern_and_gradient(params, x, y, weights, weights, alpha, scaling)[2]


def loss_pattern_and_gradient(
    params: Params, x, y, weights, batch_weights, alpha=0.0, scaling=STANDARD
) -> tuple[jax.Array, jax.Array, Params]:
    """(L(θ) with `weights`, activation pattern (m, n) bool, ∇_θ of the loss with
    `batch_weights` (`loss_gradient`)) from one pass over the preactivations: a step's
    gradient on a minibatch of the training points, and the loss and pattern of the
    parameters it starts from."""
    z = preactivations(params, x, scaling)
    on = z >= 0
    hidden = jnp.where(on, z, alpha * z)
    residual = params.c + scaling.w * (hidden @ params.w) - y
    r = batch_weights * residual
    back = jnp.where(on, 1.0, alpha) * r[:, None]  # (m, n)
    outer = scaling.w * params.w
    grad_a = x @ back if x.ndim == 1 else x.T @ back  # (n,) or (d, n)
    gradient = Params(
        a=scaling.a * outer * grad_a,
        b=outer * jnp.sum(back, axis=0),
        w=scaling.w * (r @ hidden),
        c=jnp.sum(r),
    )
    return 0.5 * jnp.sum(weights * residual * residual), on, gradient
