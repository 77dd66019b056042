"""The paper's theory (docs/theory.md) against the golden vectors and direct implementations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import DATA, golden_case

from gdrelu import Params, WeightedData, theory
from gdrelu.model import Scaling

GD_CASES = range(5)
ALL_CASES = range(7)
RTOL_STEP = 1e-10  # the tolerance for `lr` and `lr_at{k}`
# Jitted once: called eagerly, the Jacobi sweeps' scan compiles again at every call
_provably_stuck = jax.jit(theory.provably_stuck)


def _params(case, k):
    return Params(case[f"a{k}"], case[f"b{k}"], case[f"w{k}"], case[f"c{k}"])


def _data(case):
    return WeightedData(case["x"], case["y"], case["xw"])


def _direct_step_size(p, data, alpha=0.0):
    """1/λ_max(M^½ A_ref M^½) built entry by entry, with scipy's matrix square root."""
    m = np.zeros((4, 4))
    for xj, pj in zip(data.x, data.weights, strict=True):
        s = 0 if xj > 0 else 2
        m[s : s + 2, s : s + 2] += pj * np.array([[xj * xj, xj], [xj, 1.0]])
    g = np.zeros((4, 4))
    for a, b, w in zip(p.a, p.b, p.w, strict=True):
        s = 0 if a > 0 else 2
        theta = np.array([a, b, w])
        sigma = np.outer(theta, theta)
        g[s : s + 2, s : s + 2] += sigma[:2, :2] + sigma[2, 2] * np.eye(2)
    c = np.zeros((4, 4))
    c[np.ix_([1, 3], [1, 3])] = 1.0
    b = np.eye(4) + alpha * (np.eye(4, k=2) + np.eye(4, k=-2))
    root = scipy.linalg.sqrtm(m).real
    return 1.0 / np.linalg.eigvalsh(root @ (c + b @ g @ b) @ root)[-1]


@pytest.mark.parametrize("i", ALL_CASES)
def test_step_size_matches_golden(trajectories, i):
    case = golden_case(trajectories, i)
    data = _data(case)
    if case["lr"] != 1e-3:  # the GD cases store the paper's step size at initialization
        assert theory.paper_step_size(_params(case, 0), data) == pytest.approx(
            case["lr"], RTOL_STEP
        )
    for k in trajectories["steps"]:
        got = theory.paper_step_size(_params(case, k), data)
        assert got == pytest.approx(case[f"lr_at{k}"], rel=RTOL_STEP), k


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_step_size_matches_direct_construction(alpha):
    rng = np.random.default_rng(2)
    for _ in range(5):
        n = 9
        p = Params(rng.normal(size=n), 0.1 * rng.normal(size=n), rng.normal(size=n), 0.3)
        w = rng.random(6)
        data = WeightedData(np.array([-3.0, -2, -1, 1, 2, 3]), rng.normal(size=6), w / w.sum())
        got = theory.paper_step_size(p, data, alpha=alpha)
        assert got == pytest.approx(_direct_step_size(p, data, alpha), rel=1e-10)


def test_step_size_is_batched(trajectories):
    cases = [golden_case(trajectories, i) for i in (1, 2, 5)]  # all width 16
    params = Params(*(np.stack([_params(c, 0)[f] for c in cases]) for f in range(4)))
    data = WeightedData(*(np.stack([_data(c)[f] for c in cases]) for f in range(3)))
    batched = theory.paper_step_size(params, data)
    single = [theory.paper_step_size(_params(c, 0), _data(c)) for c in cases]
    np.testing.assert_allclose(batched, single, rtol=1e-14)


@pytest.mark.parametrize("i", ALL_CASES)
def test_linear_regression_minimum_matches_golden_and_polyfit(trajectories, i):
    case = golden_case(trajectories, i)
    data = _data(case)
    v = np.asarray(theory.linear_regression_minimum(data))
    np.testing.assert_allclose(v, case["vopt"], rtol=1e-10, atol=1e-12)
    loss = 0.0
    for side, cols in ((data.x > 0, slice(0, 2)), (data.x < 0, slice(2, 4))):
        x, y, p = data.x[side], data.y[side], data.weights[side]
        direct = np.polyfit(x, y, 1, w=np.sqrt(p))  # weighted least squares: (slope, intercept)
        np.testing.assert_allclose(v[cols], direct, rtol=1e-9, atol=1e-12)
        loss += 0.5 * np.sum(p * (np.polyval(direct, x) - y) ** 2)
    assert theory.linear_regression_loss(data) == pytest.approx(loss, rel=1e-10)


