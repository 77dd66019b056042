"""Training data as weighted empirical distributions (docs/theory.md, "Data"), and the
batched draws of every run's data from its keys."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu.atomic import read_npz
from gdrelu.compiled import jit
from gdrelu.numbers import check_key, is_integer, is_real

SIX_POINTS_X = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)
SIX_POINTS_Y = (-1.0, 2.0, -1.0, 1.0, -2.0, 1.0)


class WeightedData(NamedTuple):
    """An empirical distribution Σ_j p_j δ_(x_j, y_j).

    x: (m,) or (m, d); y: (m,); weights p: (m,), ≥ 0, summing to 1 for a distribution.
    Batched: a leading runs axis on every field. Weights are not normalized: c·p trains as
    p with the step size times c (the loss is linear in p), as counts in place of
    frequencies would.
    """

    x: jax.Array
    y: jax.Array
    weights: jax.Array


def check_points(name: str, points: WeightedData) -> None:
    """Refuse points whose x, y and weights disagree: y and weights of shape ([runs,] m),
    x of y's shape or, d-dim, ([runs,] m, d). `name` is the argument's."""
    x, y, weights = (jnp.shape(v) for v in points)
    if x[: len(y)] != y or weights != y or len(x) > len(y) + 1:
        raise ValueError(
            f"{name}: x of shape {x}, y of {y}, weights of {weights}; each run needs one x, y "
            "and weight per point"
        )


def six_points(delta: float | jax.Array = 0.0, dtype=None) -> tuple[jax.Array, jax.Array]:
    """The paper's 1-D data: x = (-3, -2, -1, 1, 2, 3), y = (-1, 2, -1, 1, -2, 1) + Δ, one
    number Δ (vmap for several)."""
    if not (is_real(delta) or isinstance(delta, jax.Array | np.ndarray)) or np.ndim(delta) != 0:
        raise ValueError(f"delta: one number Δ (jax.vmap over several), not {delta!r}")
    if not isinstance(delta, jax.core.Tracer) and not np.isfinite(delta):
        raise ValueError(f"delta: {delta!r} is not finite")
    x = jnp.asarray(SIX_POINTS_X, dtype=dtype)
    y = jnp.asarray(SIX_POINTS_Y, dtype=dtype)
    return x, y + jnp.asarray(delta).astype(y.dtype)  # in `dtype`, whatever Δ's


def multinomial_weights(
    key: jax.Array, num_points: int, num_samples: int | jax.Array, dtype=None
) -> jax.Array:
    """p_j = count_j / N for N draws from the uniform distribution on `num_points` points.

    Returns (num_points,) in `dtype`. `num_samples` may be traced (it is data, not a
    shape). The counts are drawn in `count_dtype()` whatever `dtype` (float64 when JAX has
    it), so that they stay exact integers up to N = 2^53, as the integer counts of the
    paper's float32 code were; only p_j is rounded to `dtype`.
    """
    if not isinstance(num_samples, jax.core.Tracer):  # a traced N is the caller's to check
        value = np.asarray(num_samples)
        whole = value.ndim == 0 and value.dtype.kind in "iuf" and float(value).is_integer()
        if not (whole and value >= 1):
            raise ValueError(f"num_samples: {num_samples!r} is not a positive integer")
        exact = 2 ** (np.finfo(count_dtype()).nmant + 1)  # counts stay whole up to here
        if value > exact:
            raise ValueError(
                f"num_samples: {num_samples!r} is above {exact}, beyond which the counts, "
                f"drawn in {np.dtype(count_dtype())}, are no longer whole numbers"
            )
    if not (is_integer(num_points) and num_points >= 1):
        raise ValueError(f"num_points: {num_points!r} is not a positive integer")
    dtype = dtype or jnp.result_type(float)
    counting = count_dtype()
    probs = jnp.full((num_points,), 1.0 / num_points, dtype=counting)
    n = jnp.asarray(num_samples, dtype=counting)
    counts = jax.random.multinomial(key, n, probs, dtype=counting)
    return (counts / n).astype(dtype)


def count_dtype():
    """The dtype multinomial counts are drawn in: float64 when x64 is on, else float32
    (exact integers up to 2^53 or 2^24 draws)."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def paper_data(
    key: jax.Array, delta: float | jax.Array, num_samples: int | jax.Array, dtype=None
) -> WeightedData:
    """One run's training distribution: the six points with multinomial weights (N samples)."""
    check_key("key", key)
    x, y = six_points(delta, dtype)
    return WeightedData(x, y, multinomial_weights(key, x.shape[0], num_samples, y.dtype))


