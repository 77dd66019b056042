"""Bias inits: each gives the distribution of kinks it promises (init.py's table).

Distribution checks use the Dvoretzky-Kiefer-Wolfowitz bound: with N draws,
P(sup |F_N - F| > ε) ≤ 2 exp(-2 N ε²), so ε = sqrt(ln(2/δ) / (2N)) fails with
probability at most δ = 1e-6 when the promise holds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu.init import BIAS_INITS, he_init, init_bias, ntk_init, parse_bias_init
from gdrelu.model import STANDARD, Scaling, activation_pattern, scaling_of

RUNS, WIDTH = 400, 10  # 4000 neurons per check
DELTA = 1e-6
EPS = math.sqrt(math.log(2 / DELTA) / (2 * RUNS * WIDTH))
X1 = jnp.array([-1.0, 0.5, 2.0, 4.0, 7.0])  # asymmetric, so sign mistakes show
P1 = jnp.array([0.1, 0.2, 0.3, 0.4, 0.0])  # the last point is not a training point


def _draw(name, x=X1, p=P1, d=1, scaling=STANDARD, init=he_init):
    keys = jax.random.split(jax.random.key(11), 2 * RUNS)

    def one(key_w, key_b):
        return init_bias(init(WIDTH, d, key=key_w), x, p, name, key=key_b, scaling=scaling)

    return jax.vmap(one)(keys[:RUNS], keys[RUNS:])


def _effective(params, scaling=STANDARD):
    a = params.a[:, None, :] if params.a.ndim == 2 else params.a
    return scaling.a * a  # (runs, d, n)


def _signed_offset(params, scaling=STANDARD):
    """-b_i/‖ã_i‖: signed distance of the kink hyperplane from the origin along ã_i."""
    return np.ravel(-params.b / jnp.linalg.norm(_effective(params, scaling), axis=1))


def _assert_distribution(samples, cdf):
    samples = np.sort(np.ravel(samples))
    n = samples.size
    upper = np.arange(1, n + 1) / n - cdf(samples)
    lower = cdf(samples) - np.arange(n) / n
    assert max(upper.max(), lower.max()) <= EPS


def _uniform_cdf(low, high):
    return lambda t: np.clip((t - low) / (high - low), 0.0, 1.0)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("uniform(0.7)", -0.7, 0.7),
        ("unif", -math.sqrt(6), math.sqrt(6)),
        ("unif-pos", 0.0, math.sqrt(6)),
        ("unif-neg", -math.sqrt(6), 0.0),
        ("pytorch", -1.0, 1.0),  # d = 1
    ],
)
def test_uniform_biases(name, low, high):
    _assert_distribution(_draw(name).b, _uniform_cdf(low, high))


def test_pytorch_biases_in_d_dimensions():
    """pytorch: U(-1/√d, 1/√d) for d = 3 inputs (d = 1 above cannot tell 1/√d from 1/d)."""
    x = jax.random.normal(jax.random.key(0), (20, 3))  # the d = 3 draws of the test below
    p = jnp.full((20,), 1.0 / 20)
    params = _draw("pytorch", x, p, 3, scaling_of("ntk", WIDTH, 3), ntk_init)
    bound = 1.0 / math.sqrt(3)
    _assert_distribution(params.b, _uniform_cdf(-bound, bound))


def test_normal_biases():
    from scipy.stats import norm

    _assert_distribution(_draw("normal(0.3)").b, lambda t: norm.cdf(t / 0.3))


def test_zero_keeps_every_kink_at_the_origin():
    assert np.all(_draw("zero").b == 0.0)


@pytest.mark.parametrize(("d", "parameterization"), [(1, "standard"), (3, "ntk")])
def test_kink_unif_and_kink_neg_unif_distances(d, parameterization):
    """Kinks at signed distance U(-√3, √3), resp. U(0, √3) with the origin inactive."""
    x = jax.random.normal(jax.random.key(0), (20, d)) if d > 1 else X1
    p = jnp.full((x.shape[0],), 1.0 / x.shape[0])
    scaling = scaling_of(parameterization, WIDTH, d)
    init = ntk_init if parameterization == "ntk" else he_init
    both = _draw("kink-unif", x, p, d, scaling, init)
    _assert_distribution(_signed_offset(both, scaling), _uniform_cdf(-math.sqrt(3), math.sqrt(3)))
    neg = _draw("kink-neg-unif", x, p, d, scaling, init)
    _assert_distribution(_signed_offset(neg, scaling), _uniform_cdf(0.0, math.sqrt(3)))
    assert np.all(neg.b <= 0)  # at x = 0 the pre-activation is b ≤ 0: origin side off


def test_kink_uniform_spans_the_training_range():
    """1-D: kinks -b/a uniform on [min, max] of the points of positive weight ([-1, 4])."""
    params = _draw("kink-uniform")
    _assert_distribution(np.ravel(-params.b / params.a), _uniform_cdf(-1.0, 4.0))


@pytest.mark.parametrize("name", ["he+1", "kink-neg-point"])
def test_kinks_at_training_points_drawn_by_weight(name):
    """Every kink sits on a training point j, chosen with probability p_j (5 standard
    errors sqrt(p(1-p)/N)); kink-neg-point also flips neurons to be off at the origin,
    (a_i, w_i) together where ã_i x_j < 0 for the drawn ã_i; he+1 moves no weight."""
    params = _draw(name)
    drawn = _draw("zero")  # the same He networks, zero biases
    sign = np.asarray(params.a) / np.asarray(drawn.a)
    np.testing.assert_array_equal(params.w, sign * np.asarray(drawn.w))
    flips = name == "kink-neg-point" and np.asarray(drawn.a * -params.b / params.a) < 0
    np.testing.assert_array_equal(sign, np.where(flips, -1.0, 1.0))
    assert np.any(flips) == (name == "kink-neg-point")
    kinks = np.ravel(-params.b / params.a)
    at = np.abs(kinks[:, None] - np.asarray(X1)[None, :]) < 1e-12
    assert np.all(at.sum(1) == 1)
    freq, p = at.mean(0), np.asarray(P1)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / kinks.size) + 1e-12)
    if name == "kink-neg-point":
        assert np.all(params.b <= 0)
        on = jax.vmap(lambda q: activation_pattern(q, X1))(params)
        # active on the far side of its point: on at x_j, off at the origin (b ≤ 0)
        assert np.all(on.sum(1) >= 1)


def test_he_plus_k_kinks_are_convex_combinations():
    """he+3: kinks inside the training hull, with mean Σ p_j x_j (Dirichlet symmetry) and
    variance σ² E Σ λ_l² = σ²/2 for the points' variance σ² (λ ~ Dirichlet(1, 1, 1):
    E λ_l² = 1/6), not the σ²/3 of equal weights; within 5 SE, √((m₄ - s⁴)/N)."""
    params = _draw("he+3")
    kinks = np.ravel(-params.b / params.a)
    assert np.all((kinks >= -1.0 - 1e-12) & (kinks <= 4.0 + 1e-12))
    mean = float(np.asarray(P1) @ np.asarray(X1))
    assert abs(kinks.mean() - mean) <= 5 * kinks.std() / math.sqrt(kinks.size)
    sigma2 = float(np.asarray(P1) @ (np.asarray(X1) - mean) ** 2)
    var, fourth = kinks.var(), np.mean((kinks - kinks.mean()) ** 4)
    assert abs(var - sigma2 / 2) <= 5 * math.sqrt((fourth - var**2) / kinks.size)


def test_mean_puts_every_kink_through_the_weighted_mean():
    x = jax.random.normal(jax.random.key(2), (15, 2))
    p = jax.random.dirichlet(jax.random.key(3), jnp.ones(15))
    params = _draw("mean", x, p, d=2)
    centre = np.asarray(p @ x)
    np.testing.assert_allclose(np.einsum("d,rdn->rn", centre, params.a) + params.b, 0, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    ["normal(-1)", "uniform(x)", "he+0", "he+65", "kink", "he+k", "normal(0)", "uniform(0)",
     "normal(inf)", "uniform(nan)"],
)  # fmt: skip
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="bias_init"):
        parse_bias_init(name)


@pytest.mark.parametrize("name", ["he+k", "kink"])  # normal(σ): "needs a number"
def test_a_template_name_is_told_how_to_write_its_number(name):
    """`--bias-init he+k` answered "'he+k' is not one of ..., he+k, ...": the templates
    of the list now come with how their numbers are written."""
    with pytest.raises(
        ValueError, match=r"σ > 0 and 1 ≤ k ≤ 64 written as numbers: normal\(0.1\), he\+1$"
    ):
        parse_bias_init(name)


def test_every_listed_init_is_accepted():
    for name in BIAS_INITS:
        concrete = name.replace("σ", "0.5").replace("he+k", "he+2")
        parse_bias_init(concrete)
    assert Scaling(1.0, 1.0) == STANDARD


@pytest.mark.parametrize(
    ("init", "dtype"),
    [("he", jnp.float64), ("he", jnp.float32), ("swapped", jnp.float64), ("ntk", jnp.float64)],
)
def test_padded_init_draws_the_narrow_network(init, dtype):
    """One program for every width: the width-n network padded to `size`, bit for bit
    what a program compiled for width n draws."""
    from gdrelu.init import INITS, padded_init
    from gdrelu.model import padded

    draw = jax.jit(lambda key, width: padded_init(init, 64, width, key=key, dtype=dtype))
    for n, seed in [(1, 0), (37, 2), (64, 3)]:
        key = jax.random.key(seed)
        got = draw(key, jnp.asarray(n))
        narrow = jax.jit(lambda k, n=n: INITS[init](n, key=k, dtype=dtype))
        want = padded(narrow(key), 64)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == dtype
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(("args", "field"), [((0,), "n: 0"), ((4, 0), "d: 0"), ((-3,), "n: -3"),
                                             ((4.0,), "n: 4.0")])  # fmt: skip
def test_a_network_without_neurons_or_inputs_is_refused(args, field):
    """he_init(0) divided by zero (Var w = 2/n); he_init(-3) failed in MLIR; a seed where
    the key goes gave JAX's "invalid PRNG key data"."""
    with pytest.raises(ValueError, match=f"^{field} is not a positive integer"):
        he_init(*args, key=jax.random.PRNGKey(0))
    for key in (7, None, np.int64(7)):  # np.int64 and None failed inside JAX
        with pytest.raises(ValueError, match=r"^key: a JAX PRNG key, such as jax.random.key"):
            he_init(4, key=key)
    with pytest.raises(ValueError, match=r"^key: one key, not a batch of shape \(3,\)"):
        he_init(4, key=jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match=r"^dtype: int32 is not a floating-point dtype"):
        he_init(4, key=jax.random.key(0), dtype=jnp.int32)  # JAX's message named `normal`