def test_batched_inputs_that_do_not_fit_are_named(trajectories):
    """Each of these failed deep inside vmap or dot_general (or, for the options, ran on):
    one network with batched data, data of another run count, a 2-D network, a step size
    per run for one network or of another run count, α per run or outside [0, 1), an
    unknown eigenvector reading. A (1,) step size is one number, a list one per run, and a
    step size by keyword is the positional one."""
    cases = [golden_case(trajectories, i) for i in (1, 2, 5)]  # all width 16
    params = Params(*(np.stack([_params(c, 0)[f] for c in cases]) for f in range(4)))
    data = WeightedData(*(np.stack([_data(c)[f] for c in cases]) for f in range(3)))
    one, one_data = _params(cases[0], 0), _data(cases[0])
    h = np.asarray(theory.paper_step_size(params, data))
    flat = params._replace(a=params.a[:, None, :])  # (runs, d = 1, n): a d-dim network
    refused = [
        (lambda: theory.paper_step_size(one, data), r"^data: weights of shape \(3, 6\), but"),
        (lambda: theory.paper_step_size(params, data._replace(weights=data.weights[:2])), "^data"),
        (lambda: theory.paper_step_size(flat, data), r"^params: a of shape \(3, 1, 16\)"),
        (lambda: theory.provably_stuck(one, one_data, h), r"^step_size: shape \(3,\); one"),
        (lambda: theory.provably_stuck(params, data, h[:2]), r"^step_size: shape \(2,\)"),
        (lambda: theory.paper_step_size(params, data, alpha=np.full(3, 0.1)), r"^alpha: shape"),
        (lambda: theory.paper_step_size(one, one_data, alpha=1.5), r"^alpha: 1.5 is not in"),
        (lambda: theory.provably_stuck(one, one_data, h[0], eigenvectors="foo"), "^eigenvec"),
        (lambda: theory.provably_stuck(params, data, -h), "^step_size: every step size must"),
        (lambda: theory.provably_stuck(one, one_data, np.nan), "^step_size: every"),
        # shapes that disagree (a deep TypeError or "Cannot stack arrays" before)
        (lambda: theory.provably_stuck(params, data._replace(y=data.y[:, :4]), h),
         r"^data: x of shape \(3, 6\), y of \(3, 4\), weights of \(3, 6\); each run needs"),
        (lambda: theory.provably_stuck(params, data._replace(weights=data.weights[:, :4]), h),
         r"^data: x of shape \(3, 6\), y of \(3, 6\), weights of \(3, 4\)"),
        (lambda: theory.provably_stuck(params._replace(b=params.b[:, :8]), data, h),
         r"^params: a of shape \(3, 16\), b of \(3, 8\), w of \(3, 16\); each run needs"),
        (lambda: theory.paper_step_size(params, data._replace(x=data.x[..., None])),
         r"^data: x of shape \(3, 6, 1\) \(points in d = 1\), but params are a 1-D "
         r"network \(a of shape \(3, 16\)\)"),
        (lambda: theory.ntk_step_size(flat, data),
         r"^data: x of shape \(3, 6\) \(1-D points\), but params are a network for d = 1"),
        (lambda: theory.ntk_step_size(flat, data._replace(x=data.x[..., None, None])),
         r"^data: x of shape \(3, 6, 1, 1\), y of \(3, 6\)"),
    ]  # fmt: skip
    for call, named in refused:
        with pytest.raises(ValueError, match=named):
            call()
    stuck = np.asarray(theory.provably_stuck(params, data, h))
    np.testing.assert_array_equal(theory.provably_stuck(params, data, list(h)), stuck)
    np.testing.assert_array_equal(theory.provably_stuck(params, data, step_size=h), stuck)
    np.testing.assert_array_equal(
        theory.provably_stuck(params, data, h[:1]), theory.provably_stuck(params, data, h[0])
    )


@pytest.mark.parametrize("i", GD_CASES)
def test_certificate_agrees_with_golden_flags(trajectories, i):
    """converged{k}: the reference's criterion at the stored parameters with step `lr`."""
    case = golden_case(trajectories, i)
    for k in trajectories["steps"]:
        got = bool(_provably_stuck(_params(case, k), _data(case), case["lr"]))
        assert got == bool(case[f"converged{k}"]), f"step {k}"


# -m slow (10 s: a program per golden width for the reading gdrelu does not take); the
# default reading's flags are checked against every golden flag above
@pytest.mark.slow
def test_the_papers_reading_of_gwab_certifies_more_and_misses_a_golden_flag(trajectories):
    """G_wab as PAPER.md writes it (κ on the whole sum) is at most gdrelu's (κ < 1/2), so it
    certifies wherever gdrelu's does; of the 35 golden flags it misses exactly the one
    docs/fidelity.md names (case 4, step 60 000), which is why it is not the default."""
    paper = jax.jit(functools.partial(theory.provably_stuck, gwab="paper"))
    missed = []
    for i in GD_CASES:
        case = golden_case(trajectories, i)
        for k in trajectories["steps"]:
            args = (_params(case, k), _data(case), case["lr"])
            ours, theirs = bool(_provably_stuck(*args)), bool(paper(*args))
            assert theirs or not ours, (i, k)
            if theirs != bool(case[f"converged{k}"]):
                missed.append((i, int(k)))
    assert missed == [(4, 60000)]
    with pytest.raises(ValueError, match="gwab"):
        theory.provably_stuck(*args, gwab="literal")


def test_the_papers_reading_of_gwab_is_applied(trajectories):
    """`gwab="paper"` is not ignored: at the one golden flag it misses (case 4, step
    60 000, above) it gives the opposite of gdrelu's reading, which matches the flag."""
    case = golden_case(trajectories, 4)
    args = (_params(case, 60000), _data(case), case["lr"])
    paper = jax.jit(functools.partial(theory.provably_stuck, gwab="paper"))
    ours, theirs = bool(_provably_stuck(*args)), bool(paper(*args))
    assert ours == bool(case["converged60000"]) and theirs != ours