def side_masks(x: jax.Array) -> jax.Array:
    """(2, m) masks of the data on each side of the origin, order (+, -)."""
    return jnp.stack([x > 0, x < 0]).astype(x.dtype)


# ---------------------------------------------------------------------------------------
# Multi-dimensional data (docs/theory.md, "Multi-dimensional experiments"). Finite supports
# (star and its relatives) take per-run multinomial weights like the six points; the
# continuous distributions (P_ex, P_d, rbf) give i.i.d. samples with equal weights.
# ---------------------------------------------------------------------------------------

RAY_TARGETS = (1.0, -2.0, 1.0)  # y at radii 1-δ, 1, 1+δ on every ray


def ray_points(directions: jax.Array, delta: float = 0.1, dtype=None):
    """Three points per ray at radii (1-δ, 1, 1+δ) along unit `directions` (k, d), with
    targets (1, -2, 1): x (3k, d), y (3k,), rays in order."""
    directions = jnp.asarray(directions, dtype)
    radii = jnp.asarray([1.0 - delta, 1.0, 1.0 + delta], directions.dtype)
    x = (directions[:, None, :] * radii[None, :, None]).reshape(-1, directions.shape[1])
    y = jnp.tile(jnp.asarray(RAY_TARGETS, directions.dtype), directions.shape[0])
    return x, y


def star_points(rays: int = 11, delta: float = 0.1, dtype=None):
    """The star (2-D): k rays at angles 2πi/k (the paper: k = 11, δ = 0.1)."""
    angles = 2.0 * jnp.pi * jnp.arange(rays) / rays
    return ray_points(jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1), delta, dtype)


def cross_points(delta: float = 0.1, dtype=None):
    """The cross: the star's construction on the four half-axes of the plane (k = 4)."""
    return star_points(4, delta, dtype)


def double_cross_points(delta: float = 0.1, dtype=None):
    """The double cross: the four half-axes and the four diagonals (k = 8)."""
    return star_points(8, delta, dtype)


def multi_axis_points(dim: int, delta: float = 0.1, dtype=None):
    """Rays along the 2d half-axes ±e_i of R^d."""
    eye = jnp.eye(dim)
    return ray_points(jnp.concatenate([eye, -eye]), delta, dtype)


FINITE = {
    "six-points": lambda dim, dtype: six_points(0.0, dtype),
    "star": lambda dim, dtype: star_points(dtype=dtype),
    "cross": lambda dim, dtype: cross_points(dtype=dtype),
    "double-cross": lambda dim, dtype: double_cross_points(dtype=dtype),
    "multi-axis": lambda dim, dtype: multi_axis_points(dim, dtype=dtype),
}


def sample_example(key: jax.Array, count: int, dim: int = 1, dtype=None):
    """P_ex (1-D, docs/theory.md, "Section 10"): X = ±Beta(5, 2)/√(105/196) (E X² = 1, signs equal
    odds), y = (cos(7π(X - X/√(1+X²))) + 0.2X² + 0.074)/0.727 + N(0, (0.1/0.727)²)."""
    del dim
    dtype = dtype or jnp.result_type(float)
    key_b, key_s, key_n = jax.random.split(key, 3)
    magnitude = jax.random.beta(key_b, 5.0, 2.0, (count,), dtype) / jnp.sqrt(105.0 / 196.0)
    x = jnp.where(jax.random.bernoulli(key_s, 0.5, (count,)), magnitude, -magnitude)
    clean = (jnp.cos(7.0 * jnp.pi * (x - x / jnp.sqrt(1.0 + x * x))) + 0.2 * x * x + 0.074) / 0.727
    return x, clean + (0.1 / 0.727) * jax.random.normal(key_n, (count,), dtype)


