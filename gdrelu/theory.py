"""The paper's 1-D theory: linear-regression minimum, step size, "provably stuck" certificate.

Symbols follow docs/theory.md. Coordinates of the per-side linear model are ordered
v = (slope₊, intercept₊, slope₋, intercept₋); side + is x > 0 (data) or a > 0 (neurons).
Every public function takes one run (c of shape ()) or a batch (leading runs axis on
params, data and step size) and is pure JAX; `certificate`, `linear_outputs`, `psi_sum`
and `neural_tangent_gram` are building blocks for one run (vmap them).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import jacobi
from gdrelu.compiled import jit
from gdrelu.data import WeightedData, check_points, side_masks
from gdrelu.model import (
    STANDARD,
    Params,
    Scaling,
    activation,
    active_neurons,
    check_neurons,
    preactivations,
)
from gdrelu.numbers import check_kind

_A, _B, _W = 0, 1, 2
_Q = ((0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0))


def _over_runs(fn=None, *, one_dimensional: bool = False):
    """Let a one-run function take a leading runs axis (detected from params.c), compiled
    once per shape: called eagerly, its dozens of operations would each compile
    (docs/design.md, "Compilation cache"). A string option is a static argument. Inputs
    are checked first (`_check_batch`), naming the one at fault."""
    if fn is None:
        return functools.partial(_over_runs, one_dimensional=one_dimensional)

    def wrapped(params, data, *args, **kwargs):
        if jnp.ndim(params.c) == 0:
            return fn(params, data, *args, **kwargs)
        data_axis = 0 if jnp.ndim(data.weights) == 2 else None
        arg_axes = tuple(0 if jnp.ndim(a) == 1 else None for a in args)
        one = functools.partial(_call_with_kwargs, fn, kwargs)
        return jax.vmap(one, in_axes=(0, data_axis, *arg_axes))(params, data, *args)

    parameters = inspect.signature(fn).parameters.items()
    static = tuple(name for name, p in parameters if isinstance(p.default, str))
    names = tuple(name for name, p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD)[2:]
    compiled = jit(wrapped, static_argnames=static)

    @functools.wraps(fn)
    def checked(params, data, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{fn.__name__}: {len(names) + 2} positional arguments at most")
        given = dict(zip(names, args, strict=False))
        given.update((n, kwargs.pop(n)) for n in names[len(args) :] if n in kwargs)
        check_alpha(kwargs.get("alpha", 0.0))
        if "scaling" in kwargs:
            _check_scaling(kwargs["scaling"])
        return compiled(
            params, data, *_check_batch(fn.__name__, one_dimensional, params, data, given), **kwargs
        )

    return checked


def _check_batch(name: str, one_dimensional: bool, params, data, args: dict) -> tuple:
    """Refuse inputs that would fail inside `vmap`: params, data and each of `args` (a
    number or one per run) batched alike, and a d-dimensional network where `name` needs
    a 1-D one. Returns `args` as arrays, a (1,) one as a scalar."""
    check_kind("params", params, Params)
    check_kind("data", data, WeightedData)
    runs = jnp.shape(params.c)[0] if jnp.ndim(params.c) == 1 else None
    if jnp.ndim(params.c) > 1:
        raise ValueError(f"params: c of shape {jnp.shape(params.c)}; () or (runs,)")
    if one_dimensional:
        _check_one_dimensional(name, params)
    check_shapes(params, data)
    data_runs = jnp.shape(data.weights)[0] if jnp.ndim(data.weights) == 2 else None
    if data_runs is not None and data_runs != runs:
        batch = f"params of {runs} runs" if runs is not None else "params of one run"
        raise ValueError(f"data: weights of shape {jnp.shape(data.weights)}, but {batch} "
                         f"(c of shape {jnp.shape(params.c)})")  # fmt: skip
    checked = []
    for arg, value in args.items():
        value = jnp.asarray(value) if isinstance(value, list | tuple) else value
        shape = jnp.shape(value)
        if shape == (1,):
            value = jnp.reshape(value, ())
        elif shape and (len(shape) > 1 or shape[0] != runs):
            raise ValueError(f"{arg}: shape {shape}; one number, or one per run "
                             f"({runs or 'params of one run: a number'})")  # fmt: skip
        if arg == "step_size" and not isinstance(value, jax.core.Tracer):
            h = np.asarray(value)
            if not np.all(np.isfinite(h) & (h > 0)):
                raise ValueError("step_size: every step size must be positive and finite")
        checked.append(value)
    return tuple(checked)


def check_shapes(params: Params, data: WeightedData) -> None:
    """Refuse a network whose a, b and w disagree on the neurons (`model.check_neurons`),
    points whose x, y and weights disagree (`data.check_points`), and points of another
    input dimension than the network's: each failed deep inside `vmap` or XLA without
    naming its argument."""
    check_neurons(params)
    check_points("data", data)
    a, b, x, y = (jnp.shape(v) for v in (params.a, params.b, data.x, data.y))
    network_dim = a[-2] if len(a) > len(b) else None  # None: a 1-D network
    data_dim = x[-1] if len(x) > len(y) else None
    if network_dim != data_dim:
        points = "1-D points" if data_dim is None else f"points in d = {data_dim}"
        network = f"a network for d = {network_dim}" if network_dim else "a 1-D network"
        raise ValueError(
            f"data: x of shape {x} ({points}), but params are {network} (a of shape {a}); "
            "d-dim points have x of y's shape plus an axis of d"
        )


def _check_one_dimensional(name: str, params: Params) -> None:
    """Refuse a d-dimensional network (a of shape ([runs,] d, n)) where `name` needs a 1-D one."""
    if jnp.ndim(params.a) != jnp.ndim(params.b):
        raise ValueError(f"params: a of shape {jnp.shape(params.a)}: {name} is of 1-D networks")


def _check_one_dimensional_data(name: str, data: WeightedData) -> None:
    """Refuse what is not 1-D points x, y, weights of one shape ([runs,] m), naming `data`."""
    check_kind("data", data, WeightedData)
    check_points("data", data)
    if jnp.ndim(data.x) != jnp.ndim(data.y):
        raise ValueError(f"data: x of shape {jnp.shape(data.x)}: {name} is of 1-D points")


def _check_scaling(scaling) -> None:
    """One `Scaling` of two numbers for every run (per-run scalings: vmap, as
    `step_size.ntk_step_sizes` does)."""
    check_kind("scaling", scaling, Scaling)
    if any(jnp.ndim(v) for v in scaling):
        shapes = ", ".join(str(jnp.shape(v)) for v in scaling)
        raise ValueError(f"scaling: fields of shapes {shapes}; one number each (vmap per run)")


def check_alpha(alpha) -> None:
    """σ_α's leak: one number, in [0, 1) where it is known (not traced)."""
    if jnp.ndim(alpha) != 0:
        raise ValueError(f"alpha: shape {jnp.shape(alpha)}; one number for every run")
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) < 1.0:
        raise ValueError(f"alpha: {alpha!r} is not in [0, 1)")