def test_cell_draws_refuse_the_non_partitionable_threefry():
    """With JAX's non-partitionable threefry a network drawn at a wider padded width does
    not keep its first neurons' bits (the test above), so a cell's runs would change with
    the spec's other widths: the cells' draws refuse it, naming the flag; and another
    default generator than threefry2x32 (rbg hung a run)."""
    from gdrelu.cells import Cell, check_threefry, noise_keys
    from gdrelu.spec import ExperimentSpec

    check_threefry()  # JAX's default: partitionable
    cell = Cell(8, 0.0, ExperimentSpec(widths=(8,), deltas=(0.0,), runs=2))
    with jax.threefry_partitionable(False):
        with pytest.raises(ValueError, match=r"^jax_threefry_partitionable is off"):
            check_threefry()
        with pytest.raises(ValueError, match=r"^jax_threefry_partitionable is off"):
            noise_keys(cell, np.arange(2))
    jax.config.update("jax_default_prng_impl", "rbg")
    try:
        with pytest.raises(ValueError, match=r"^jax_default_prng_impl is 'rbg'"):
            noise_keys(cell, np.arange(2))
    finally:
        jax.config.update("jax_default_prng_impl", "threefry2x32")


def test_a_padded_cells_biases_are_drawn_for_its_true_width():
    """`initial_runs(cell, indices, size)` with a bias init: the networks of widths 8 and
    16 come from one draw of 16 neurons, but the biases are drawn for the cell's 8 only,
    then padded, so a run padded to 16 neurons is the unpadded run with 8 zero neurons (a
    padding neuron with b ≠ 0 would have ∂L/∂w = Σ p_j r_j σ(b) ≠ 0 and take part in
    training)."""
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(8, 16), deltas=(0.0,), runs=3, bias_init="normal(0.5)")
    cell = Cell(8, 0.0, spec)
    narrow, _, _ = jax.device_get(initial_runs(cell, np.arange(3)))
    wide, _, _ = jax.device_get(initial_runs(cell, np.arange(3), size=16))
    assert np.any(narrow.b != 0)
    for name in ("a", "b", "w"):
        got, want = getattr(wide, name), getattr(narrow, name)
        assert got.shape == (3, 16)
        np.testing.assert_array_equal(got[:, :8], want)
        np.testing.assert_array_equal(got[:, 8:], 0.0)
    np.testing.assert_array_equal(wide.c, narrow.c)