def test_certificate_needs_kinks_inside_the_data(trajectories):
    """A certified state stops being certified once a kink is moved past min|x_j|."""
    case = golden_case(trajectories, 1)
    p, data = _params(case, 60000), _data(case)
    assert _provably_stuck(p, data, case["lr"])
    moved = p._replace(b=p.b.copy())
    moved.b[0] = -1.01 * p.a[0]  # kink of neuron 0 at x = 1.01
    assert not _provably_stuck(moved, data, case["lr"])
    assert not _provably_stuck(p, data, 10 * case["lr"])  # ρ ≥ 1: step too large


def test_a_real_neuron_with_a_zero_is_on_side_minus_as_in_its_gram():
    """a = (-1, 0) with w ≠ 0: the side-+ Gram (`neuron_grams`, a_i ≤ 0 on side -) is 0,
    so the propagator's check calls the run a-degenerate; `a_degenerate`, used on the
    other paths, put a_i = 0 on neither side and did not. a = (1, 0) has both sides."""
    for a, want in (([-1.0, 0.0], True), ([1.0, 0.0], False), ([0.0, 0.0], True)):
        params = Params(np.array(a), np.zeros(2), np.array([0.5, -0.5]), np.zeros(()))
        empty_side = np.any(np.trace(np.asarray(theory.neuron_grams(params)), 0, 1, 2) == 0)
        assert bool(theory.a_degenerate(params)) == empty_side == want


@pytest.mark.parametrize(
    "a, w, want",
    [
        pytest.param([[1.0, 2.0], [1.0, -2.0]], [[1.0, 1.0]] * 2, [True, False], id="one-sign"),
        pytest.param(
            [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [1.0, -2.0, 0.0]], [[0.5, -0.5, 0.0]] * 3,
            [True, True, False], id="padding",
        ),
    ],
)  # fmt: skip
def test_a_degenerate(a, w, want):
    """docs/theory.md: a-degenerate is "all a_i of one sign" (zero biases here). "one-sign":
    all positive, mixed signs. "padding": over the real neurons only, a padding neuron
    (a = b = w = 0, a network padded to a wider width) is on neither side; all positive +
    padding, all negative + padding, mixed signs + padding."""
    a = np.array(a)
    got = theory.a_degenerate(Params(a, np.zeros_like(a), np.array(w), np.zeros(len(a))))
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize(
    "weights, want",
    [
        pytest.param(
            [[0.2, 0.2, 0.2, 0.4, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2, 0.0]], [True, False],
            id="one-point-on-a-side",
        ),
        pytest.param(
            [[0.5, 0.0, 0.0, 0.2, 0.2, 0.1], [0.2, 0.2, 0.1, 0.5, 0.0, 0.0],
             [0.2, 0.2, 0.0, 0.5, 0.1, 0.0]], [True, True, False],
            id="zero-weights",
        ),
    ],
)  # fmt: skip
def test_x_degenerate_counts_only_points_of_positive_weight(weights, want):
    """x-degenerate: at most one point of *positive weight* on some side (docs/theory.md),
    on x = -3, -2, -1, 1, 2, 3. "one-point-on-a-side": one point of positive weight on side
    + (degenerate), two (not). "zero-weights": three points on a side of which two have
    weight 0 leave that side one point, on either side of the origin."""
    w = np.array(weights)
    x = np.array([[-3.0, -2, -1, 1, 2, 3]] * len(w))
    got = theory.x_degenerate(WeightedData(x, x, w))
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("i", range(5))
def test_ntk_step_size_is_the_paper_step_size_in_1d(trajectories, i):
    """With zero biases in 1-D, λ_max of the weighted neural-tangent Gram equals λ_max of
    M^{1/2} A_ref M^{1/2}: the golden `lr` both ways (two unrelated formulas)."""
    case = golden_case(trajectories, i)
    params = Params(*(case[f"{n}0"] for n in "abwc"))
    data = WeightedData(case["x"], case["y"], case["xw"])
    assert float(theory.ntk_step_size(params, data)) == pytest.approx(float(case["lr"]), rel=1e-12)


def _normal_runs(runs, m, d, n, seed):
    """`runs` networks (d inputs, width n) and data sets of m points, all entries
    standard normal (biases and c too), with Dirichlet(1) weights."""
    rng = np.random.default_rng(seed)
    params = Params(
        rng.normal(size=(runs, d, n)), rng.normal(size=(runs, n)), rng.normal(size=(runs, n)),
        rng.normal(size=runs),
    )  # fmt: skip
    data = WeightedData(
        rng.normal(size=(runs, m, d)), rng.normal(size=(runs, m)), rng.dirichlet(np.ones(m), runs)
    )
    return params, data


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_ntk_step_size_against_a_direct_jacobian(parameterization, alpha):
    """Batched, d = 3, nonzero biases: 1/λ_max(diag(√p) J Jᵀ diag(√p)) with J from autodiff."""
    from jax.flatten_util import ravel_pytree

    from gdrelu.model import forward, scaling_of

    runs, d, n = 3, 3, 7
    params, data = _normal_runs(runs, 9, d, n, seed=5)
    scaling = scaling_of(parameterization, n, d)
    got = theory.ntk_step_size(params, data, alpha=alpha, scaling=scaling)
    for r in range(runs):
        one = jax.tree.map(lambda v, r=r: jnp.asarray(v[r]), params)
        flat, unravel = ravel_pytree(one)
        x = jnp.asarray(data.x[r])
        jac = jax.jacrev(lambda f, u=unravel, x=x: forward(u(f), x, alpha, scaling))(flat)
        root = np.sqrt(data.weights[r])
        gram = root[:, None] * np.asarray(jac @ jac.T) * root[None, :]
        assert float(got[r]) == pytest.approx(1.0 / np.linalg.eigvalsh(gram)[-1], rel=1e-12)


