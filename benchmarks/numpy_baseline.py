"""A plain vectorized NumPy (float64) version of the paper's experiments, as a baseline.

In the style of the paper's reference code: a, b, w of shape (runs, n), c of shape (runs,),
data x, y, weights p of shape (runs, 6). Every step does the forward pass over the data by
broadcasting to (runs, 6, n), the explicit gradients of L = ½ Σ_j p_j r_j², the update, and
the running max of |b_i/a_i|. Every `check_every` steps the runs are checked (the status
codes and their order are those of `gdrelu.engine.Status`: diverged, crossed, degenerate,
provably stuck, with the certificate ported from `gdrelu.theory.provably_stuck` and batched
over runs with `np.linalg.eigh`), and finished runs are dropped by boolean indexing.

`train_stochastic` does SGD, heavy-ball momentum and Adam the same way, with the paper's
minibatches of B = 16 multinomial draws per step.

ReLU only (α = 0). `python benchmarks/numpy_baseline.py` runs `self_check`.
"""

from __future__ import annotations

import numpy as np

CROSSED, STUCK, A_DEGENERATE, X_DEGENERATE, DIVERGED, UNFINISHED = 1, 2, 3, 4, 6, 7
_A, _B, _W = 0, 1, 2
_Q = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def gd_step(a, b, w, c, x, y, p, lr):
    """One GD step of every run; lr is (runs,). Returns the new (a, b, w, c)."""
    z = x[:, :, None] * a[:, None, :] + b[:, None, :]  # (runs, 6, n)
    on = (z >= 0).astype(z.dtype)  # σ'(z), with σ'(0) = 1 as in gdrelu.model
    act = z * on
    f = c[:, None] + (act @ w[:, :, None])[..., 0]
    pr = p * (f - y)  # p_j r_j
    s0 = (pr[:, None, :] @ on)[:, 0]  # Σ_j p_j r_j σ'(z_ji)
    s1 = ((pr * x)[:, None, :] @ on)[:, 0]  # Σ_j p_j r_j σ'(z_ji) x_j
    grad_w = (pr[:, None, :] @ act)[:, 0]  # Σ_j p_j r_j σ(z_ji)
    h = lr[:, None]
    return a - h * w * s1, b - h * w * s0, w - h * grad_w, c - lr * pr.sum(1)


def _side_masks(x):
    """(runs, 2, 6) masks of the data on each side of the origin, order (+, -)."""
    return np.stack([x > 0, x < 0], 1).astype(x.dtype)


def _sqrt_and_pinv_sqrt(m):
    """M^{1/2} and (M^{1/2})⁺ of a batch of symmetric PSD matrices (runs, k, k)."""
    lam, vecs = np.linalg.eigh(m)
    root = np.sqrt(np.clip(lam, 0.0, None))
    cutoff = m.shape[-1] * np.finfo(m.dtype).eps * root.max(-1, keepdims=True)
    inv_root = np.where(root > cutoff, 1.0 / np.where(root > cutoff, root, 1.0), 0.0)
    vt = np.swapaxes(vecs, -1, -2)
    return (vecs * root[:, None, :]) @ vt, (vecs * inv_root[:, None, :]) @ vt


def _block_diag(top, bottom):
    """diag(top, bottom) for batches of 2×2 blocks: (runs, 4, 4)."""
    out = np.zeros((top.shape[0], 4, 4), top.dtype)
    out[:, :2, :2], out[:, 2:, 2:] = top, bottom
    return out


def _iteration_matrix(a, b, w, x, p):
    """K = M^{1/2} A_ref M^{1/2}, M^{1/2}, (M^{1/2})⁺ and the neuron Grams Σ_s (runs, 2, 3, 3)."""
    pw = _side_masks(x) * p[:, None, :]
    m_xx = np.einsum("rsj,rj->rs", pw, x * x)
    m_x = np.einsum("rsj,rj->rs", pw, x)
    m_1 = pw.sum(-1)
    blocks = np.stack([np.stack([m_xx, m_x], -1), np.stack([m_x, m_1], -1)], -1)
    root, pinv_root = _sqrt_and_pinv_sqrt(_block_diag(blocks[:, 0], blocks[:, 1]))

    theta = np.stack([a, b, w], -1)  # (runs, n, 3)
    sides = np.stack([a > 0, a <= 0], 1).astype(a.dtype)  # (runs, 2, n)
    grams = np.einsum("rsn,rni,rnj->rsij", sides, theta, theta)
    g = grams[:, :, :2, :2] + grams[:, :, 2, 2][:, :, None, None] * np.eye(2)
    a_ref = _block_diag(g[:, 0], g[:, 1])
    a_ref[:, 1::2, 1::2] += 1.0  # C: the shared intercept c couples the two b coordinates
    return root @ a_ref @ root, root, pinv_root, grams


