"""The network against direct, loop-by-loop implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu import Params, WeightedData, activation, forward, gd_step, kinks, weighted_loss
from gdrelu.model import Scaling

ALPHAS = [0.0, 0.1]


def _random_params(rng, n, d=1):
    shape = (n,) if d == 1 else (d, n)
    return Params(rng.normal(size=shape), rng.normal(size=n), rng.normal(size=n), rng.normal())


def _direct_forward(p, x, alpha):
    out = []
    for xj in x:
        total = p.c
        for i in range(p.b.size):
            z = (xj * p.a[i] if np.ndim(p.a) == 1 else xj @ p.a[:, i]) + p.b[i]
            total += p.w[i] * (z if z >= 0 else alpha * z)
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("d", [1, 3])
def test_forward_matches_direct_sum(alpha, d):
    rng = np.random.default_rng(0)
    p = _random_params(rng, 7, d)
    x = rng.normal(size=(5,) if d == 1 else (5, d))
    np.testing.assert_allclose(forward(p, jnp.asarray(x), alpha), _direct_forward(p, x, alpha))


def test_activation_derivative_is_one_at_zero():
    """The reference takes σ'(0) = 1 (golden README)."""
    assert jax.grad(activation)(0.0) == 1.0
    assert jax.grad(activation)(-1.0, 0.2) == pytest.approx(0.2)


def test_kinks_are_where_neurons_switch():
    """z = s_a a x + b is 0 at x = -b / (s_a a): with s_a = 2 (an NTK network's scaling)
    the kinks of (a, b) = (2, 1), (-0.5, 0.25) are -1/4 and 1/4, which `kinks` gave as if
    s_a were 1. Mismatched a and b failed inside JAX's division."""
    p = Params(jnp.array([2.0, -0.5]), jnp.array([1.0, 0.25]), jnp.ones(2), jnp.array(0.0))
    np.testing.assert_allclose(kinks(p), [-0.5, 0.5])
    np.testing.assert_allclose(kinks(p, Scaling(2.0, 1.0)), [-0.25, 0.25])
    with pytest.raises(ValueError, match=r"^params: a of shape \(2,\), b of \(3,\)"):
        kinks(p._replace(b=jnp.ones(3)))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_gd_step_matches_explicit_gradient(alpha):
    """θ ← θ - h ∇L with ∇L written out by hand for the weighted least-squares loss."""
    rng = np.random.default_rng(1)
    p = _random_params(rng, 6)
    x, y = rng.normal(size=8), rng.normal(size=8)
    weights = rng.random(8)
    weights /= weights.sum()
    h = 0.05
    z = np.outer(x, p.a) + p.b
    act = np.where(z >= 0, z, alpha * z)
    slope = np.where(z >= 0, 1.0, alpha)
    r = weights * (_direct_forward(p, x, alpha) - y)
    expected = Params(
        p.a - h * (r[:, None] * slope * x[:, None] * p.w).sum(0),
        p.b - h * (r[:, None] * slope * p.w).sum(0),
        p.w - h * (r[:, None] * act).sum(0),
        p.c - h * r.sum(),
    )
    got = gd_step(p, WeightedData(x, y, weights), h, alpha)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    loss = weighted_loss(p, x, y, weights, alpha)
    assert loss == pytest.approx(0.5 * np.sum(weights * (_direct_forward(p, x, alpha) - y) ** 2))


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize(("alpha", "parameterization"), [(0.0, "standard"), (0.2, "ntk")])
def test_loss_gradient_equals_autodiff(dim, alpha, parameterization):
    """The written-out gradient used by the engine against jax.grad of the loss."""
    from gdrelu.model import loss_gradient, scaling_of, weighted_loss

    rng = np.random.default_rng(dim)
    n, m = 9, 13
    shape_a = (n,) if dim == 1 else (dim, n)
    params = Params(
        jnp.asarray(rng.normal(size=shape_a)), jnp.asarray(rng.normal(size=n)),
        jnp.asarray(rng.normal(size=n)), jnp.asarray(0.3),
    )  # fmt: skip
    x = jnp.asarray(rng.normal(size=(m,) if dim == 1 else (m, dim)))
    y, p = jnp.asarray(rng.normal(size=m)), jnp.asarray(rng.dirichlet(np.ones(m)))
    scaling = scaling_of(parameterization, n, dim)
    want = jax.jit(jax.grad(weighted_loss))(params, x, y, p, alpha, scaling)
    got = jax.jit(loss_gradient)(params, x, y, p, alpha, scaling)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_a_batch_of_networks_is_refused_naming_the_params():
    """forward and gd_step take one run: given a batch (b of shape (runs, n)) with batched
    points, they blamed x ("a 1-D network takes points of shape (m,)")."""
    a, b, w = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 4))
    batch = Params(a, b, w, jnp.zeros(8))
    x = jnp.ones((8, 6))
    with pytest.raises(ValueError, match=r"^params: b of shape \(8, 4\); one run's network"):
        forward(batch, x)
    data = WeightedData(x, x, jnp.full((8, 6), 1 / 6))
    with pytest.raises(ValueError, match=r"^params: b of shape \(8, 4\)"):
        gd_step(batch, data, 0.1)


