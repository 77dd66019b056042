"""`SimulationResult.loss_below_step`: the first step whose training loss is below
(1 - ESCAPE_MARGIN) L_lin, checked after every step on every path (issue 17)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdrelu import ExperimentSpec, Params, WeightedData, engine, simulate, theory
from gdrelu.cells import Cell, initial_runs
from gdrelu.data import multinomial_weights, star_points
from gdrelu.detectors import ESCAPE_MARGIN, classify, linear_regime, linear_threshold
from gdrelu.init import he_init
from gdrelu.model import activation_pattern, loss_gradient, weighted_loss
from gdrelu.optim import get_optimizer, minibatch

# The runs and checks of tests/test_engine.py's `width8` (40 runs of width 8, checks
# every 200 steps): the paths' programs are the same, and come from the suite's
# compilation cache when that module compiled them first.
CHECK_EVERY, MAX_CHECKS = 200, 10


def _paper_runs(n, count, delta=0.0, seed=0):
    spec = ExperimentSpec(widths=(n,), deltas=(delta,), runs=count, seed=seed)
    params, data, _ = initial_runs(Cell(n, delta, spec), np.arange(count))
    return params, data, theory.paper_step_size(params, data)


@functools.partial(jax.jit, static_argnames=("steps", "optimizer"))
def _direct_first_below(params, data, h, *, steps, optimizer):
    """One run step by step: the optax update of `optimizer(h)` on the loss's gradient,
    then the loss on every point: (the first step below (1 - ε) L_lin, or -1; the final
    parameters)."""
    transformation = optimizer(h)
    threshold = linear_threshold(params, data)

    def step(carry, _):
        p, state = carry
        grads = loss_gradient(p, data.x, data.y, data.weights)
        updates, state = transformation.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), weighted_loss(p, data.x, data.y, data.weights)

    (final, _), losses = jax.lax.scan(step, (params, transformation.init(params)), length=steps)
    below = losses < (1 - ESCAPE_MARGIN) * threshold
    return jnp.where(jnp.any(below), jnp.argmax(below) + 1, -1), final


def _run(tree, i):
    """Run i of a batch (a leading runs axis on every leaf), sliced in NumPy (an eager
    slice of a JAX array compiles a program per shape)."""
    return jax.tree.map(
        lambda v: v[i] if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else np.asarray(v)[i], tree
    )


def _direct(params, data, h, optimizer, steps):
    """Each run's first step below L_lin (-1: none), and the final parameters of all runs."""
    one = functools.partial(_direct_first_below, steps=steps, optimizer=optimizer)
    runs = [one(*_run((params, data, h), i)) for i in range(np.shape(params.c)[0])]
    finals = Params(*(np.stack(leaf) for leaf in zip(*(final for _, final in runs), strict=True)))
    return np.array([int(step) for step, _ in runs]), finals


def _groups_in_numpy(params, x):
    """Point j's group id: points of equal activation patterns (z_ji ≥ 0) share one."""
    z = x[:, None] * params.a + params.b if x.ndim == 1 else x @ params.a + params.b
    ids = {}
    return np.array([ids.setdefault(row.tobytes(), len(ids)) for row in z >= 0])


def _linear_threshold_in_numpy(groups, x, y, p):
    """L_lin = ½ Σ_groups min_v Σ_{j ∈ group} p_j (y_j - v·(x_j, 1))²: one weighted affine
    least-squares fit per group (numpy's lstsq on rows scaled by √p_j)."""
    features = np.column_stack([x.reshape(y.size, -1), np.ones(y.size)])
    total = 0.0
    for g in np.unique(groups):
        rows = groups == g
        root = np.sqrt(p[rows])
        coef, *_ = np.linalg.lstsq(features[rows] * root[:, None], y[rows] * root, rcond=None)
        total += 0.5 * np.sum(p[rows] * (y[rows] - features[rows] @ coef) ** 2)
    return total


def _escaped_in_numpy(initial, final, data):
    """Per run (L_lin, escaped): docs/theory.md's final-network rule written out. Escaped
    if a pair of points shares a group at the start but not at the end or the reverse,
    or if the final loss (ReLU, standard parameterization) is below (1 - 10⁻⁶) L_lin."""
    thresholds, flags = [], []
    for r in range(np.shape(initial.c)[0]):
        start, end = (Params(*(np.asarray(v)[r] for v in p)) for p in (initial, final))
        x, y, p = (np.asarray(v)[r] for v in data)
        before, after = _groups_in_numpy(start, x), _groups_in_numpy(end, x)
        regrouped = any(
            (before[j] == before[k]) != (after[j] == after[k])
            for j, k in itertools.combinations(range(y.size), 2)
        )
        z = x[:, None] * end.a + end.b if x.ndim == 1 else x @ end.a + end.b
        loss = 0.5 * np.sum(p * (end.c + np.maximum(z, 0.0) @ end.w - y) ** 2)
        thresholds.append(_linear_threshold_in_numpy(before, x, y, p))
        flags.append(regrouped or loss < (1 - 1e-6) * thresholds[-1])
    return np.array(thresholds), np.array(flags)