def paper_step_size(a, b, w, x, p):
    """h = 1 / λ_max(M^{1/2} A_ref M^{1/2}) per run, (runs,)."""
    k, *_ = _iteration_matrix(a, b, w, x, p)
    return 1.0 / np.linalg.eigvalsh(k)[:, -1]


def provably_stuck(a, b, w, c, x, y, p, lr):
    """The sufficient "never crosses" certificate of PAPER.md, batched: bool (runs,).

    A port of `gdrelu.theory.provably_stuck` (ReLU, eigenvector columns).
    """
    k, root, pinv_root, grams = _iteration_matrix(a, b, w, x, p)
    plus, minus = np.moveaxis(_side_masks(x), 1, 0)
    feats = np.stack([plus * x, plus, minus * x, minus], -1)  # (runs, 6, 4)
    u_lin = np.stack(
        [grams[:, 0, _W, _A], grams[:, 0, _W, _B], grams[:, 1, _W, _A], grams[:, 1, _W, _B]], -1
    )
    residual = y - (c[:, None] + np.einsum("rjk,rk->rj", feats, u_lin))
    u_hat = np.einsum("rjk,rj->rk", feats, p * residual)
    psi0 = np.einsum("rkl,rl->rk", pinv_root, u_hat)

    lam, vecs = np.linalg.eigh(k)
    h = lr[:, None]
    mu = 1.0 - h * lam
    rho = np.abs(mu).max(-1)
    big_s = 2.0 * lr / (1.0 - rho)
    u_inf = np.abs(vecs).max(-2)  # ‖u_k‖_∞ of the eigenvector columns
    coeffs = np.abs(np.einsum("rlk,rl->rk", vecs, psi0))  # |(Uᵀψ₀)_k|
    s_psi = np.sum(h / np.abs(1.0 - mu) * coeffs * u_inf, -1)

    root_norm = np.abs(root).sum(-1).max(-1)
    kappa = 2.0 * root_norm * s_psi  # ‖B‖_∞ = 1 for ReLU
    kap = kappa[:, None, None, None]

    abs_grams = np.abs(grams)
    gram_norms = abs_grams.sum(-1).max(-1)  # (runs, 2)
    d = kap * (_Q @ abs_grams + abs_grams @ _Q) + (
        8.0 * kap**2 * np.exp(4.0 * kap) * gram_norms[:, :, None, None]
    )
    g_w = d[:, :, _W, _W].max(-1)
    g_ab = (d[:, :, _A, _A] + d[:, :, _A, _B] + d[:, :, _B, _B]).max(-1)
    g_wab = (
        kappa[:, None] * (abs_grams[:, :, _W, _A] + abs_grams[:, :, _W, _B])
        + d[:, :, _W, _A]
        + d[:, :, _W, _B]
    ).max(-1)
    delta = big_s * root_norm**2 * (g_w + g_ab + g_wab)

    theta = np.abs(np.stack([a, b, w], -1))  # (runs, n, 3)
    kap = kappa[:, None, None]
    err = kap * theta @ _Q.T + 2.0 * kap**2 * np.exp(2.0 * kap) * theta.max(-1, keepdims=True)
    x_min = np.abs(x).min(-1)[:, None]
    kinks_hold = np.all((theta[..., _A] - err[..., _A]) * x_min > theta[..., _B] + err[..., _B], -1)
    with np.errstate(invalid="ignore"):
        return (rho < 1.0) & (kappa < 0.5) & (delta <= 0.5) & kinks_hold