def test_param_norm_step_size_is_the_star_codes_gram_built_from_parameter_values():
    """The star code stacked each point's "gradient" as the flattened parameter vector θ:
    J has m equal rows θ, and its h is 1/λ_max(diag(√p) J Jᵀ diag(√p)), built here as it
    did (batched, d = 2, nonzero biases and c, zero padding neurons)."""
    from jax.flatten_util import ravel_pytree

    runs, m, d, n = 3, 33, 2, 5
    params, data = _normal_runs(runs, m, d, n, seed=9)
    padded = Params(*(np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, 3)]) for v in params[:3]), params.c)
    got = np.asarray(theory.param_norm_step_size(params, data))
    np.testing.assert_array_equal(got, np.asarray(theory.param_norm_step_size(padded, data)))
    for r in range(runs):
        theta, _ = ravel_pytree(jax.tree.map(lambda v, r=r: jnp.asarray(v[r]), params))
        jac = np.tile(np.asarray(theta), (m, 1))
        root = np.sqrt(data.weights[r])
        gram = root[:, None] * (jac @ jac.T) * root[None, :]
        assert got[r] == pytest.approx(1.0 / np.linalg.eigvalsh(gram)[-1], rel=1e-12)


@pytest.mark.parametrize("eigenvectors", ["columns", "rows"])
def test_psi_sum_against_lapack_eigenpairs(eigenvectors):
    """S_ψ from the engine's unordered Jacobi eigenpairs equals S_ψ written out with
    numpy's ascending eigh, as the reference code had it: with "rows", row k of U pairs
    with the k-th smallest λ (unsorted Jacobi pairs broke this once)."""
    from gdrelu import jacobi

    rng = np.random.default_rng(12)
    eigh = jax.jit(jacobi.eigh)  # eagerly, its scan would compile at every call
    for _ in range(20):
        half = rng.normal(size=(4, 4))
        k, psi0, h = half @ half.T, rng.normal(size=4), 0.1
        lam, vecs = np.linalg.eigh(k)
        basis = vecs if eigenvectors == "columns" else vecs.T
        u_inf = np.abs(basis).max(axis=0)
        want = np.sum(h / np.abs(h * lam) * np.abs(vecs.T @ psi0) * u_inf)
        got_lam, got_vecs = eigh(jnp.asarray(k))
        got = theory.psi_sum(got_lam, got_vecs, jnp.asarray(psi0), h, eigenvectors)
        assert float(got) == pytest.approx(want, rel=1e-9)


def _direct_certificate(p, data, h, alpha, x_min=None):
    """docs/theory.md's certificate step by step in numpy (S_ψ from the eigenvectors,
    gdrelu's reading of G_wab), for one 1-D run with leaky slope `alpha`; the kinks' margin
    at `x_min` (default min_j |x_j|, as the proof has it)."""
    a, b, w, c = (np.asarray(v) for v in p)
    x, y, weights = (np.asarray(v) for v in data)
    x_min = np.min(np.abs(x)) if x_min is None else x_min
    m = np.zeros((4, 4))
    for xj, pj in zip(x, weights, strict=True):
        s = 0 if xj > 0 else 2
        m[s : s + 2, s : s + 2] += pj * np.array([[xj * xj, xj], [xj, 1.0]])
    sigma = [sum(np.outer(t, t) for t in zip(a, b, w, strict=True) if (t[0] > 0) == (s == 0))
             for s in (0, 1)]  # fmt: skip
    g = scipy.linalg.block_diag(*(sg[:2, :2] + sg[2, 2] * np.eye(2) for sg in sigma))
    coupling = np.eye(4) + alpha * (np.eye(4, k=2) + np.eye(4, k=-2))
    ones = np.zeros((4, 4))
    ones[np.ix_([1, 3], [1, 3])] = 1.0
    root = scipy.linalg.sqrtm(m).real
    lam, vecs = np.linalg.eigh(root @ (ones + coupling @ g @ coupling) @ root)
    lines = coupling @ [sigma[0][2, 0], sigma[0][2, 1], sigma[1][2, 0], sigma[1][2, 1]]
    u_hat = np.zeros(4)
    for xj, yj, pj in zip(x, y, weights, strict=True):
        s = 0 if xj > 0 else 2
        u_hat[s : s + 2] += pj * (yj - c - lines[s] * xj - lines[s + 1]) * np.array([xj, 1.0])
    psi0 = np.linalg.pinv(root) @ u_hat
    mu = 1.0 - h * lam
    rho = np.max(np.abs(mu))
    if rho >= 1.0:
        return False
    s_psi = sum(h / abs(1 - mu[k]) * abs(vecs[:, k] @ psi0) * np.max(np.abs(vecs[:, k]))
                for k in range(4))  # fmt: skip
    norm = lambda v: np.max(np.sum(np.abs(v), axis=1))  # noqa: E731
    kappa = 2 * norm(coupling) * norm(root) * s_psi
    if kappa >= 0.5:
        return False
    drift = _direct_gram_drift(sigma, kappa)
    delta = 2 * h / (1 - rho) * norm(root) ** 2 * norm(coupling) ** 2 * drift
    if delta > 0.5:
        return False
    q = np.array([[0.0, 0, 1], [0, 0, 1], [1, 1, 0]])
    for theta in np.abs(np.stack([a, b, w], 1)):
        err = kappa * q @ theta + 2 * kappa**2 * np.exp(2 * kappa) * theta.max()
        if not (theta[0] - err[0]) * x_min > theta[1] + err[1]:
            return False
    return True


