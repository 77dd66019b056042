"""The O(1) propagator step: when it declares itself exact, and that the engine then agrees."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu import Params, Status, propagator, simulate, theory
from gdrelu.cells import Cell, initial_runs
from gdrelu.fastpath import side_moments
from gdrelu.reference import fixed_pattern_steps, propagator_steps
from gdrelu.spec import ExperimentSpec


@pytest.fixture(scope="module")
def runs():
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=16, seed=5)
    params, data, _ = initial_runs(Cell(8, 0.0, spec), np.arange(16))
    return params, data, theory.paper_step_size(params, data)


def _with_tiny_a(params, value=1e-7):
    """Neuron 0 of every run starts with a_0 = ±value: it soon changes side."""
    return params._replace(a=params.a.at[:, 0].set(value * jnp.sign(params.a[:, 0])))


@functools.partial(jax.jit, static_argnames="steps")  # one program, not one per operation
def _propagate(params, data, step, steps=200, start=None):
    """`steps` propagator steps; `start`: the parameters that define the regular neurons."""
    slope0, regular = jax.vmap(propagator.regular_neurons)(params if start is None else start)
    moments = jax.vmap(side_moments)(data)
    return propagator_steps(params, moments, step, 0.0, steps, slope0, regular)


@jax.jit
def _fixed_pattern(params, data, step):
    """200 GD steps of every run under its initial pattern (the reference's oracle)."""
    steps = lambda p, d, h: fixed_pattern_steps(p, side_moments(d), h, 0.0, 200)  # noqa: E731
    return jax.vmap(steps)(params, data, step)


def test_exact_runs_match_the_fixed_pattern_step(runs):
    params, data, step = runs
    got, kink, exact, _ = _propagate(params, data, step)
    ref, ref_kink, changed = _fixed_pattern(params, data, step)
    inside = np.asarray(ref_kink) < 1.0  # the pattern stayed fixed: both are GD
    exact, changed = np.asarray(exact), np.asarray(changed).any(axis=1)
    np.testing.assert_array_equal(exact[inside], ~changed[inside])
    same = inside & exact
    assert same.sum() >= 8
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g)[same], np.asarray(r)[same], rtol=1e-11, atol=1e-14)
    # the kinks of the two extreme neurons per side bound every other kink
    np.testing.assert_allclose(np.asarray(kink)[same], np.asarray(ref_kink)[same], rtol=1e-11)