def _call_with_kwargs(fn, kwargs, *args):
    return fn(*args, **kwargs)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b for small matrices, as a broadcast product and a sum: under `vmap` a batched
    dot of 4×4 matrices is a loop of tiny GEMM calls on a CPU, this an elementwise loop."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def _mv(a: jax.Array, v: jax.Array) -> jax.Array:
    """a @ v for a small matrix (`_mm`'s reason)."""
    return jnp.sum(a * v[..., None, :], axis=-1)


def _block_diag(top: jax.Array, bottom: jax.Array) -> jax.Array:
    z = jnp.zeros_like(top)
    return jnp.block([[top, z], [z, bottom]])


def _over_data(fn):
    """Let a one-run function of 1-D data take a leading runs axis; the data are checked first."""

    def wrapped(data):
        return fn(data) if jnp.ndim(data.weights) == 1 else jax.vmap(fn)(data)

    compiled = jit(wrapped)

    @functools.wraps(fn)
    def checked(data):
        _check_one_dimensional_data(fn.__name__, data)
        return compiled(data)

    return checked


def _side_moment_blocks(x: jax.Array, weights: jax.Array) -> jax.Array:
    """M_s = Σ_{j: sign x_j = s} p_j [[x_j², x_j], [x_j, 1]], shape (2, 2, 2), order (+, -)."""
    pw = side_masks(x) * weights
    m_xx, m_x, m_1 = pw @ (x * x), pw @ x, pw.sum(-1)
    return jnp.stack([jnp.stack([m_xx, m_x], -1), jnp.stack([m_x, m_1], -1)], -1)