def _direct_gram_drift(sigma, kappa, gwab="conservative"):
    """Step 5's G_w + G_ab + G_wab (docs/theory.md) in numpy, for the per-side Grams `sigma`."""
    q = np.array([[0.0, 0, 1], [0, 0, 1], [1, 1, 0]])
    norm = lambda v: np.max(np.sum(np.abs(v), axis=1))  # noqa: E731
    d = [kappa * (q @ np.abs(sg) + np.abs(sg) @ q) + 8 * kappa**2 * np.exp(4 * kappa) * norm(sg)
         for sg in sigma]  # fmt: skip
    g_w = max(ds[2, 2] for ds in d)
    g_ab = max(ds[0, 0] + ds[0, 1] + ds[1, 1] for ds in d)
    if gwab == "paper":
        g_wab = kappa * max(abs(sg[2, 0]) + abs(sg[2, 1]) + ds[2, 0] + ds[2, 1]
                            for sg, ds in zip(sigma, d, strict=True))  # fmt: skip
    else:
        g_wab = max(kappa * (abs(sg[2, 0]) + abs(sg[2, 1])) + ds[2, 0] + ds[2, 1]
                    for sg, ds in zip(sigma, d, strict=True))  # fmt: skip
    return g_w + g_ab + g_wab


SLOW_SCALES = [(0.0, 1.0), (0.0, 0.5), (0.1, 1.0), (0.1, 2.0)]


@functools.cache
def _trained_until_certified(alpha, x_scale):
    """40 golden initial networks (points and targets scaled by `x_scale`) trained by GD
    at the paper's step size h until certified, crossed or 60 checks: (final, data, h)."""
    from gdrelu import simulate

    m = np.load(DATA / "mc_outcomes_n16.npz")
    runs = 40
    x, y = x_scale * np.tile(m["x"], (runs, 1)), x_scale * np.tile(m["y"], (runs, 1))
    data = WeightedData(x, y, m["xw"][:runs])
    params = Params(m["a0"][:runs], m["b0"][:runs], m["w0"][:runs], m["c0"][:runs])
    h = np.asarray(theory.paper_step_size(params, data, alpha=alpha))
    final = simulate(params, data, h, alpha=alpha, check_every=1000, max_checks=60).params
    return jax.device_get(final), data, h


def _each_run(final, data):
    """(params, data) of each run alone, for `_direct_certificate`."""
    return [(Params(*(np.asarray(v)[r] for v in final)), WeightedData(*(v[r] for v in data)))
            for r in range(len(data.x))]  # fmt: skip


@pytest.mark.parametrize(
    "alpha, x_scale",
    [(0.0, 2.0), (0.1, 0.5), *(pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_SCALES)],
)
def test_the_certificate_against_a_direct_implementation(alpha, x_scale):
    """On leaky ReLU, which no golden vector covers, and on ReLU: 40 golden initial
    networks trained by GD until certified, crossed or 60 checks, judged at step sizes
    h·s around the one they trained with. Both verdicts occur, and every one agrees with
    the direct implementation. The points and targets scaled by `x_scale` move min_j |x_j|
    off 1, where the reference hard-codes it (PAPER.md): at 2, some verdicts are those
    of min_j |x_j| = 2 and not of 1 (kinks between 1 and 2 are still inside the data)."""
    final, data, h = _trained_until_certified(alpha, x_scale)
    runs = h.size
    stuck = jax.jit(functools.partial(theory.provably_stuck, alpha=alpha))
    verdicts, at_one = [], []
    each = _each_run(final, data)
    for scale in (1.0, 1.5, 1.9, 2.5):
        got = np.asarray(stuck(final, data, h * scale))
        for r in range(runs):
            one = each[r]
            want = _direct_certificate(*one, h[r] * scale, alpha)
            assert got[r] == want, (scale, r)
            verdicts.append(want)
            at_one.append(_direct_certificate(*one, h[r] * scale, alpha, x_min=1.0))
    assert 20 < sum(verdicts) < len(verdicts) - 20
    # Below 1, a run certified at min|x_j| is certified at 1 too; the reverse needs a kink
    # in (min|x_j|, 1) on a run the crossing rule stopped: rare.
    if x_scale > 1:
        assert verdicts != at_one