def sample_radial(key: jax.Array, count: int, dim: int, dtype=None):
    """P_d: X = r u, u uniform on the sphere S^{d-1}, r = √3 U, U ~ U[0, 1]; y = cos(2πU)."""
    dtype = dtype or jnp.result_type(float)
    key_u, key_r = jax.random.split(key)
    direction = jax.random.normal(key_u, (count, dim), dtype)
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    u = jax.random.uniform(key_r, (count,), dtype)
    x = jnp.sqrt(3.0) * u[:, None] * direction
    return (x[:, 0] if dim == 1 else x), jnp.cos(2.0 * jnp.pi * u)


def sample_rbf(key: jax.Array, count: int, dim: int, dtype=None):
    """rbf (gdrelu's definition; the paper names no formula): X ~ N(0, I_d) and the radial
    bump y = exp(-‖X‖²/2), noise-free."""
    dtype = dtype or jnp.result_type(float)
    x = jax.random.normal(key, (count, dim), dtype)
    y = jnp.exp(-0.5 * jnp.sum(x * x, axis=1))
    return (x[:, 0] if dim == 1 else x), y


CONTINUOUS = {"p-ex": sample_example, "radial": sample_radial, "rbf": sample_rbf}
DATASETS = tuple(FINITE) + tuple(CONTINUOUS)


class Standardization(NamedTuple):
    """Affine maps x ↦ (x - x_mean)/x_scale, y ↦ (y - y_mean)/y_scale from training data."""

    x_mean: jax.Array
    x_scale: jax.Array
    y_mean: jax.Array
    y_scale: jax.Array

    def apply(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (x - self.x_mean) / self.x_scale, (y - self.y_mean) / self.y_scale


def training_statistics(train: WeightedData) -> Standardization:
    """Weighted mean and standard deviation of the training inputs (per coordinate) and
    targets; a constant coordinate (variance at round-off level) keeps scale 1."""
    p = train.weights / jnp.sum(train.weights)

    def moments(v):
        mean = jnp.tensordot(p, v, axes=(0, 0))
        var = jnp.tensordot(p, (v - mean) ** 2, axes=(0, 0))
        round_off = (64 * jnp.finfo(v.dtype).eps * jnp.maximum(jnp.abs(mean), 1.0)) ** 2
        return mean, jnp.where(var > round_off, jnp.sqrt(var), 1.0)

    return Standardization(*moments(train.x), *moments(train.y))


def split_sizes(count: int, fractions) -> tuple[int, int, int]:
    """(train, validation, test) sizes of `count` points split by three `fractions`."""
    train, valid = round(fractions[0] * count), round(fractions[1] * count)
    return train, valid, count - train - valid


def split_indices(key: jax.Array, count: int, fractions=(0.6, 0.2, 0.2)) -> tuple:
    """A random partition of range(count) into train/validation/test by `fractions`."""
    order = jax.random.permutation(key, count)
    train, valid, _ = split_sizes(count, fractions)
    return tuple(jnp.split(order, [train, train + valid]))


def load_user_data(path) -> tuple[jax.Array, jax.Array]:
    """x (m,) or (m, d) and y (m,) from an NPZ file (arrays `x`, `y`) or a CSV file (header
    row; the last column is y, the others x). Rejects NaN or Inf naming the file."""
    import warnings
    import zipfile

    import numpy as np

    path = str(path)
    kind = "an NPZ archive of arrays x and y" if path.endswith(".npz") else "CSV with a header"
    try:
        if not path.endswith(".npz") and _numeric_header(path):
            warnings.warn(
                f"{path}: its first row is numbers, read as the header (column names), not "
                "as a point",
                stacklevel=2,
            )
        with warnings.catch_warnings():  # an empty file: numpy warns, then we refuse it
            warnings.simplefilter("ignore")
            if path.endswith(".npz"):
                x, y = _npz_arrays(path)
            else:
                table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
                x, y = table[:, :-1], table[:, -1]
    except OSError as err:
        raise ValueError(f"data: cannot read {path}: {err.strerror or err}") from None
    except (ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
        if str(err).startswith("data: "):  # ours, already naming the file
            raise
        raise ValueError(f"data: {path} is not {kind} of real numbers ({err})") from None
    return check_user_data(x, y, path)


def _npz_arrays(path: str):
    with read_npz(path, f"data: {path} is one array, not an NPZ archive of x and y") as archive:
        if "x" not in archive or "y" not in archive:
            raise ValueError(f"data: {path} needs arrays 'x' and 'y'")
        x, y = archive["x"], archive["y"]
        if not all(np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)
                   for v in (x, y)):  # fmt: skip
            raise ValueError(
                f"data: {path}: x and y must be real numbers, not {x.dtype}, {y.dtype}"
            )
        return np.asarray(x, float), np.asarray(y, float)


def _numeric_header(path: str) -> bool:
    """Whether a CSV's first row, its header, is numbers: a file without a header, whose
    first point is read as column names (or pandas' header 0,1,... for unnamed columns)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    try:
        [float(cell) for cell in first.split(",")]
    except ValueError:
        return False
    return bool(first)


def check_user_data(x, y, name="data"):
    """User arrays as x (m,) or (m, d ≥ 2), y (m,); ValueError naming what is wrong. One
    input column, x (m, 1), is 1-D data, x (m,): the paper's setting."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    shapes_fit = x.ndim == 1 or (x.ndim == 2 and x.shape[1] >= 1)
    if y.ndim != 1 or not shapes_fit or x.shape[0] != y.shape[0] or y.size < 2:
        raise ValueError(f"data: {name}: need x (m,) or (m, d ≥ 1) and y (m,), m ≥ 2")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"data: {name} holds NaN or Inf values")
    return x, y


