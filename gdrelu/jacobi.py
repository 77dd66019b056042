"""Eigendecomposition of small symmetric matrices by Jacobi rotations, elementwise.

The certificate (`theory.certificate`) needs every eigenpair of one 4×4 matrix per run and
check. LAPACK's `syevd` takes one small matrix per call (measured on 2 CPU cores, float64:
1.4-1.9 µs per 4×4 in batches of 512-2048, most of it call overhead), and jaxlib's batched
CPU eigh deadlocked its thread pool inside the sharded chunk in batches over 512. Here the
matrix is held as its k(k+1)/2 + k² entries, each a scalar per run, and every rotation is
elementwise arithmetic on those scalars, so a batch is a few vector loops over the runs on
any device (0.55-0.7 µs per 4×4 in the same batches).

Each sweep visits every off-diagonal pair (p, q) once with the rotation that zeroes it
(Golub & Van Loan, Matrix Computations, §8.4-8.5), in the round-robin order of the parallel
Jacobi method; convergence is quadratic. On random and ill-conditioned 4×4 matrices four
sweeps leave residuals near 1e-10 and five reach rounding (float64); `SWEEPS` = 6 keeps a
margin (tests/test_jacobi.py checks residuals, orthogonality and eigenvalues).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SWEEPS = 6


def _rotate(upper, vectors, p, q, k):
    """Zero entry (p, q) of the symmetric matrix (`upper`: {(i, j): a_ij, i ≤ j}) by one
    rotation A ← JᵀAJ, and accumulate V ← VJ (`vectors`: {(i, j): v_ij})."""
    a_pp, a_qq, a_pq = upper[p, p], upper[q, q], upper[p, q]
    nonzero = a_pq != 0
    theta = (a_qq - a_pp) / (2.0 * jnp.where(nonzero, a_pq, 1.0))
    t = jnp.sign(theta) / (jnp.abs(theta) + jnp.sqrt(1.0 + theta * theta))
    t = jnp.where(nonzero & (theta != 0), t, jnp.where(nonzero, 1.0, 0.0))
    c = 1.0 / jnp.sqrt(1.0 + t * t)
    s = t * c
    upper = dict(upper)
    upper[p, p] = a_pp - t * a_pq
    upper[q, q] = a_qq + t * a_pq
    upper[p, q] = jnp.zeros_like(a_pq)
    for r in range(k):
        if r in (p, q):
            continue
        rp, rq = (min(r, p), max(r, p)), (min(r, q), max(r, q))
        a_rp, a_rq = upper[rp], upper[rq]
        upper[rp] = c * a_rp - s * a_rq
        upper[rq] = s * a_rp + c * a_rq
    vectors = dict(vectors)
    for r in range(k):
        v_rp, v_rq = vectors[r, p], vectors[r, q]
        vectors[r, p] = c * v_rp - s * v_rq
        vectors[r, q] = s * v_rp + c * v_rq
    return upper, vectors


def _relabel(upper, vectors, order, k):
    """The same eigenproblem with index i renamed to order[i]: A ← PᵀAP, V ← VP."""
    upper = {
        (i, j): upper[min(order[i], order[j]), max(order[i], order[j])]
        for i in range(k)
        for j in range(i, k)
    }
    vectors = {(r, j): vectors[r, order[j]] for r in range(k) for j in range(k)}
    return upper, vectors


def eigh(matrix: jax.Array, sweeps: int = SWEEPS) -> tuple[jax.Array, jax.Array]:
    """(λ (..., k), U (..., k, k)) with matrix = U diag(λ) Uᵀ, the eigenvectors the columns
    of U, in no particular order (sort them if order matters). `matrix` (..., k, k) is
    symmetric, k even; only its upper triangle is read.

    A sweep is k - 1 rounds of k/2 rotations on disjoint index pairs (0, 1), (2, 3), ...;
    between rounds the indices 1 … k-1 move one place round a circle (the round-robin
    tournament), so each sweep meets every pair once and ends with every index in its
    place: the relabelling is a renaming of traced values, the loop body one sweep.
    """
    k = matrix.shape[-1]
    if k % 2:
        raise ValueError(f"jacobi.eigh takes an even order, not {k}")
    order = (0, *range(2, k), 1)  # position i takes index order[i]
    upper = {(i, j): matrix[..., i, j] for i in range(k) for j in range(i, k)}
    one, zero = jnp.ones_like(matrix[..., 0, 0]), jnp.zeros_like(matrix[..., 0, 0])
    vectors = {(i, j): one if i == j else zero for i in range(k) for j in range(k)}

    def sweep(_, carry):
        upper, vectors = carry
        for _round in range(k - 1):  # then every index is back in its place
            for p in range(0, k, 2):
                upper, vectors = _rotate(upper, vectors, p, p + 1, k)
            upper, vectors = _relabel(upper, vectors, order, k)  # a renaming: no copies
        return upper, vectors

    upper, vectors = jax.lax.fori_loop(0, sweeps, sweep, (upper, vectors))
    lam = jnp.stack([upper[i, i] for i in range(k)], -1)
    rows = [jnp.stack([vectors[i, j] for j in range(k)], -1) for i in range(k)]
    return lam, jnp.stack(rows, -2)
