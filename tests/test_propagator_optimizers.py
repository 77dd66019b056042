"""SGD and heavy ball on the O(1) propagator: the same runs as on the general path."""

import jax
import numpy as np
import pytest

from gdrelu import Status, propagator, simulate, theory
from gdrelu.cells import Cell, initial_runs
from gdrelu.engine import auto_path, auto_plan, simulation
from gdrelu.engine.chunk import TRACE_COUNT, exact_chunk
from gdrelu.engine.paths import choose_path
from gdrelu.optim import get_optimizer
from gdrelu.spec import ExperimentSpec

RUNS, WIDTH, CHECK_EVERY = 32, 8, 50


@pytest.fixture(scope="module")
def runs():
    spec = ExperimentSpec(widths=(WIDTH,), deltas=(0.0,), runs=RUNS, seed=11)
    params, data, _ = initial_runs(Cell(WIDTH, 0.0, spec), np.arange(RUNS))
    keys = jax.random.split(jax.random.key(4), RUNS)
    return params, data, theory.paper_step_size(params, data), keys


def _both_paths(runs, optimizer, sampler, factor=1.0, **kwargs):
    """Both paths on `runs`, with `factor` times the paper's step size."""
    params, data, step, keys = runs
    step = factor * step
    kwargs = dict(
        optimizer=optimizer,
        sampler=sampler,
        key=keys if sampler else None,
        check_every=CHECK_EVERY,
        max_checks=12,
        **kwargs,
    )
    return [simulate(params, data, step, path=path, **kwargs) for path in ("propagator", "general")]


def _assert_same_runs(fast, general):
    """Statuses, stop steps and the per-step detectors identical, parameters to 1e-10."""
    for field in ("status", "stop_step", "pattern_change_step", "loss_below_step"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(general, field), field)
    for mine, theirs in zip(fast.params, general.params, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.max_kink, general.max_kink, rtol=1e-10)
    np.testing.assert_allclose(fast.final_loss, general.final_loss, rtol=1e-10, atol=1e-14)


# (optimizer, sampler, step size factor: heavy ball with μ = 0.9 moves like GD with 10 h)
# -m slow: the epoch sampler's draws are checked in tests/test_optim.py, full-batch heavy
# ball by test_side_changes_are_redone, and SGD's multinomial draws on both paths by
# test_runs_that_cross_and_go_on_equal_the_general_path
CASES = [
    pytest.param("sgd", "multinomial", 1.0, marks=pytest.mark.slow),
    pytest.param("sgd", "epoch", 1.0, marks=pytest.mark.slow),
    pytest.param("momentum", None, 0.1, marks=pytest.mark.slow),
    ("momentum", "multinomial", 0.1),
]


@pytest.mark.parametrize(("optimizer", "sampler", "factor"), CASES)
def test_crossing_rule_runs_equal_the_general_path(runs, optimizer, sampler, factor):
    """With the paper's crossing rule: some runs cross (redone on the general path), the
    others train on the propagator to the end; every run as on the general path."""
    batch = {"batch_size": 2} if sampler == "epoch" else {}
    fast, general = _both_paths(runs, optimizer, sampler, factor, stop_on=("crossed",), **batch)
    _assert_same_runs(fast, general)
    assert {Status.CROSSED, Status.UNFINISHED} <= set(fast.status.tolist())