# ---------------------------------------------------------------------------------------
# Batched draws: each run's training data and validation from its keys (runs,).
# ---------------------------------------------------------------------------------------


@functools.partial(jit, static_argnames=("validation",))
def draw_finite(data_keys, valid_keys, x, y, delta, num_samples, *, validation=True):
    """A finite support x (m,) or (m, d), y (m,) with per-run multinomial training and
    validation weights (N = `num_samples` draws each), Δ added: (WeightedData, weights
    (runs, m)), or (WeightedData, None) without `validation` (runs that never stop early
    read none: the draws' rejection-sampled binomials cost time to compile and to run).
    One compiled program per (support shape, dtype, run count): N, Δ are data."""

    def one(key_data, key_valid):
        weights = multinomial_weights(key_data, x.shape[0], num_samples, delta.dtype)
        if not validation:
            return WeightedData(x, y + delta, weights), None
        valid = multinomial_weights(key_valid, x.shape[0], num_samples, delta.dtype)
        return WeightedData(x, y + delta, weights), valid

    return jax.vmap(one)(data_keys, valid_keys)


@functools.partial(jit, static_argnames=("count", "heldout", "dataset", "dim"))
def draw_continuous(data_keys, valid_keys, delta, *, count, heldout, dataset, dim):
    """`count` i.i.d. training points of `CONTINUOUS[dataset]` per run and `heldout`
    validation and test points each, equal weights, all standardized with the training
    statistics: (train, (validation, test)), a leading runs axis on each."""

    def sample(key, size):
        x, y = CONTINUOUS[dataset](key, size, dim, delta.dtype)
        return WeightedData(x, y, jnp.full((size,), 1.0 / size, delta.dtype))

    def one(key_data, key_valid):
        key_val, key_test = jax.random.split(key_valid)
        held = (sample(key_val, heldout), sample(key_test, heldout))
        return standardized(sample(key_data, count), *held, delta)

    return jax.vmap(one)(data_keys, valid_keys)


@functools.partial(jit, static_argnames=("fractions",))
def draw_split(keys, x, y, delta, *, fractions):
    """Per run: a random split of the points x, y into train/validation/test by
    `fractions` (`split_indices`), equal weights, all standardized with the training
    statistics: (train, (validation, test)), a leading runs axis on each."""

    def one(key):
        parts = [
            WeightedData(x[i], y[i], jnp.full(i.shape, 1.0 / i.shape[0], y.dtype))
            for i in split_indices(key, x.shape[0], fractions)
        ]
        return standardized(*parts, delta)

    return jax.vmap(one)(keys)


def standardized(train: WeightedData, validation, test, delta):
    """(train, (validation, test)) standardized with the training statistics, Δ added to
    every target."""
    statistics = training_statistics(train)

    def one(points):
        x, y = statistics.apply(points.x, points.y)
        return WeightedData(x, y + delta, points.weights)

    return one(train), (one(validation), one(test))