def test_gd_step_names_points_step_sizes_and_leaks_that_do_not_fit():
    """Weights of another point count raised "mul got incompatible shapes", a NaN step
    size returned NaN parameters and a negative one climbed the loss, a leak per neuron
    "incompatible shapes" in `activation`."""
    net = Params(jnp.array([2.0, -1.0]), jnp.zeros(2), jnp.ones(2), jnp.array(0.0))
    x = jnp.array([-1.0, 0.5, 2.0])
    points = WeightedData(x, x, jnp.full(3, 1 / 3))
    refused = [
        (lambda: gd_step(net, points._replace(weights=jnp.ones(2)), 0.1), r"^data: x of shape"),
        (lambda: gd_step(net, tuple(points), 0.1), r"^data: a gdrelu.WeightedData"),
        (lambda: gd_step(net, points, np.nan), r"^step_size: nan; one positive, finite number"),
        (lambda: gd_step(net, points, -0.1), r"^step_size: -0.1; one positive"),
        (lambda: gd_step(net, points, jnp.ones(2)), r"^step_size: .*; one positive"),
        (lambda: gd_step(net, points, 0.1, alpha=2.0), r"^alpha: 2.0 is not in \[0, 1\)"),
        (lambda: activation(x, jnp.ones(3)), r"^alpha: shape \(3,\); one number"),
    ]
    for call, named in refused:
        with pytest.raises(ValueError, match=named):
            call()
    half = gd_step(net, points, jnp.asarray(0.125, jnp.bfloat16))  # numpy's kind 'V': a real
    assert half.c == gd_step(net, points, 0.125).c


def test_the_loss_names_targets_or_weights_that_do_not_fit_and_takes_lists():
    """Five weights for six points raised JAX's "mul got incompatible shapes", a tuple as
    params "'tuple' object has no attribute 'b'", and a list of points "'list' object has
    no attribute 'ndim'": each is named; lists of numbers give what arrays give (½ Σ p r²
    of a network with one neuron written out by hand)."""
    net = Params(jnp.array([2.0]), jnp.array([-1.0]), jnp.array([3.0]), jnp.array(0.5))
    x, y, p = [-1.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.25, 0.25, 0.5]
    outputs = [0.5 + 3.0 * max(2.0 * xi - 1.0, 0.0) for xi in x]  # 0.5, 0.5, 3.5
    expected = 0.5 * sum(pj * (f - yj) ** 2 for pj, f, yj in zip(p, outputs, y, strict=True))
    np.testing.assert_allclose(weighted_loss(net, x, y, p), expected, rtol=1e-15)
    np.testing.assert_allclose(forward(net, x), outputs, rtol=1e-15)
    for name, args in (("weights", (x, y, p[:2])), ("y", (x, y[:2], p))):
        with pytest.raises(
            ValueError, match=rf"^{name}: shape \(2,\); one value per point, \(3,\)"
        ):
            weighted_loss(net, *args)
    with pytest.raises(ValueError, match=r"^params: a gdrelu.Params\(a, b, w, c\), not tuple"):
        forward(tuple(net), x)