@pytest.mark.parametrize("gwab", ["conservative", "paper"])
@pytest.mark.parametrize("kappa", [0.05, 0.3, 0.45])
def test_gram_drift_against_the_formula(kappa, gwab):
    """Step 5's drift bound against docs/theory.md written out in numpy, at κ up to the
    certificate's 1/2: near convergence κ is small and its κ² e^{4κ} term is invisible in
    the verdicts, so the exponent and each D_s entry are checked here directly."""
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(2, 5, 3))  # five neurons (a, b, w) per side, mixed signs
    sigma = np.einsum("sni,snj->sij", theta, theta)
    got = theory._gram_drift(jnp.asarray(sigma), kappa, gwab)
    assert float(got) == pytest.approx(_direct_gram_drift(sigma, kappa, gwab), rel=1e-12)


def test_kinks_margin_by_hand():
    """Step 6 on a hand-worked neuron θ = (|a|, |b|, |w|) = (1, 0.8, 1): with κ = 0.1,
    E_a = E_b = κ|w| + 2κ²e^{2κ} max θ = 0.12443, so the margin (1 - E_a) x_min - (0.8 + E_b)
    is -0.049 at x_min = 1 (not certified), +0.126 at x_min = 1.2, and 0.2 at κ = 0
    (certified). A padding row (all zero) is ignored where `real` masks it, and has no
    margin where it does not."""
    witnesses = jnp.array([[-1.0, -0.8, 1.0], [0.0, 0.0, 0.0]])
    padding = jnp.array([True, False])
    assert not theory._kinks_hold(witnesses, padding, 0.1, 1.0)
    assert theory._kinks_hold(witnesses, padding, 0.1, 1.2)
    assert theory._kinks_hold(witnesses, padding, 0.0, 1.0)
    assert not theory._kinks_hold(witnesses, jnp.array([True, True]), 0.0, 1.0)


def test_a_neuron_with_a_zero_counts_on_the_negative_side():
    """docs/theory.md: a neuron with a_i > 0 is on side +, one with a_i ≤ 0 on side -. A
    real neuron with a_i = 0 (b_i, w_i ≠ 0) adds its Gram to G₋; on side + the step size
    would differ."""
    rng = np.random.default_rng(4)
    n = 6
    p = Params(rng.normal(size=n), 0.1 * rng.normal(size=n), rng.normal(size=n), 0.2)
    p.a[0], p.b[0], p.w[0] = 0.0, 0.5, 2.0
    data = WeightedData(np.array([-3.0, -2, -1, 1, 2, 3]), rng.normal(size=6), np.full(6, 1 / 6))
    got = float(theory.paper_step_size(p, data))
    assert got == pytest.approx(_direct_step_size(p, data), rel=1e-10)
    plus = p._replace(a=p.a.copy())
    plus.a[0] = 1e-300  # the same Gram on side +
    assert got != pytest.approx(_direct_step_size(plus, data), rel=1e-6)


def test_moment_roots_on_a_one_point_side():
    """(M^{1/2})⁺ is a pseudo-inverse: with one point on side + (rank-one M₊ = p v vᵀ,
    v = (x, 1)) it is v vᵀ / (√p ‖v‖³), and M₊^{1/2} = √p v vᵀ / ‖v‖, by hand; side -
    against scipy. Eigenvalues of M₊ that round to a tiny positive number instead of 0
    must not be inverted."""
    for x_plus, p_plus in [(0.37, 0.4), (1.7, 0.4), (3.1, 0.123)]:
        weights = np.array([0.2, 0.3, 0.1, p_plus])
        weights /= weights.sum()
        x = np.array([-3.0, -2.0, -1.0, x_plus])
        root, pinv_root = theory.moment_roots(WeightedData(x, x, weights))
        v, p = np.array([x_plus, 1.0]), weights[3]
        outer = np.outer(v, v)
        pairs = zip(x[:3], weights[:3], strict=True)
        m_minus = sum(pj * np.array([[xj * xj, xj], [xj, 1.0]]) for xj, pj in pairs)
        root_minus = scipy.linalg.sqrtm(m_minus).real
        want_root = scipy.linalg.block_diag(np.sqrt(p) * outer / np.linalg.norm(v), root_minus)
        want_pinv = scipy.linalg.block_diag(
            outer / (np.sqrt(p) * np.linalg.norm(v) ** 3), np.linalg.inv(root_minus)
        )
        np.testing.assert_allclose(root, want_root, atol=1e-12)
        np.testing.assert_allclose(pinv_root, want_pinv, rtol=1e-9, atol=1e-9)