def test_what_the_checks_read_after_a_chunk(runs):
    """After the steps, the checks read each side's Gram Σ_t = Σ_{i: sign a_i = t} θ_iθ_iᵀ
    of the trained neurons and the tracked neurons θ_i themselves: per side the neurons of
    least and greatest q_i = w_i/a_i at the start (no irregular ones here)."""
    params, data, step = runs
    got, _, exact, end = _propagate(params, data, step)
    exact = np.asarray(exact)
    assert exact.sum() >= 8
    theta = np.stack([np.asarray(v) for v in got[:3]], -1)[exact]  # (runs, n, 3)
    grams = np.asarray(end.grams)[exact]
    for side, on in enumerate((theta[..., 0] > 0, theta[..., 0] < 0)):
        want = np.einsum("rn,rni,rnj->rij", on, theta, theta)
        np.testing.assert_allclose(grams[:, side], want, rtol=1e-11, atol=1e-14)
    a0 = np.asarray(params.a)[exact]
    q = np.asarray(params.w)[exact] / a0
    real, witnesses = np.asarray(end.real)[exact], np.asarray(end.witnesses)[exact]
    for r in range(len(q)):
        picks = [f(np.where(on, q[r], np.nan)) for on in (a0[r] > 0, a0[r] < 0)
                 for f in (np.nanargmin, np.nanargmax)]  # fmt: skip
        mine = witnesses[r][real[r]]
        assert len(mine) == len(picks) == 4
        want = theta[r, picks]
        order = lambda v: v[np.lexsort(v.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(order(mine), order(want), rtol=1e-11, atol=1e-14)


def test_a_side_change_is_caught(runs):
    params, data, step = runs
    params = _with_tiny_a(params)
    _, _, exact, _ = _propagate(params, data, step)
    _, ref_kink, changed = _fixed_pattern(params, data, step)
    flipped_inside = np.asarray(changed[:, 0]) & (np.asarray(ref_kink) < 1.0)
    assert flipped_inside.any()  # the neuron changed side while its kink stayed inside
    assert not np.any(np.asarray(exact)[np.asarray(changed).any(axis=1)])


def test_too_many_irregular_neurons_is_not_exact(runs):
    params, data, step = runs
    params = params._replace(b=params.b.at[:, : propagator.IRREGULAR_CAPACITY + 1].set(1e-3))
    _, _, exact, _ = _propagate(params, data, step, steps=1)
    assert not np.any(exact)


@pytest.mark.parametrize("tweak", ["side_change", "biases"])
def test_engine_redoes_what_the_propagator_cannot(runs, tweak):
    params, data, step = runs
    if tweak == "side_change":
        params = _with_tiny_a(params)
    else:
        params = params._replace(b=jnp.full_like(params.b, 1e-3))
    # the cadence of tests/test_engine.py's `width8` runs (40 runs of width 8, every 200
    # steps): the same three chunk programs, from the suite's compilation cache
    kwargs = dict(check_every=200, max_checks=25)
    fast = simulate(params, data, step, path="propagator", **kwargs)
    general = simulate(params, data, step, path="general", **kwargs)
    assert Status.STUCK in fast.status
    np.testing.assert_array_equal(fast.status, general.status)
    np.testing.assert_array_equal(fast.stop_step, general.stop_step)
    for f, g in zip(fast.params, general.params, strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)


def test_regular_neurons_are_those_with_zero_bias():
    params = Params(
        a=jnp.array([1.0, -2.0, 0.5]),
        b=jnp.array([0.0, 0.0, 0.1]),
        w=jnp.array([2.0, 1.0, 1.0]),
        c=0.0,
    )
    slope0, regular = propagator.regular_neurons(params)
    np.testing.assert_array_equal(regular, [True, True, False])
    np.testing.assert_allclose(slope0, [2.0, -0.5, 0.0])


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_certificate_on_tracked_neurons_equals_all_neurons(runs):
    """The kink margins of the tracked neurons bound every other's (concavity in w/a)."""
    params, data, step = runs
    roots = jax.vmap(theory.moment_roots)(data)
    got, compared = params, []
    for _ in range(6):
        got, _, exact, end = _propagate(got, data, step, steps=2000, start=params)
        keep = np.asarray(exact)
        assert keep.sum() >= 8
        for scale in (0.5, 1.0, 1.9):
            tracked = jax.vmap(
                lambda e, c, d, h, r: theory.certificate(e.grams, c, d, h, r, e.witnesses, e.real)
            )(end, got.c, data, scale * step, roots)
            full = theory.provably_stuck(got, data, scale * step)
            np.testing.assert_array_equal(np.asarray(tracked)[keep], np.asarray(full)[keep])
            compared.append(np.asarray(full)[keep])
    seen = np.concatenate(compared)
    assert seen.any() and not seen.all()  # both outcomes were compared


def test_deferred_steps_refuses_what_it_cannot_step(runs):
    """The steps go through the runs in blocks that must divide the batch; the propagator
    trains only the named GD, SGD and heavy ball, and a stochastic optimizer's minibatches
    are drawn from its noise: each is refused, naming what is wrong, before anything runs."""
    from gdrelu.optim import get_optimizer

    params, data, step = runs  # 16 runs

    @jax.jit  # one program, not one per eager operation
    def start(params, data):
        state = propagator.deferred(params, *jax.vmap(propagator.regular_neurons)(params))
        return state, jax.vmap(side_moments)(data)

    args = (params, *start(params, data), step, 0.0, 10)
    with pytest.raises(ValueError, match=r"^16 runs do not split into blocks of 6$"):
        propagator.deferred_steps(*args, block=6)
    with pytest.raises(ValueError, match=r"^the propagator trains .*, not 'adam'$"):
        propagator.deferred_steps(*args, optimizer=get_optimizer("adam"))
    with pytest.raises(ValueError, match=r"^sampler 'multinomial' needs the minibatch noise$"):
        propagator.deferred_steps(*args, optimizer=get_optimizer("sgd"))