@_over_data
def moment_matrix(data: WeightedData) -> jax.Array:
    """M = diag(M₊, M₋) of 1-D points, (4, 4) or (runs, 4, 4)."""
    blocks = _side_moment_blocks(data.x, data.weights)
    return _block_diag(blocks[0], blocks[1])


def _sqrt_and_pinv_sqrt(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """M^{1/2} and (M^{1/2})⁺ of a symmetric PSD matrix, from one eigendecomposition."""
    lam, vecs = jnp.linalg.eigh(m)
    root = jnp.sqrt(jnp.clip(lam, 0.0))
    # Rounding leaves λ ≈ ε λ_max where M is singular: cut λ, not √λ (≈ √ε √λ_max)
    kept = lam > m.shape[-1] * jnp.finfo(m.dtype).eps * jnp.max(lam)
    inv_root = jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)
    return (vecs * root) @ vecs.T, (vecs * inv_root) @ vecs.T


def neuron_grams(params: Params) -> jax.Array:
    """Σ_s = Σ_{i: sign a_i = s} θ_i θ_iᵀ with θ_i = (a_i, b_i, w_i) of a 1-D network;
    (2, 3, 3), or (runs, 2, 3, 3) for a batch."""
    check_kind("params", params, Params)
    check_neurons(params)
    _check_one_dimensional("neuron_grams", params)
    theta = jnp.stack([params.a, params.b, params.w], -2)  # ([runs,] 3, n)
    sides = jnp.stack([params.a > 0, params.a <= 0], -2).astype(theta.dtype)
    products = sides[..., :, None, None, :] * theta[..., None, :, None, :]
    return jnp.sum(products * theta[..., None, None, :, :], -1)


@_over_data
def moment_roots(data: WeightedData) -> tuple[jax.Array, jax.Array]:
    """M^{1/2} and (M^{1/2})⁺ of a run's data (they do not change during training); each
    (4, 4), or (runs, 4, 4) for a batch."""
    return _sqrt_and_pinv_sqrt(moment_matrix(data))


def _coupling(alpha, dtype) -> jax.Array:
    """B = [[I₂, αI₂], [αI₂, I₂]] (B = I₄ for ReLU)."""
    eye = jnp.eye(2, dtype=dtype)
    return jnp.block([[eye, alpha * eye], [alpha * eye, eye]])


def _reference_matrix(grams: jax.Array, alpha) -> jax.Array:
    """A_ref = C + B G B with G_s = Σ_s[0:2, 0:2] + Σ_s[2, 2] I₂."""
    dtype = grams.dtype
    g = grams[:, :2, :2] + grams[:, 2, 2][:, None, None] * jnp.eye(2, dtype=dtype)
    c = jnp.zeros((4, 4), dtype).at[jnp.ix_(jnp.array([1, 3]), jnp.array([1, 3]))].set(1.0)
    b = _coupling(alpha, dtype)
    return c + _mm(_mm(b, _block_diag(g[0], g[1])), b)


def _iteration_matrix(grams: jax.Array, root: jax.Array, alpha) -> jax.Array:
    """M^{1/2} A_ref M^{1/2}, (4, 4)."""
    return _mm(_mm(root, _reference_matrix(grams, alpha)), root)


@_over_runs(one_dimensional=True)
def paper_step_size(params: Params, data: WeightedData, *, alpha=0.0) -> jax.Array:
    """h = 1 / λ_max(M^{1/2} A_ref M^{1/2}) (docs/theory.md, "Step size"); shape () or (runs,)."""
    k = _iteration_matrix(neuron_grams(params), moment_roots(data)[0], alpha)
    return 1.0 / jnp.linalg.eigvalsh(k)[-1]