def test_linear_regression_on_a_one_point_side_and_an_empty_side():
    """Where M_s is singular v_opt takes its pseudo-inverse: one point (x, y) on a side
    gives the minimum-norm line through it, y (x, 1) / (x² + 1), and a side without
    weight gives (0, 0); L_lin is then the other side's least-squares loss (polyfit)."""
    x = np.array([-3.0, -2.0, -1.0, 2.0, 3.0])
    y = np.array([1.0, -2.0, 0.5, 0.5, 7.0])
    weights = np.array([0.3, 0.2, 0.1, 0.4, 0.0])  # side +: one point of positive weight
    v = np.asarray(theory.linear_regression_minimum(WeightedData(x, y, weights)))
    np.testing.assert_allclose(v[:2], 0.5 * np.array([2.0, 1.0]) / 5.0, rtol=1e-12)
    line = np.polyfit(x[:3], y[:3], 1, w=np.sqrt(weights[:3]))
    np.testing.assert_allclose(v[2:], line, rtol=1e-10)
    loss = 0.5 * np.sum(weights[:3] * (np.polyval(line, x[:3]) - y[:3]) ** 2)
    assert float(theory.linear_regression_loss(WeightedData(x, y, weights))) == pytest.approx(
        loss, rel=1e-10
    )
    empty = np.array([0.5, 0.3, 0.2, 0.0, 0.0])
    v = np.asarray(theory.linear_regression_minimum(WeightedData(x, y, empty)))
    np.testing.assert_array_equal(v[:2], [0.0, 0.0])


@pytest.mark.parametrize("xp", [np, jnp])
def test_point_at_zero_is_within_64_ulp_of_the_largest_input(xp):
    """A point within 64 ulp of max_j |x_j| of 0 counts as at 0 (docs/theory.md, "Data");
    64 ulp of 3 is 2.8e-14 (64 ε · 3 = 4.3e-14), so 1e-14 and 2.5e-14 are at 0 (32 ε · 3 =
    2.1e-14 would miss the second) and 5e-14 and 1e-13 are not."""
    x = np.array(
        [[3.0, -1.0, 1e-14], [3.0, -1.0, -1e-14], [3.0, -1.0, 1e-13], [3.0, -1.0, -0.0],
         [3.0, -1.0, 2.0], [3.0, -1.0, 2.5e-14], [-3.0, 1.0, -5e-14]]
    )  # fmt: skip
    got = theory.point_at_zero(xp.asarray(x), xp=xp)
    np.testing.assert_array_equal(np.asarray(got), [True, True, False, True, False, True, False])


def test_moment_root_pseudo_inverse_drops_eigenvalues_below_4_eps_lambda_max():
    """docs/theory.md, step 2: the pseudo-inverse drops the eigenvalues of M below
    4ε λ_max(M) and inverts the others. On M = diag(1, 0.25, 2ε, 8ε) (exact eigenvalues),
    (M^{1/2})⁺ = diag(1, 2, 0, 1/√(8ε)), M^{1/2} = diag(1, 0.5, √(2ε), √(8ε))."""
    eps = np.finfo(np.float64).eps
    lam = np.array([1.0, 0.25, 2 * eps, 8 * eps])
    root, pinv_root = theory._sqrt_and_pinv_sqrt(jnp.asarray(np.diag(lam)))
    np.testing.assert_allclose(np.asarray(root), np.diag(np.sqrt(lam)), rtol=1e-14, atol=0)
    want = np.diag([1.0, 2.0, 0.0, 1.0 / np.sqrt(8 * eps)])
    np.testing.assert_allclose(np.asarray(pinv_root), want, rtol=1e-14, atol=0)


def test_the_certificate_flips_at_the_direct_implementations_step_size():
    """Leaky ReLU (α = 0.1), where ‖B‖_∞ = 1.1: on the runs trained for
    `test_the_certificate_against_a_direct_implementation` that are certified at h and not
    at 2.5 h, bisect (in the direct implementation) the step size h* where the verdict
    flips; gdrelu certifies at h*(1 - 10⁻⁶) and not at h*(1 + 10⁻⁶). A verdict far from
    its threshold cannot see a constant of ρ, S, κ or δ; this one sits on it."""
    alpha = 0.1
    final, data, h = _trained_until_certified(alpha, 0.5)
    one = _each_run(final, data)
    flips = [r for r in range(h.size)
             if _direct_certificate(*one[r], h[r], alpha)
             and not _direct_certificate(*one[r], 2.5 * h[r], alpha)]  # fmt: skip
    assert len(flips) >= 5
    at = h.copy()
    for r in flips:
        lo, hi = h[r], 2.5 * h[r]
        while hi - lo > 1e-9 * lo:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _direct_certificate(*one[r], mid, alpha) else (lo, mid)
        at[r] = 0.5 * (lo + hi)
    stuck = jax.jit(functools.partial(theory.provably_stuck, alpha=alpha))
    below = np.asarray(stuck(final, data, at * (1 - 1e-6)))[flips]
    above = np.asarray(stuck(final, data, at * (1 + 1e-6)))[flips]
    np.testing.assert_array_equal(below, True)
    np.testing.assert_array_equal(above, False)