def check(a, b, w, c, x, y, p, lr, max_kink):
    """Status code of every run after a chunk (0: still running), in the engine's order."""
    finite = np.isfinite(a).all(-1) & np.isfinite(b).all(-1) & np.isfinite(w).all(-1)
    finite &= np.isfinite(c)
    a_degen = (a > 0).all(-1) | (a < 0).all(-1)
    positive = p > 0
    x_degen = ((positive & (x > 0)).sum(-1) <= 1) | ((positive & (x < 0)).sum(-1) <= 1)
    stuck = np.zeros_like(finite)
    if finite.any():  # the certificate's eigh needs finite matrices
        f = finite
        stuck[f] = provably_stuck(a[f], b[f], w[f], c[f], x[f], y[f], p[f], lr[f])
    conditions = [~finite, max_kink >= np.abs(x).min(-1), a_degen, x_degen, stuck]
    codes = [DIVERGED, CROSSED, A_DEGENERATE, X_DEGENERATE, STUCK]
    return np.select(conditions, codes, 0).astype(np.int8)


def simulate_numpy(a, b, w, c, x, y, p, lr, check_every=1000, max_checks=1000, early_exit=True):
    """Train every run with GD, checking every `check_every` steps; returns (status, stop_step).

    Status codes: 1 crossed, 2 stuck, 3/4 a-/x-degenerate, 6 diverged, 7 unfinished.
    With `early_exit=False` finished runs keep training (and are checked again) until
    `max_checks` checks are done, so the work is fixed; each run keeps its first status.
    """
    a, b, w, c, x, y, p = (np.array(v, np.float64) for v in (a, b, w, c, x, y, p))
    runs = c.shape[0]
    lr = np.broadcast_to(np.asarray(lr, np.float64), (runs,)).copy()
    status = np.zeros(runs, np.int8)
    stop_step = np.zeros(runs, np.int64)
    ids = np.arange(runs)
    with np.errstate(all="ignore"):
        max_kink = np.abs(b / a).max(-1)
        for k in range(1, max_checks + 1):
            for _ in range(check_every):
                a, b, w, c = gd_step(a, b, w, c, x, y, p, lr)
                max_kink = np.maximum(max_kink, np.abs(b / a).max(-1))
            code = check(a, b, w, c, x, y, p, lr, max_kink)
            if k == max_checks:
                code[code == 0] = UNFINISHED
            new = (code != 0) & (status[ids] == 0)
            status[ids[new]] = code[new]
            stop_step[ids[new]] = k * check_every
            if early_exit:
                keep = code == 0
                ids, a, b, w, c, x, y, p, lr, max_kink = (
                    v[keep] for v in (ids, a, b, w, c, x, y, p, lr, max_kink)
                )
                if not ids.size:
                    break
    return status, stop_step


def _gradients(a, b, w, c, x, y, p):
    """∇L of every run for weights p (runs, 6): (grad_a, grad_b, grad_w, grad_c)."""
    z = x[:, :, None] * a[:, None, :] + b[:, None, :]
    on = (z >= 0).astype(z.dtype)
    act = z * on
    pr = p * (c[:, None] + (act @ w[:, :, None])[..., 0] - y)
    s0 = (pr[:, None, :] @ on)[:, 0]
    s1 = ((pr * x)[:, None, :] @ on)[:, 0]
    return w * s1, w * s0, (pr[:, None, :] @ act)[:, 0], pr.sum(1)