def test_batched_kink_biases_use_the_ntk_s_a_of_the_input_dimension():
    """`draw_biases`, as the cells draw them, NTK on d = 3 inputs: kink-unif puts the kink
    hyperplane s_a a_i·x + b_i = 0 at distance U(0, √3) from the origin with the table's
    s_a = √(2/d), not √(2/n) of the width."""
    from gdrelu.init import draw_biases, draw_params

    keys = jax.random.split(jax.random.key(4), 2 * RUNS)
    like = jnp.zeros((), jnp.float64)
    params = draw_params(keys[:RUNS], like, width=WIDTH, dim=3, init="ntk")
    x = jax.random.normal(jax.random.key(0), (RUNS, 20, 3))
    p = jnp.full((RUNS, 20), 1.0 / 20)
    biased = draw_biases(keys[RUNS:], params, x, p, bias_init="kink-unif", init="ntk")
    distance = np.abs(biased.b) / (math.sqrt(2 / 3) * np.linalg.norm(biased.a, axis=1))
    _assert_distribution(distance, _uniform_cdf(0.0, math.sqrt(3)))


def test_data_dependent_kinks_sit_where_promised_in_the_ntk_parameterization():
    """The kink of neuron i is where the forward pass's pre-activation s_a a_i·x + b_i
    (`model.preactivations`, s_a = √(2/3) for NTK on d = 3) is 0, whatever the
    parameterization: mean through the weighted mean, he+1 and kink-neg-point through a
    training point (kink-neg-point off at the origin), kink-uniform at a distance along
    e_i inside the training points' range."""
    from gdrelu.model import preactivations

    x = jax.random.normal(jax.random.key(0), (6, 3))
    p = jnp.array([0.1, 0.2, 0.3, 0.4, 0.0, 0.0])  # the last two are no training points
    scaling = scaling_of("ntk", WIDTH, 3)
    keys = jax.random.split(jax.random.key(8), 16)
    for name in ("mean", "he+1", "kink-neg-point", "kink-uniform"):
        for k in range(8):
            params = init_bias(ntk_init(WIDTH, 3, key=keys[k]), x, p, name, key=keys[8 + k],
                               scaling=scaling)  # fmt: skip
            if name == "mean":
                z = preactivations(params, (p @ x)[None, :], scaling)
                np.testing.assert_allclose(z, 0.0, atol=1e-12)
            elif name == "kink-uniform":
                effective = math.sqrt(2 / 3) * np.asarray(params.a)
                norms = np.linalg.norm(effective, axis=0)
                along = np.asarray(x[:4]) @ (effective / norms)  # (4, n)
                t = -np.asarray(params.b) / norms
                assert np.all((along.min(0) - 1e-12 <= t) & (t <= along.max(0) + 1e-12))
            else:
                z = np.asarray(preactivations(params, x[:4], scaling))
                assert np.all(np.min(np.abs(z), axis=0) < 1e-12), name
                if name == "kink-neg-point":
                    assert np.all(params.b <= 0)