@pytest.mark.parametrize(
    ("optimizer", "sampler"),
    [("sgd", "multinomial"), pytest.param("momentum", None, marks=pytest.mark.slow)],
)
def test_runs_that_cross_and_go_on_equal_the_general_path(runs, optimizer, sampler, monkeypatch):
    """Without a stop rule a crossed run keeps training: its neurons whose pattern changed
    leave their side's plane (`RunState.regular`), so it moves to its batch's general
    blocks, which the propagator leaves untrained (they are trained as redos), and stays
    there while its kinks are in the data; the other runs stay on the propagator. Every
    run ends as on the general path."""
    seen = []

    def spy(start, inputs, scalars, settings, layout):
        if settings.path == "propagator":
            lanes = np.asarray(layout.num_blocks)[:, :2] * layout.blocking.block  # (devices, 2)
            seen.append((layout.slots.copy(), layout.general.copy(), lanes))
        return exact_chunk(start, inputs, scalars, settings, layout)

    monkeypatch.setattr(simulation, "exact_chunk", spy)
    factor = 0.1 if optimizer == "momentum" else 1.0
    fast, general = _both_paths(runs, optimizer, sampler, factor, stop_on=())
    _assert_same_runs(fast, general)
    assert np.any(fast.pattern_change_step >= 0) and np.any(fast.pattern_change_step < 0)
    moved = 0
    for k, (slots, general_lanes, lanes) in enumerate(seen):
        real = slots >= 0
        changed = fast.pattern_change_step[slots[real]]
        before = (changed >= 0) & (changed < CHECK_EVERY * k)  # in chunk < k (-1: never)
        # general lanes hold only runs whose pattern changed; each device's first
        # num_blocks[d, 0] blocks hold the others
        assert not np.any(general_lanes[real] & ~before)
        moved += np.sum(general_lanes[real])
        devices = len(lanes)
        within = np.arange(slots.size).reshape(devices, -1) % (slots.size // devices)
        on_propagator = (within < lanes[:, :1]).ravel()
        np.testing.assert_array_equal(on_propagator[real], ~general_lanes[real])
    assert moved > 0


def test_side_changes_are_redone(runs):
    """Neuron 0 of every run starts with a tiny a_0: it soon changes side, which the
    propagator cannot follow; heavy ball's velocity carries it across the origin."""
    params, data, step, keys = runs
    tiny = params._replace(a=params.a.at[:, 0].set(1e-7 * np.sign(params.a[:, 0])))
    fast, general = _both_paths(
        (tiny, data, step, keys), "momentum", None, 0.1, stop_on=("crossed",)
    )
    _assert_same_runs(fast, general)
    changed = np.sign(fast.params.a[:, 0]) != np.sign(tiny.a[:, 0])
    assert changed.any()


def test_one_compile_for_every_step_size_and_key(runs):
    """Step sizes and keys are data: a second batch with others reuses the chunk program.
    (The settings of test_runs_that_cross_and_go_on_equal_the_general_path[sgd-multinomial]:
    the suite compiles their programs once.)"""
    params, data, step, keys = runs
    kwargs = dict(optimizer="sgd", check_every=50, max_checks=2, stop_on=())
    simulate(params, data, step, key=keys, path="propagator", **kwargs)
    before = TRACE_COUNT["propagator"]
    other_keys = jax.random.split(jax.random.key(5), RUNS)
    simulate(params, data, 0.5 * step, key=other_keys, path="propagator", **kwargs)
    assert TRACE_COUNT["propagator"] == before


def test_auto_path_takes_the_propagator_where_it_is_exact():
    assert auto_path("sgd", stop_on=("crossed",)) == "propagator"
    assert auto_path("momentum", stop_on=("crossed",)) == "propagator"
    assert auto_path("sgd", sampler="epoch", stop_on=("crossed",)) == "propagator"
    assert auto_plan() == ("propagator", False)  # GD's default rules include the crossing
    # no crossing rule: the runs that crossed go on in general blocks
    assert auto_plan("sgd") == ("propagator", True)
    assert auto_plan(stop_on=("stuck",)) == ("propagator", True)
    assert auto_plan(stop_on=("crossed", "stuck")) == ("propagator", False)
    assert auto_path(stop_on=("crossed",), parameterization="ntk") == "general"
    assert auto_path("adam", stop_on=("crossed",)) == "general"  # per-coordinate, nonlinear
    assert auto_path("sgd", stop_on=("crossed",), held_out=True) == "general"
    assert auto_path("sgd", stop_on=("crossed",), one_dimensional=False) == "general"

    def sgd(step_size):  # a user's transformation is not the propagator's, whatever its name
        return propagator.GD.transformation(step_size)

    assert auto_path(sgd, stop_on=("crossed",)) == "general"


def test_an_explicit_path_is_refused_where_it_is_not_exact():
    """`choose_path` directly (no program compiled): the fixed-pattern path takes any
    optimizer on 1-D data in the standard parameterization; the propagator only the named
    GD, SGD and heavy ball there, without held-out points; no other name is a path."""
    gd, adam = get_optimizer("gd"), get_optimizer("adam")
    custom = get_optimizer(lambda h: propagator.GD.transformation(h))
    rules = ("crossed",)
    # (optimizer, 1-D input, standard parameterization, held-out points)
    assert choose_path("fixed_pattern", rules, adam, True, True, True) == "fixed_pattern"
    assert choose_path("propagator", (), gd, True, True, False) == "propagator"  # asked for
    unmet = {(False, True): "1-D input", (True, False): "the standard parameterization"}
    for (one_dimensional, standard), needed in unmet.items():
        with pytest.raises(ValueError, match=r"^path='fixed_pattern' needs 1-D input"):
            choose_path("fixed_pattern", rules, adam, one_dimensional, standard, False)
        with pytest.raises(ValueError, match=rf"^path='propagator' needs {needed}$"):
            choose_path("propagator", rules, gd, one_dimensional, standard, False)
    with pytest.raises(ValueError, match=r"^path='propagator' needs .* \(not 'adam'\)"):
        choose_path("propagator", rules, adam, True, True, False)
    with pytest.raises(ValueError, match=r"^path='propagator' needs .* \(not '<lambda>'\)"):
        choose_path("propagator", rules, custom, True, True, False)
    with pytest.raises(ValueError, match=r"^path='propagator' needs no held-out points$"):
        choose_path("propagator", rules, gd, True, True, True)  # held-out points
    for path in ("Propagator", "fixed-pattern", ""):
        with pytest.raises(ValueError, match=r"^path must be 'auto' or one of \['fixed_pattern'"):
            choose_path(path, rules, gd, True, True, False)


def test_the_pallas_kernel_is_refused_for_other_optimizers(runs):
    params, data, step, _ = runs
    with pytest.raises(ValueError, match="kernel 'interpret' trains full-batch GD only"):
        simulate(
            params, data, step, optimizer="momentum", stop_on=("crossed",), kernel="interpret",
            check_every=5, max_checks=1,
        )  # fmt: skip


def test_a_neuron_whose_pattern_changes_leaves_its_plane(runs):
    """The general path marks a neuron irregular once its activation pattern on the data
    changes, even on its own side of the origin: after that its step is not its side's
    linear map, so the propagator must track it (or give up), not bound it by the others.
    Neuron 0 starts with a tiny a_0 and a large w_0: its kink sweeps through the data."""
    from gdrelu.engine import PATHS, initial_state
    from gdrelu.optim import get_optimizer

    params, data, step, _ = runs
    sign = np.sign(params.a[:, 0])
    params = params._replace(a=params.a.at[:, 0].set(1e-3 * sign), w=params.w.at[:, 0].set(3.0))
    gd = get_optimizer("gd")
    start = initial_state(params, step, optimizer=gd, data=data).state
    assert np.all(start.regular[:, 0])
    trained = jax.jit(PATHS["general"], static_argnums=(4, 5))(start, data, step, 0.0, 20, gd)
    plus = trained.state.params.a[:, 0] > 0
    same_side = plus == (sign > 0)
    kink = -trained.state.params.b[:, 0] / trained.state.params.a[:, 0]
    passed = np.abs(kink) >= np.min(np.abs(data.x), axis=1)  # past some data point now
    assert np.any(same_side & passed)
    assert not np.any(trained.state.regular[:, 0][same_side & passed])


def test_a_steps_minibatch_moments_are_those_of_its_counts():
    """The propagator's minibatch moments, read from the lanes' draw table and the step's
    words, against Σ_j (c_j / B)(1, x_j, x_j², y_j, x_j y_j) on each side, summed point by
    point from counts drawn one by one (targets and weights that are not exact in floats)."""
    import jax.numpy as jnp
    from conftest import multinomial_counts_by_hand

    from gdrelu.data import WeightedData
    from gdrelu.optim import get_optimizer

    lanes, draws = 8, 16
    rng = np.random.default_rng(3)
    x = np.tile(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), (lanes, 1))
    y = rng.normal(size=x.shape) + 0.1
    weights = rng.random(x.shape) * (rng.random(x.shape) < 0.8) + np.eye(lanes, 6) / 3
    words = rng.integers(0, 2**32, (draws, lanes), np.uint64).astype(np.uint32)
    sgd = get_optimizer("sgd", sampler="multinomial", batch_size=draws)

    @jax.jit  # one program, not one per eager operation
    def moments(data, words):
        table = jax.vmap(propagator.draw_table, out_axes=-1)(data)
        return propagator._minibatch_moments(sgd, None, table, 0, words)

    got = [np.asarray(f) for f in moments(WeightedData(x, y, weights), jnp.asarray(words))]
    for lane in range(lanes):
        q = multinomial_counts_by_hand(words[:, lane], weights[lane]) / draws
        xs, ys = x[lane], y[lane]
        for side, on in enumerate((xs > 0, xs < 0)):
            terms = q * on * np.stack([np.ones_like(xs), xs, xs * xs, ys, xs * ys])
            want, scale = terms.sum(1), np.abs(terms).sum(1)
            mine = np.array([field[side, lane] for field in got])
            np.testing.assert_array_less(np.abs(mine - want), 1e-14 * scale + 1e-300)


def test_only_full_batch_gd_takes_the_pallas_kernel():
    """The Pallas kernel (and its interpret mode) takes full-batch GD's steps only: SGD's
    minibatches of either sampler, heavy ball and Adam are refused, naming the optimizer
    and its minibatches; XLA's loop takes them all."""
    propagator.check_kernel_trains("interpret", get_optimizer("gd"))
    refused = [
        (get_optimizer("sgd"), "'sgd' with multinomial minibatches"),
        (get_optimizer("sgd", sampler="epoch"), "'sgd' with epoch minibatches"),
        (get_optimizer("momentum"), "'momentum'"),
        (get_optimizer("adam"), "'adam'"),
    ]
    for optimizer, what in refused:
        assert propagator.kernel_trains("xla", optimizer)
        for kernel in ("pallas", "interpret"):
            assert not propagator.kernel_trains(kernel, optimizer)
            message = rf"^kernel '{kernel}' trains full-batch GD only, not {what}$"
            with pytest.raises(ValueError, match=message):
                propagator.check_kernel_trains(kernel, optimizer)