def test_ntk_gram_takes_slope_one_at_a_kink():
    """σ'(0) = 1, the reference's convention (`model.activation`): at a point x = 0 with
    zero biases every z_ji = 0, and K_w equals the Gram of the autodiff Jacobian of the
    network, whose ReLU is 1 there (two neurons, three points; ReLU and α = 0.2)."""
    from jax.flatten_util import ravel_pytree

    from gdrelu.model import forward

    params = Params(np.array([1.5, -0.7]), np.zeros(2), np.array([0.8, -1.1]), 0.3)
    data = WeightedData(np.array([-1.0, 0.0, 2.0]), np.zeros(3), np.array([0.3, 0.5, 0.2]))
    flat, unravel = ravel_pytree(jax.tree.map(jnp.asarray, params))
    x = jnp.asarray(data.x)
    for alpha in (0.0, 0.2):
        jac = np.asarray(jax.jacrev(lambda f, a=alpha: forward(unravel(f), x, a))(flat))
        # at x = 0, by hand: ∂f/∂a_i = 0, ∂f/∂b_i = w_i σ'(0) = w_i, ∂f/∂w_i = 0, ∂f/∂c = 1
        np.testing.assert_array_equal(jac[1], [0.0, 0.0, 0.8, -1.1, 0.0, 0.0, 1.0])
        root = np.sqrt(data.weights)
        gram = root[:, None] * (jac @ jac.T) * root[None, :]
        got = theory.ntk_step_size(params, data, alpha=alpha)
        assert float(got) == pytest.approx(1.0 / np.linalg.eigvalsh(gram)[-1], rel=1e-12)


def test_the_building_blocks_take_a_batch_and_name_what_does_not_fit():
    """`neuron_grams` of a batch returned the runs axis last, (2, 3, 3, runs), and
    `moment_matrix` of a batch failed inside dot_general; `point_at_zero` refused one run's
    x (m,); `a_degenerate` of a d-dim network returned one flag per input dimension; the
    least-squares lines, `x_degenerate` and a per-run or tuple `scaling` failed deep in
    JAX. The Grams and M against sums of outer products written out, run by run."""
    rng = np.random.default_rng(5)
    a, b, w = rng.normal(size=(3, 4, 7))
    a[0, :3] = 0.0  # a real a_i = 0 is on side -
    params = Params(a, b, w, np.zeros(4))
    x = np.array([[-3.0, -2, -1, 1, 2, 3]] * 4)
    weights = rng.dirichlet(np.ones(6), size=4)
    data = WeightedData(x, rng.normal(size=(4, 6)), weights)
    grams, moments = np.asarray(theory.neuron_grams(params)), np.asarray(theory.moment_matrix(data))
    assert grams.shape == (4, 2, 3, 3) and moments.shape == (4, 4, 4)
    for r in range(4):
        theta = np.stack([a[r], b[r], w[r]], -1)
        for s, side in enumerate((a[r] > 0, a[r] <= 0)):
            direct = sum(np.outer(t, t) for t in theta[side])
            np.testing.assert_allclose(grams[r, s], direct, rtol=1e-14, atol=1e-15)
        direct_m = np.zeros((4, 4))
        for xj, pj in zip(x[r], weights[r], strict=True):
            k = 0 if xj > 0 else 2
            direct_m[k : k + 2, k : k + 2] += pj * np.array([[xj * xj, xj], [xj, 1.0]])
        np.testing.assert_allclose(moments[r], direct_m, rtol=1e-14, atol=1e-15)
        root, _ = theory.moment_roots(jax.tree.map(lambda v, r=r: v[r], data))
        np.testing.assert_array_equal(theory.moment_roots(data)[0][r], root)
    assert theory.point_at_zero(np.array([-1.0, 0.0, 2.0])) and not theory.point_at_zero(x[0])
    wide = Params(rng.normal(size=(3, 5)), np.zeros(5), np.ones(5), np.zeros(()))
    one = jax.tree.map(lambda v: v[0], data)
    scaling_per_run = Scaling(np.full(4, 0.5), np.full(4, 0.7))
    refused = [
        (lambda: theory.a_degenerate(wide), r"^params: a of shape \(3, 5\): a_degenerate is of"),
        (lambda: theory.neuron_grams(wide), r"^params: a of shape \(3, 5\): neuron_grams is of"),
        (lambda: theory.neuron_grams(params._replace(w=w[:, :3])), r"^params: a of shape \(4, 7\)"),
        (lambda: theory.linear_regression_minimum(one._replace(y=one.y[:5])), r"^data: x of shape"),
        (lambda: theory.linear_regression_loss(data._replace(x=x[..., None])),
         r"^data: x of shape \(4, 6, 1\): linear_regression_loss is of 1-D points"),
        (lambda: theory.x_degenerate(tuple(one)), r"^data: a gdrelu.WeightedData"),
        (lambda: theory.moment_matrix(data._replace(x=x[..., None])), r"^data: x of shape \(4, 6,"),
        (lambda: theory.point_at_zero(x[..., None]), r"^x: shape \(4, 6, 1\); 1-D inputs"),
        (lambda: theory.ntk_step_size(params, data, scaling=scaling_per_run),
         r"^scaling: fields of shapes \(4,\), \(4,\); one number each"),
        (lambda: theory.ntk_step_size(params, data, scaling=(0.5, 0.7)), r"^scaling: a gdrelu"),
    ]  # fmt: skip
    for call, named in refused:
        with pytest.raises(ValueError, match=named):
            call()