@pytest.fixture(scope="module")
def width8():
    return _paper_runs(8, 40)


def _simulate(params, data, h, **kwargs):
    return simulate(params, data, h, check_every=CHECK_EVERY, max_checks=MAX_CHECKS, **kwargs)


def test_gd_equals_a_direct_loop(width8):
    """1-D GD trained to the end (no stop rule): the first step below L_lin of each run,
    and its final classification (escaped or stuck) by docs/theory.md's rule."""
    params, data, h = width8
    result = _simulate(params, data, h, stop_on=())
    want, final = _direct(params, data, np.asarray(h), optax.sgd, CHECK_EVERY * MAX_CHECKS)
    np.testing.assert_array_equal(result.loss_below_step, want)
    assert np.any(want > 0) and np.any(want < 0), "some runs escape, some do not"
    threshold, escaped = _escaped_in_numpy(params, final, data)
    np.testing.assert_allclose(result.linear_threshold, threshold, rtol=1e-9)
    np.testing.assert_array_equal(result.escaped, escaped)
    assert np.any(escaped) and not np.all(escaped)
    # a run whose final loss is below went below at some step (not the converse: a run
    # can dip below L_lin and come back to its linear fit, as one of these does)
    final_below = result.final_loss < (1 - ESCAPE_MARGIN) * result.linear_threshold
    assert np.any(final_below) and np.all(want[final_below] > 0)


def test_an_event_on_a_chunks_last_step_is_that_step(width8):
    """Checks every 2 steps: about half the runs go below L_lin on the last step of
    a chunk, which the chunk's final parameters report (one step early passed
    every other test)."""
    params, data, h = width8
    steps = 2000
    result = simulate(params, data, h, check_every=2, max_checks=steps // 2, stop_on=(),
                      path="general")  # fmt: skip
    want, _ = _direct(params, data, np.asarray(h), optax.sgd, steps)
    assert np.sum(want % 2 == 0) >= 2, want  # events that fall on a chunk's last step
    np.testing.assert_array_equal(result.loss_below_step, want)


def test_paths_give_the_same_step(width8):
    """The propagator (auto) stops crossed runs and redoes their chunk on the general path:
    the step is that of the general path. (Whatever the block size: tests/test_memory.py
    compares it between blocks, as every other result.)"""
    params, data, h = width8
    general = _simulate(params, data, h, path="general")
    assert np.any(general.loss_below_step > 0)
    for kwargs in ({"path": "auto"}, {"path": "fixed_pattern"}):
        got = _simulate(params, data, h, **kwargs)
        np.testing.assert_array_equal(got.loss_below_step, general.loss_below_step)
        np.testing.assert_array_equal(got.stop_step, general.stop_step)


def test_linear_threshold_is_that_of_classify(width8):
    """L_lin, now computed at placement, has the values `classify` computes."""
    params, data, h = width8
    result = _simulate(params, data, h)
    threshold, _ = classify(params, result.params, data, jnp.asarray(result.final_loss))
    np.testing.assert_array_equal(result.linear_threshold, np.asarray(threshold))


def test_adam_equals_a_direct_loop(width8):
    params, data, h = width8  # the runs of the GD tests: no new draw to compile
    h = np.asarray(h) * 0.1
    result = _simulate(params, data, h, optimizer="adam")
    want, _ = _direct(params, data, h, optax.adam, CHECK_EVERY * MAX_CHECKS)
    np.testing.assert_array_equal(result.loss_below_step, want)
    assert np.any(want > 0)


@functools.partial(jax.jit, static_argnames=("steps", "optimizer"))
def _direct_sgd_events(params, data, h, key, *, steps, optimizer):
    """One SGD run step by step: a step on `optim.minibatch`'s batch, then the loss on
    every point with the run's weights and the pattern on every point. (first step below
    (1 - ε) L_lin, first step whose pattern differs from the initial one), -1: none."""
    threshold = linear_threshold(params, data)
    pattern = activation_pattern(params, data.x)

    def step(p, s):
        batch = minibatch(optimizer, data, key, s)
        grads = loss_gradient(p, batch.x, batch.y, batch.weights)
        p = jax.tree.map(lambda v, g: v - h * g, p, grads)
        loss = weighted_loss(p, data.x, data.y, data.weights)
        return p, (
            loss < (1 - ESCAPE_MARGIN) * threshold,
            jnp.any(activation_pattern(p, data.x) != pattern),
        )

    _, hits = jax.lax.scan(step, params, jnp.arange(steps))
    return tuple(jnp.where(jnp.any(hit), jnp.argmax(hit) + 1, -1) for hit in hits)