def neural_tangent_gram(
    params: Params, data: WeightedData, *, alpha=0.0, scaling: Scaling = STANDARD
) -> jax.Array:
    """K_w = diag(√p) J Jᵀ diag(√p) of one run, (m, m); J (m, #θ) holds ∂f(x_j)/∂θ.

    For f = c + s_w Σ_i w_i σ_α(z_ji), z_ji = s_a a_i·x_j + b_i, the entries are
        (J Jᵀ)_jk = s_w² Σ_i w_i² σ'_ji σ'_ki (s_a² x_j·x_k + 1) + s_w² Σ_i σ_ji σ_ki + 1,
    with σ'(z) = 1 for z ≥ 0 and α otherwise: O(m² n) work, no Jacobian materialized.
    """
    x = data.x.reshape(data.x.shape[0], -1)
    z = preactivations(params, data.x, scaling)
    slopes = jnp.where(z >= 0, 1.0, alpha).astype(z.dtype)
    values = activation(z, alpha)
    weighted = slopes * params.w
    inner = scaling.a**2 * (x @ x.T) + 1.0
    gram = scaling.w**2 * (inner * (weighted @ weighted.T) + values @ values.T) + 1.0
    root = jnp.sqrt(data.weights)
    return root[:, None] * gram * root[None, :]


@_over_runs
def ntk_step_size(
    params: Params, data: WeightedData, *, alpha=0.0, scaling: Scaling = STANDARD
) -> jax.Array:
    """h = 1 / λ_max(K_w) (docs/theory.md, "Multi-dimensional experiments"): any input
    dimension; () or (runs,)."""
    gram = neural_tangent_gram(params, data, alpha=alpha, scaling=scaling)
    return 1.0 / jnp.linalg.eigvalsh(gram)[-1]


@_over_runs
def param_norm_step_size(params: Params, data: WeightedData) -> jax.Array:
    """h = 1 / ‖θ‖² over all parameters (a, b, w, c): the step size of the paper's star
    code (docs/fidelity.md). Its "neural-tangent Gram" stacked the parameter values where
    per-point gradients belonged, so each row of its J is θ and K_w = ‖θ‖² √p √pᵀ, whose
    λ_max is ‖θ‖² Σ_j p_j = ‖θ‖². Padding neurons (zeros) add nothing; () or (runs,)."""
    del data  # the Gram's λ_max does not depend on the points, only on Σ_j p_j = 1
    squares = sum(jnp.sum(jnp.square(leaf)) for leaf in params)
    return 1.0 / squares


def _linear_coordinates(grams: jax.Array, alpha) -> jax.Array:
    """The per-side lines while no kink crossed: u = B (Σ₊[w,a], Σ₊[w,b], Σ₋[w,a], Σ₋[w,b])."""
    v = jnp.stack([grams[0, _W, _A], grams[0, _W, _B], grams[1, _W, _A], grams[1, _W, _B]])
    return _mv(_coupling(alpha, grams.dtype), v)


def linear_outputs(grams: jax.Array, c: jax.Array, x: jax.Array, alpha=0.0) -> jax.Array:
    """f(x_j) of one 1-D run while no kink has crossed the data: c plus its side's line,
    from the Grams alone (O(m), not O(n·m)); (m,)."""
    return c + _mv(_side_features(x), _linear_coordinates(grams, alpha))


def _side_features(x: jax.Array) -> jax.Array:
    """Row j is x_j's features in v-coordinates: (x_j, 1) placed in its side's slot; (m, 4)."""
    plus, minus = side_masks(x)
    return jnp.stack([plus * x, plus, minus * x, minus], -1)


@_over_runs(one_dimensional=True)
def provably_stuck(
    params: Params,
    data: WeightedData,
    step_size: jax.Array,
    *,
    alpha=0.0,
    eigenvectors: str = "columns",
    gwab: str = "conservative",
) -> jax.Array:
    """The sufficient criterion (docs/theory.md, "Provably stuck"): GD with step h never
    moves a kink across the data.

    `eigenvectors="rows"` reproduces the reference code's use of the rows of U in S_ψ
    (not the eigenvectors); the default uses the columns, as the proof does.
    `gwab="paper"` reads G_wab as the paper's text and its published code write it,
    κ max_s(|Σ_s[w,a]| + |Σ_s[w,b]| + D_s[w,a] + D_s[w,b]); the default,
    max_s(κ(|Σ_s[w,a]| + |Σ_s[w,b]|) + D_s[w,a] + D_s[w,b]), is at least as large
    (κ < 1/2), so it certifies no run the other does not (docs/fidelity.md).
    Returns a bool of shape () or (runs,).
    """
    theta = jnp.stack([params.a, params.b, params.w], -1)
    return certificate(
        neuron_grams(params),
        params.c,
        data,
        step_size,
        moment_roots(data),
        theta,
        active_neurons(params),
        alpha=alpha,
        eigenvectors=eigenvectors,
        gwab=gwab,
    )