def train_stochastic(
    a, b, w, c, x, y, p, lr, *, optimizer, steps, batch_size=16, momentum=0.9, seed=0,
    stop_crossed_every=None,
):  # fmt: skip
    """`steps` steps of the paper's other optimizers, in its code's style, on every run:
    each step draws B = `batch_size` samples per run (rng.multinomial) from its weights and
    uses counts/B as the loss weights. "sgd": θ ← θ - h g; "momentum": heavy ball
    v ← g + 0.9 v, θ ← θ - h v (full batch, as gdrelu's "momentum"); "adam": β = (0.9,
    0.999), ε = 1e-8, bias-corrected, per parameter a, b, w, c. With `stop_crossed_every`
    = k, every k steps the runs whose kinks crossed (max |b_i/a_i| ≥ min |x_j|) stop and
    leave the arrays, as the paper's protocols stop them. Returns ((a, b, w, c) of the runs
    still training, run-steps trained)."""
    rng = np.random.default_rng(seed)
    theta = [np.array(v, np.float64) for v in (a, b, w, c)]
    h = np.broadcast_to(np.asarray(lr, np.float64), theta[3].shape)
    scale = [h[:, None], h[:, None], h[:, None], h]
    first = [np.zeros_like(t) for t in theta]
    second = [np.zeros_like(t) for t in theta]
    run_steps = 0
    with np.errstate(all="ignore"):
        for t in range(1, steps + 1):
            if stop_crossed_every and t > 1 and (t - 1) % stop_crossed_every == 0:
                keep = np.max(np.abs(theta[1] / theta[0]), axis=1) < np.min(np.abs(x), axis=1)
                theta, first, second = ([v[keep] for v in vs] for vs in (theta, first, second))
                x, y, p, scale = x[keep], y[keep], p[keep], [v[keep] for v in scale]
            run_steps += len(x)
            q = p
            if optimizer != "momentum":
                q = rng.multinomial(batch_size, p) / batch_size
            grads = _gradients(*theta, x, y, q)
            if optimizer == "sgd":
                theta = [v - s * g for v, s, g in zip(theta, scale, grads, strict=True)]
            elif optimizer == "momentum":
                first = [g + momentum * m for g, m in zip(grads, first, strict=True)]
                theta = [v - s * m for v, s, m in zip(theta, scale, first, strict=True)]
            else:
                first = [0.9 * m + 0.1 * g for m, g in zip(first, grads, strict=True)]
                second = [0.999 * v + 0.001 * g * g for v, g in zip(second, grads, strict=True)]
                c1, c2 = 1 - 0.9**t, 1 - 0.999**t
                theta = [
                    v - s * (m / c1) / (np.sqrt(u / c2) + 1e-8)
                    for v, s, m, u in zip(theta, scale, first, second, strict=True)
                ]
    return tuple(theta), run_steps


def self_check(width=16, runs=64, checks=6, check_every=1000, seed=0):
    """Compare `provably_stuck` and `paper_step_size` with gdrelu.theory on GD states.

    Trains `runs` random He-initialized networks with this module's GD and compares the
    certificate after each of `checks` chunks. Returns the number of (run, check) pairs
    compared, how many are certified, and the disagreements; raises on a mismatch.
    """
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from gdrelu import theory
    from gdrelu.data import SIX_POINTS_X, SIX_POINTS_Y, WeightedData
    from gdrelu.model import Params

    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, np.sqrt(2.0), (runs, width))
    w = rng.normal(0.0, np.sqrt(2.0 / width), (runs, width))
    b, c = np.zeros_like(a), np.zeros(runs)
    x = np.tile(SIX_POINTS_X, (runs, 1))
    y = np.tile(SIX_POINTS_Y, (runs, 1))
    p = rng.multinomial(width**2, np.full(6, 1 / 6), runs) / width**2
    data = WeightedData(*(jnp.asarray(v) for v in (x, y, p)))

    lr = paper_step_size(a, b, w, x, p)
    ref_lr = np.asarray(theory.paper_step_size(Params(*map(jnp.asarray, (a, b, w, c))), data))
    np.testing.assert_allclose(lr, ref_lr, rtol=1e-10)

    compared = certified = 0
    for _ in range(checks):
        for _ in range(check_every):
            a, b, w, c = gd_step(a, b, w, c, x, y, p, lr)
        mine = provably_stuck(a, b, w, c, x, y, p, lr)
        params = Params(*(jnp.asarray(v) for v in (a, b, w, c)))
        ref = np.asarray(theory.provably_stuck(params, data, jnp.asarray(lr)))
        bad = np.flatnonzero(mine != ref)
        if bad.size:
            raise AssertionError(f"provably_stuck disagrees with gdrelu.theory on runs {bad}")
        compared += runs
        certified += int(mine.sum())
    return {"compared": compared, "certified": certified, "disagreements": 0}


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        description="Check the NumPy certificate against gdrelu.theory on random runs "
        "(self_check); the baseline's functions are imported by the benchmarks."
    ).parse_args()
    print(self_check())
