"""The elementwise Jacobi eigensolver against LAPACK (numpy) and its defining identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_case

from gdrelu import Params, WeightedData, jacobi, theory

# Backward stability: ‖AU - UΛ‖ and the eigenvalue errors are a few ε‖A‖ for any
# symmetric eigensolver; 50ε leaves room for the 36 rotations' rounding.
RESIDUAL = {jnp.float64: 50 * np.finfo(np.float64).eps, jnp.float32: 50 * np.finfo(np.float32).eps}


def _matrices(rng, count):
    """Random symmetric 4×4 matrices of several kinds: (count·6, 4, 4)."""
    x = rng.normal(size=(count, 4, 4))
    dense = x + np.swapaxes(x, 1, 2)
    q, _ = np.linalg.qr(rng.normal(size=(count, 4, 4)))
    spread = 10.0 ** rng.uniform(-12, 3, size=(count, 4))
    clustered = spread.copy()
    clustered[:, 1] = clustered[:, 0] * (1 + 1e-9)
    repeated = np.repeat(rng.uniform(-1, 1, size=(count, 1)), 4, axis=1)
    repeated[:, 3] += 1.0
    semidefinite = np.abs(spread) * (np.arange(4) > 1)  # rank 2, like K on one-sided data
    kinds = [dense]
    for lam in (spread, clustered, repeated, semidefinite):
        kinds.append((q * lam[:, None, :]) @ np.swapaxes(q, 1, 2))
    kinds.append(np.zeros((count, 4, 4)) + np.diag([3.0, -1.0, 2.0, 0.0]))
    return np.concatenate(kinds)


def _check(a, lam, u, dtype):
    a, lam, u = (np.asarray(v, np.float64) for v in (a, lam, u))
    scale = np.linalg.norm(a, ord=2, axis=(-2, -1))[:, None] + np.finfo(np.float64).tiny
    residual = np.linalg.norm(a @ u - u * lam[:, None, :], axis=-2) / scale
    assert residual.max() < RESIDUAL[dtype]
    gram = np.swapaxes(u, -1, -2) @ u
    assert np.abs(gram - np.eye(4)).max() < RESIDUAL[dtype]
    want = np.linalg.eigvalsh(a)  # LAPACK, ascending
    assert np.all(np.abs(np.sort(lam, -1) - want) <= RESIDUAL[dtype] * scale)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_eigenpairs_match_lapack(dtype):
    a = _matrices(np.random.default_rng(0), 200).astype(dtype)
    lam, u = jax.jit(jacobi.eigh)(a)
    _check(a, lam, u, dtype)


def test_fewer_sweeps_do_not_converge():
    """The test above can fail: two sweeps leave residuals far above rounding."""
    a = _matrices(np.random.default_rng(1), 50)[:50]
    lam, u = jacobi.eigh(a, sweeps=2)
    residual = np.linalg.norm(a @ np.asarray(u) - np.asarray(u) * np.asarray(lam)[:, None, :])
    assert residual > 1e3 * RESIDUAL[jnp.float64]


def test_vmap_equals_batch_axes():
    a = _matrices(np.random.default_rng(2), 20)
    batched = jacobi.eigh(a)
    mapped = jax.vmap(jacobi.eigh)(a)
    for got, want in zip(mapped, batched, strict=True):
        np.testing.assert_array_equal(got, want)


def test_certificate_matrices(trajectories):
    """The matrices the certificate decomposes: M^½ A_ref M^½ of the golden trajectories."""
    matrix = jax.jit(  # one compile per width, not one per eager operation
        jax.vmap(
            lambda data, p: theory._iteration_matrix(
                theory.neuron_grams(p), theory.moment_roots(data)[0], 0.0
            ),
            in_axes=(None, 0),
        )
    )
    mats = []
    for i in range(5):
        case = golden_case(trajectories, i)
        data = WeightedData(case["x"], case["y"], case["xw"])
        steps = trajectories["steps"]
        params = Params(*(np.stack([case[f"{v}{k}"] for k in steps]) for v in "abwc"))
        mats.append(matrix(data, params))
    a = np.concatenate(mats)
    lam, u = jacobi.eigh(a)
    _check(a, lam, u, jnp.float64)


def test_odd_order_is_refused():
    with pytest.raises(ValueError, match="even order"):
        jacobi.eigh(jnp.eye(3))


def test_equal_diagonal_entries_are_rotated():
    """Where a_pp = a_qq the zeroing rotation is by 45° (θ = 0, t = 1), not none: random
    matrices never hit it. Eigenvalues by hand: 2 ± 1 for [[2, 1], [1, 2]] beside 5 and 7,
    and 3 + 3 = 6 and 3 - 1 = 2 (three times) for ones(4) + 2 I, whose diagonal is all equal."""
    a = np.stack([np.diag([2.0, 2.0, 5.0, 7.0]), np.ones((4, 4)) + 2 * np.eye(4)])
    a[0, 0, 1] = a[0, 1, 0] = 1.0
    lam, u = jax.jit(jacobi.eigh)(a)
    np.testing.assert_allclose(np.sort(lam, -1), [[1, 3, 5, 7], [2, 2, 2, 6]], rtol=1e-14)
    _check(a, lam, u, jnp.float64)


def test_dense_matrices_need_more_than_four_sweeps():
    """`SWEEPS` keeps a margin that random dense matrices use: among 5000, four sweeps
    leave some residuals far above rounding (1e5 ε), and the default reaches it."""
    x = np.random.default_rng(1).normal(size=(5000, 4, 4))
    a = x + np.swapaxes(x, 1, 2)
    eigh = jax.jit(jacobi.eigh, static_argnums=1)
    _check(a, *eigh(a, jacobi.SWEEPS), jnp.float64)
    with pytest.raises(AssertionError):
        _check(a, *eigh(a, 4), jnp.float64)