def certificate(
    grams: jax.Array,
    c: jax.Array,
    data: WeightedData,
    step_size: jax.Array,
    roots: tuple[jax.Array, jax.Array],
    witnesses: jax.Array,
    real: jax.Array,
    *,
    alpha=0.0,
    eigenvectors: str = "columns",
    gwab: str = "conservative",
) -> jax.Array:
    """`provably_stuck` of one run from its Grams Σ_s (2, 3, 3), c, `moment_roots(data)`,
    and the neurons θ_i (rows of `witnesses`, (k, 3); `real` (k,) masks padding) on which
    the kinks' margin is tested: all of them, or any set whose margins bound the others'.
    """
    h = step_size
    root, pinv_root = roots
    k = _iteration_matrix(grams, root, alpha)
    residual = data.y - linear_outputs(grams, c, data.x, alpha)
    u_hat = _mv(_side_features(data.x).T, data.weights * residual)
    psi0 = _mv(pinv_root, u_hat)

    lam, vecs = jacobi.eigh(k)  # elementwise over runs: no LAPACK call per matrix
    rho = jnp.max(jnp.abs(1.0 - h * lam))
    big_s = 2.0 * h / (1.0 - rho)
    s_psi = psi_sum(lam, vecs, psi0, h, eigenvectors)

    b_norm = 1.0 + jnp.abs(alpha)
    root_norm = jnp.max(jnp.sum(jnp.abs(root), axis=1))
    kappa = 2.0 * b_norm * root_norm * s_psi

    a_diff = b_norm**2 * _gram_drift(grams, kappa, gwab)
    delta = big_s * root_norm**2 * a_diff
    kinks_hold = _kinks_hold(witnesses, real, kappa, jnp.min(jnp.abs(data.x)))
    return (rho < 1.0) & (kappa < 0.5) & (delta <= 0.5) & kinks_hold


def _gram_drift(grams: jax.Array, kappa, gwab: str) -> jax.Array:
    """Step 5's G_w + G_ab + G_wab: how far the Grams Σ_s (2, 3, 3) can still move."""
    if gwab not in ("conservative", "paper"):
        raise ValueError(f"gwab: {gwab!r} is not 'conservative' or 'paper'")
    q = jnp.asarray(_Q, grams.dtype)
    abs_grams = jnp.abs(grams)
    gram_norms = jnp.max(jnp.sum(abs_grams, axis=2), axis=1)
    d = (
        kappa * (_mm(q, abs_grams) + _mm(abs_grams, q))
        + (8.0 * kappa**2 * jnp.exp(4.0 * kappa) * gram_norms)[:, None, None]
    )
    g_w = jnp.max(d[:, _W, _W])
    g_ab = jnp.max(d[:, _A, _A] + d[:, _A, _B] + d[:, _B, _B])
    sigma_wab = abs_grams[:, _W, _A] + abs_grams[:, _W, _B]
    if gwab == "paper":
        g_wab = kappa * jnp.max(sigma_wab + d[:, _W, _A] + d[:, _W, _B])
    else:  # κ < 1/2 scales the Σ terms only: one golden flag rules out the paper's reading
        g_wab = jnp.max(kappa * sigma_wab + d[:, _W, _A] + d[:, _W, _B])
    return g_w + g_ab + g_wab


def _kinks_hold(witnesses: jax.Array, real: jax.Array, kappa, x_min) -> jax.Array:
    """Step 6: every real neuron θ_i (rows of `witnesses`) keeps its kink inside min|x_j|."""
    q = jnp.asarray(_Q, witnesses.dtype)
    theta = jnp.abs(witnesses)
    err = kappa * _mm(theta, q.T) + (2.0 * kappa**2 * jnp.exp(2.0 * kappa)) * jnp.max(
        theta, axis=1, keepdims=True
    )
    margin = (theta[:, _A] - err[:, _A]) * x_min - (theta[:, _B] + err[:, _B])
    return jnp.all(jnp.where(real, margin > 0, True))