def test_points_of_another_dimension_than_the_network_are_refused():
    """Taken from x.ndim, one 2-D point (2,) met a 2-D network as two 1-D points and
    broadcast to two outputs; the (1, 2) batch gives the one true output."""
    key = jax.random.PRNGKey(0)
    a, b, w = jax.random.normal(key, (3, 2, 5))
    net2 = Params(a, b[0], w[0], jnp.zeros(()))
    point = jnp.array([0.5, -1.0])
    expected = jnp.sum(jnp.maximum(point @ a + b[0], 0.0) * w[0])
    np.testing.assert_allclose(forward(net2, point[None, :]), [expected], rtol=1e-12)
    for x in (point, jnp.ones((4, 3))):
        with pytest.raises(ValueError, match=r"x: shape .* takes points of shape \(m, 2\)"):
            forward(net2, x)
    net1 = Params(a[0], b[0], w[0], jnp.zeros(()))
    with pytest.raises(ValueError, match=r"a 1-D network takes points of shape \(m,\)"):
        forward(net1, jnp.ones((4, 1)))
    with pytest.raises(ValueError, match="not a 1-D network"):
        kinks(net2)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_a_point_exactly_on_a_kink_counts_as_on(alpha):
    """z_ji = 0 exactly (b_i = -a_i x_j, as with a zero bias and a point at the origin) is
    on, σ'(0) = 1 (the reference's convention): in the pattern and in the written-out
    gradient, against a hand-written numpy gradient with that convention."""
    from gdrelu.model import activation_pattern, loss_and_pattern, loss_gradient

    x = np.array([0.5, -1.0, 2.0, 0.0])  # z = 0: neurons 0 and 1 at x = 0.5, neuron 2 at x = 0
    a, b = np.array([1.0, -2.0, 0.7]), np.array([-0.5, 1.0, 0.0])
    w, c = np.array([0.7, -1.3, 0.4]), 0.2
    y, p = np.array([0.3, -0.2, 1.1, 0.5]), np.array([0.4, 0.1, 0.2, 0.3])
    z = np.outer(x, a) + b
    on = z >= 0
    assert on[0, 0] and on[0, 1] and on[3, 2] and z[0, 0] == z[0, 1] == z[3, 2] == 0.0
    r = p * (c + np.where(on, z, alpha * z) @ w - y)
    back = np.where(on, 1.0, alpha) * r[:, None]
    want = (w * (x @ back), w * back.sum(0), r @ np.where(on, z, alpha * z), r.sum())
    params = Params(*(jnp.asarray(v) for v in (a, b, w, c)))
    args = (params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(p), alpha)
    for got, expected in zip(loss_gradient(*args), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(loss_and_pattern(*args)[1], on)
    np.testing.assert_array_equal(activation_pattern(params, jnp.asarray(x)), on)


def test_max_abs_kink_and_active_neurons_by_hand():
    """max_i |b_i| / ‖s_a a_i‖ over the real neurons (1-D: |b_i / (s_a a_i)|), worked by
    hand with s_a = 0.5; a d-dim neuron with one zero coordinate of a_i is real, and only
    a = b = w = 0 is padding."""
    from gdrelu.model import Scaling, active_neurons, max_abs_kink

    half = Scaling(0.5, 3.0)  # s_w plays no part
    one = Params(jnp.array([2.0, -4.0, 0.0]), jnp.array([1.0, 6.0, 0.0]),
                 jnp.array([1.0, 1.0, 0.0]), jnp.asarray(0.0))  # fmt: skip
    # |1 / (0.5·2)| = 1, |6 / (0.5·-4)| = 3, the padding neuron has none
    assert float(max_abs_kink(one, half)) == pytest.approx(3.0, rel=1e-15)
    np.testing.assert_array_equal(active_neurons(one), [True, True, False])
    # columns a_i: (3, 4) of norm 5 with b = 2: 2 / 2.5 = 0.8; (0, 2) of norm 2 with b = 0
    # and w = 0 (a real neuron through the origin); (0, 0) padding
    d2 = Params(jnp.array([[3.0, 0.0, 0.0], [4.0, 2.0, 0.0]]), jnp.array([2.0, 0.0, 0.0]),
                jnp.array([1.0, 0.0, 0.0]), jnp.asarray(0.0))  # fmt: skip
    assert float(max_abs_kink(d2, half)) == pytest.approx(0.8, rel=1e-15)
    np.testing.assert_array_equal(active_neurons(d2), [True, True, False])


def test_a_neuron_with_only_b_or_only_w_nonzero_is_real():
    """Only a = b = w = 0 is padding (`active_neurons`): a neuron with a_i = 0 but b_i ≠ 0
    adds w_i σ(b_i) to f, one with only w_i ≠ 0 has ∂L/∂a_i = w_i Σ_j r_j x_j ≠ 0 and
    moves: both are real."""
    from gdrelu.model import active_neurons

    one = Params(jnp.array([0.0, 0.0, 0.0, 1.5]), jnp.array([2.0, 0.0, 0.0, 0.0]),
                 jnp.array([0.0, -1.0, 0.0, 0.0]), jnp.asarray(0.0))  # fmt: skip
    np.testing.assert_array_equal(active_neurons(one), [True, True, False, True])
    d2 = one._replace(a=jnp.stack([one.a, jnp.zeros(4)]))
    np.testing.assert_array_equal(active_neurons(d2), [True, True, False, True])


def test_padding_appends_zero_neurons_and_refuses_to_narrow():
    """`padded`: zero neurons appended on the last axis of a, b, w (c kept), the network's
    output unchanged; a width below the network's is refused, naming it, even by one."""
    from gdrelu.model import padded

    rng = np.random.default_rng(4)
    p = _random_params(rng, 3, 2)
    wide = padded(p, 5, xp=np)
    assert wide.a.shape == (2, 5) and wide.b.shape == wide.w.shape == (5,)
    np.testing.assert_array_equal(wide.a[:, 3:], 0.0)
    np.testing.assert_array_equal(wide.b[3:], 0.0)
    np.testing.assert_array_equal(wide.w[3:], 0.0)
    x = rng.normal(size=(4, 2))
    np.testing.assert_allclose(forward(wide, jnp.asarray(x)), _direct_forward(p, x, 0.0))
    assert padded(p, 3) is p
    for width in (2, 1):
        with pytest.raises(ValueError, match=f"^width: cannot pad 3 neurons to {width}$"):
            padded(p, width)