@pytest.mark.parametrize("sampler", ["multinomial", "epoch"])
def test_sgd_steps_equal_a_direct_loop(width8, sampler):
    """The general path watches a step's parameters in the next step's pass over the
    points (a minibatch's gradient with the loss and pattern on every point; the epoch
    sampler in a pass of its own): the first step below L_lin and the first step whose
    pattern changed are those of a loop that checks after every step."""
    params, data, h = width8
    keys = jax.random.split(jax.random.key(11), np.shape(h)[0])
    optimizer = get_optimizer("sgd", sampler=sampler, batch_size=4)
    result = _simulate(params, data, h, optimizer=optimizer, key=keys, stop_on=())
    one = functools.partial(_direct_sgd_events, steps=CHECK_EVERY * MAX_CHECKS, optimizer=optimizer)
    runs = (params, data, h, keys)
    want = np.array([[int(v) for v in one(*_run(runs, i))] for i in range(len(keys))])
    np.testing.assert_array_equal(result.loss_below_step, want[:, 0])
    np.testing.assert_array_equal(result.pattern_change_step, want[:, 1])
    assert np.any(want > 0, axis=0).all() and np.any(want[:, 1] < 0), "some change, some not"


def test_star_equals_a_direct_loop():
    """2-D: eleven rays, He init, GD on the general path; the final classification too."""
    runs, n = 6, 4
    keys = jax.random.split(jax.random.key(5), 2 * runs)
    params = jax.vmap(lambda k: he_init(n, 2, key=k))(keys[:runs])
    x, y = star_points()
    weights = jax.vmap(lambda k: multinomial_weights(k, x.shape[0], 64, y.dtype))(keys[runs:])
    data = WeightedData(
        jnp.broadcast_to(x, (runs, *x.shape)), jnp.broadcast_to(y, (runs, *y.shape)), weights
    )
    h = np.full(runs, 0.3)
    result = _simulate(params, data, h, stop_on=())
    want, final = _direct(params, data, h, optax.sgd, CHECK_EVERY * MAX_CHECKS)
    np.testing.assert_array_equal(result.loss_below_step, want)
    assert np.any(want > 0)
    threshold, escaped = _escaped_in_numpy(params, final, data)
    np.testing.assert_allclose(result.linear_threshold, threshold, rtol=1e-9)
    np.testing.assert_array_equal(result.escaped, escaped)


@pytest.mark.parametrize("path", ["propagator", "fixed_pattern"])
def test_exact_fast_chunks_never_go_below(width8, path):
    """Chunk after chunk from the general path's state, the fast path's chunk from the same
    start: every run it does exactly (and that does not cross) stays above L_lin at every
    step of that chunk, as the general path's tracking shows. (Why a fast path need not
    track it: `paths.propagator`.)"""
    params, data, h = width8
    runs = engine.initial_state(params, h, data=data)
    within = np.asarray(runs.state.within_sides)
    train = jax.jit(
        lambda state, p: engine.PATHS[p](state, data, h, 0.0, 100, engine.GD),
        static_argnums=1,
    )
    zone = np.min(np.abs(np.asarray(data.x)), axis=-1)
    escaped_in_chunk = 0
    for _ in range(20):
        general = train(runs.state, "general")
        fast = train(runs.state, path)
        exact = np.asarray(fast.exact) & (np.asarray(fast.kink) < zone)
        if path == "fixed_pattern":
            exact &= within
        below = np.asarray(general.loss_below)
        assert exact.any(), "some runs are exact in every chunk (else nothing is checked)"
        assert np.all(below[exact] < 0)
        escaped_in_chunk += np.sum(below >= 0)
        runs = engine.Runs(general.state._replace(step=general.state.step + 100), runs.info)
    assert escaped_in_chunk > 0, "some chunk goes below L_lin (on the general path)"


def test_within_sides():
    """Initial groups that refine the two sides of the origin, or not: a kink between the
    data points on one side refines them; every neuron on at every point merges them, and
    L_lin is then one weighted affine fit to all four points (numpy's lstsq; by hand: the
    line y = 2.5, ½ · Σ_j ¼ · 1.5² = 1.125)."""
    x = jnp.array([-2.0, -1.0, 1.0, 2.0])
    data = WeightedData(x, x**2, jnp.full(4, 0.25))
    he = Params(jnp.array([1.0, -1.0]), jnp.zeros(2), jnp.ones(2), jnp.zeros(()))
    split = he._replace(b=jnp.array([-1.5, 0.0]))  # kink at 1.5: three groups
    merged = Params(jnp.array([1.0]), jnp.array([5.0]), jnp.ones(1), jnp.zeros(()))
    regime = jax.jit(linear_regime)  # as the engine calls it: one program
    assert bool(regime(he, data)[1]) and bool(regime(split, data)[1])
    threshold, within = regime(merged, data)
    assert not bool(within)
    one_group = np.zeros(4, int)
    want = _linear_threshold_in_numpy(one_group, *(np.asarray(v) for v in data))
    assert want == pytest.approx(1.125, rel=1e-12)
    assert float(threshold) == pytest.approx(want, rel=1e-12)