def a_degenerate(params: Params) -> jax.Array:
    """All a_i of one sign: one side of the origin has no neuron (padding neurons left
    out; a real a_i = 0 is on side -, as in `neuron_grams`). A 1-D network; () or (runs,)."""
    check_kind("params", params, Params)
    _check_one_dimensional("a_degenerate", params)
    padding = ~active_neurons(params)
    return jnp.all((params.a > 0) | padding, axis=-1) | jnp.all((params.a <= 0) | padding, axis=-1)


def psi_sum(lam, vecs, psi0, h, eigenvectors: str = "columns") -> jax.Array:
    """S_ψ = Σ_k (h / |1 - μ_k|) |(Uᵀψ₀)_k| ‖u_k‖_∞, μ_k = 1 - h λ_k, for the eigenpairs
    (λ (4,), U (4, 4)) in any order. "rows" takes ‖·‖_∞ of row k of U in place of u_k, as
    the reference code did with LAPACK's eigenpairs: ascending λ, so they are sorted first
    (docs/fidelity.md)."""
    if eigenvectors not in ("columns", "rows"):
        raise ValueError(f"eigenvectors: {eigenvectors!r} is not 'columns' or 'rows'")
    if eigenvectors == "rows":
        order = jnp.argsort(lam)
        lam, vecs = lam[order], vecs[:, order]
        vecs_inf = jnp.max(jnp.abs(vecs), axis=1)
    else:
        vecs_inf = jnp.max(jnp.abs(vecs), axis=0)
    mu = 1.0 - h * lam
    return jnp.sum(h / jnp.abs(1.0 - mu) * jnp.abs(_mv(vecs.T, psi0)) * vecs_inf)


def point_at_zero(x, xp=jnp):
    """Whether a run's 1-D training inputs x (m,) or (runs, m) have a point at 0 (within 64
    ulp of its largest |x_j|), where every kink of a zero bias is: the kink rule
    (max |b_i/a_i| ≥ min |x_j|) then holds at once. The theory needs x_j ≠ 0. () or (runs,)."""
    if xp.ndim(x) not in (1, 2):
        raise ValueError(f"x: shape {xp.shape(x)}; 1-D inputs, (m,) or (runs, m)")
    tiny = 64 * xp.finfo(x.dtype).eps * xp.max(xp.abs(x), axis=-1)
    return xp.any(xp.abs(x) <= tiny[..., None], axis=-1)


def x_degenerate(data: WeightedData) -> jax.Array:
    """At most one data point of positive weight on some side of the origin (1-D points).
    () or (runs,)."""
    _check_one_dimensional_data("x_degenerate", data)
    positive = data.weights > 0
    counts = jnp.stack([jnp.sum(positive & (data.x > 0), -1), jnp.sum(positive & (data.x < 0), -1)])
    return jnp.any(counts <= 1, axis=0)


def _per_side_lines(data: WeightedData) -> jax.Array:
    blocks = _side_moment_blocks(data.x, data.weights)
    rhs = (side_masks(data.x) * data.weights) @ jnp.stack([data.x * data.y, data.y], -1)
    return jnp.einsum("sij,sj->si", jnp.linalg.pinv(blocks), rhs).reshape(4)


@_over_data
def linear_regression_minimum(data: WeightedData) -> jax.Array:
    """v_opt: each side's weighted least-squares line, (slope₊, intercept₊, slope₋, intercept₋).

    GD converges here while no kink crosses the data (docs/theory.md, "The bad local minimum").
    """
    return _per_side_lines(data)


@_over_data
def linear_regression_loss(data: WeightedData) -> jax.Array:
    """L_lin = ½ Σ_j p_j (v_opt·(x_j, 1) - y_j)²: the loss of the bad local minimum."""
    r = _side_features(data.x) @ _per_side_lines(data) - data.y
    return 0.5 * jnp.sum(data.weights * r * r)
