"""Detectors of the linear regime: L_lin against the reference's per-side lines and direct
fits, pattern groups against a direct grouping, and agreement with the GD certificate
(on the stored Monte Carlo runs: tests/test_golden.py, next to the test of their
statuses, so that the suite simulates them once)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import batch_sizes, golden_case

from gdrelu import Params, Status, WeightedData, simulate
from gdrelu.detectors import (
    batched_map,
    classify,
    escaped,
    linear_regime,
    linear_threshold,
    pattern_groups,
    same_groups,
)
from gdrelu.model import activation_pattern

RTOL = 1e-10  # float64 least squares on six points (pinv vs closed-form lines)


def _reference_lines_loss(case):
    """½ Σ_j p_j (y_j - line(x_j))² of a golden case's per-side lines, vopt = (slope,
    intercept) for x > 0, then x < 0 (../shared/golden/README.md)."""
    x, y, p = case["x"], case["y"], case["xw"]
    slope_pos, icpt_pos, slope_neg, icpt_neg = np.ravel(case["vopt"])
    lines = np.where(x > 0, slope_pos * x + icpt_pos, slope_neg * x + icpt_neg)
    return 0.5 * np.sum(p * (y - lines) ** 2)


@pytest.mark.parametrize("i", range(5))
def test_linear_threshold_is_the_loss_of_the_reference_per_side_lines(trajectories, i):
    """L_lin is the loss of the reference's per-side regression lines (`vopt`)."""
    case = golden_case(trajectories, i)
    params = Params(*(case[f"{name}0"] for name in "abwc"))
    got = linear_threshold(params, WeightedData(case["x"], case["y"], case["xw"]))
    assert float(got) == pytest.approx(_reference_lines_loss(case), rel=RTOL)


def _star(rays=11, delta=0.1):
    """PAPER.md's star: rays at 2πi/k, radii 1-δ, 1, 1+δ, targets (1, -2, 1) on every ray."""
    angles = 2 * np.pi * np.arange(rays) / rays
    radii = np.array([1 - delta, 1.0, 1 + delta])
    u = np.stack([np.cos(angles), np.sin(angles)], 1)
    x = (u[:, None, :] * radii[None, :, None]).reshape(-1, 2)
    return x, np.tile([1.0, -2.0, 1.0], rays), radii


def test_star_threshold_is_the_per_ray_lines_in_radius():
    """Zero biases: every ray is one pattern group, and L_lin = ½ Σ_rays weighted LSQ
    error of y ≈ α|x| + β on the ray (PAPER.md, star data)."""
    x, y, radii = _star()
    rng = np.random.default_rng(0)
    width = 64
    params = Params(rng.normal(size=(2, width)), np.zeros(width), rng.normal(size=width), 0.0)
    p = rng.dirichlet(np.ones(y.size))
    want = 0.0
    for ray in range(11):
        sl = slice(3 * ray, 3 * ray + 3)
        design = np.stack([radii, np.ones(3)], 1) * np.sqrt(p[sl])[:, None]
        coef, *_ = np.linalg.lstsq(design, y[sl] * np.sqrt(p[sl]), rcond=None)
        want += 0.5 * np.sum(p[sl] * (y[sl] - (coef[0] * radii + coef[1])) ** 2)
    groups = np.asarray(pattern_groups(params, jnp.asarray(x)))
    assert len(set(groups)) == 11 and all(
        len(set(groups[3 * r : 3 * r + 3])) == 1 for r in range(11)
    )
    got = linear_threshold(params, WeightedData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(p)))
    assert float(got) == pytest.approx(want, rel=RTOL)


@pytest.mark.parametrize("width", [3, 40, 200])  # one, two and seven words of packed bits
def test_pattern_groups_match_a_direct_grouping(width):
    rng = np.random.default_rng(width)
    x = rng.integers(-2, 3, size=(30, 2)).astype(float)  # repeated points share groups
    params = Params(rng.normal(size=(2, width)), rng.normal(size=width), np.ones(width), 0.0)
    groups = np.asarray(jax.jit(pattern_groups)(params, jnp.asarray(x)))
    pattern = np.asarray(activation_pattern(params, jnp.asarray(x)))
    for j, k in itertools.combinations(range(30), 2):
        assert (groups[j] == groups[k]) == np.array_equal(pattern[j], pattern[k])


def test_classify_compiles_to_a_program_whose_size_does_not_grow_with_the_width():
    """Grouping points by pattern sorts word by word in a loop: one sort operand per 32
    neurons made width 10⁶ a 31 250-operand sort that took minutes and 9 GB to compile."""
    from gdrelu.detectors import classify

    def lines(width):
        params = Params(*(jnp.ones((2, width)) for _ in range(3)), jnp.zeros(2))
        data = WeightedData(*(jnp.ones((2, 6)) for _ in range(3)))
        return classify.lower(params, params, data, jnp.zeros(2)).as_text().count("\n")

    assert lines(32 * 1000) == lines(64)


def test_same_groups_ignores_relabelling_but_not_splitting():
    x = jnp.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    one = Params(jnp.array([1.0, -1.0]), jnp.zeros(2), jnp.ones(2), 0.0)
    flipped = Params(jnp.array([-1.0, 1.0]), jnp.zeros(2), jnp.ones(2), 0.0)  # sides swap
    moved = Params(jnp.array([1.0, -1.0]), jnp.array([-1.5, 0.0]), jnp.ones(2), 0.0)
    same = jax.jit(same_groups)  # as the engine calls it: one program
    assert bool(same(one, flipped, x))
    assert not bool(same(one, moved, x))  # kink at 1.5 splits {1, 2, 3}


def test_a_run_that_crossed_and_came_back_is_stuck(trajectories):
    """Golden case 2 crosses (max |b/a| = 1.23) but by step 60 000 its kinks are back
    inside and its loss is the reference's per-side regression loss: stuck, not escaped."""
    case = golden_case(trajectories, 2)
    one = lambda v: np.expand_dims(v, 0)  # noqa: E731
    data = WeightedData(one(case["x"]), one(case["y"]), one(case["xw"]))
    params = Params(*(one(case[f"{n}0"]) for n in "abwc"))
    result = simulate(params, data, one(case["lr"]), check_every=1000, max_checks=60, stop_on=())
    assert result.status[0] == Status.UNFINISHED and result.stop_step[0] == 60_000
    assert result.max_kink[0] > 1.0 and result.pattern_change_step[0] > 0
    assert result.final_loss[0] == pytest.approx(_reference_lines_loss(case), rel=1e-9)
    assert not result.escaped[0]


@pytest.mark.parametrize(
    "runs", [1, 70, *(pytest.param(r, marks=pytest.mark.slow) for r in (63, 64, 200))]
)
def test_batched_map_is_vmap_with_one_copy_of_the_function(runs):
    """Run by run what `vmap` gives (to rounding: XLA's loops over 64 lanes and over all
    of them may round a sum differently), whatever the batches' remainder, and the traced
    program holds the function once (`jax.lax.map`'s remainder batch was a second copy)."""
    rng = np.random.default_rng(runs)
    params = Params(*(rng.standard_normal((runs, 8)) for _ in range(3)), rng.standard_normal(runs))
    x = np.tile(np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]), (runs, 1))
    data = WeightedData(x, rng.standard_normal((runs, 6)), rng.uniform(0.5, 1.5, (runs, 6)))
    args = (params, data)
    # one program each, not one per operation
    got = jax.jit(lambda a: batched_map(linear_regime, a))(args)
    want = jax.jit(jax.vmap(linear_regime))(*args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-14)
    np.testing.assert_array_equal(got[1], want[1])
    mapped = str(jax.make_jaxpr(lambda a: batched_map(linear_regime, a))(args))
    plain = str(jax.make_jaxpr(lambda a: jax.vmap(linear_regime)(*a))(args))
    assert mapped.count(" sort[") == plain.count(" sort[") > 0  # nested jaxprs printed too


# The paper's six points, uniform weights: the best line on each side is y = 0 (its points
# have mean 0 and zero covariance with x), so L_lin = ½ · (1/6) · Σ_j y_j² = 1 by hand.
SIX_X = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
SIX_Y = np.array([-1.0, 2.0, -1.0, 1.0, -2.0, 1.0])
SIX_L_LIN = 1.0
# Neurons on for x ≥ 0, x ≤ 0 and x ≥ -0.2: the initial groups are the two sides.
START = Params(
    np.array([1.0, -1.0, 0.5]), np.array([0.0, 0.0, 0.1]), np.array([0.5, -0.5, 0.2]), 0.0
)
SIDES = {(-3.0, -2.0, -1.0), (1.0, 2.0, 3.0)}


def _by_hand(params):
    """(pattern z_ji ≥ 0, its groups as sets of points, ½ Σ_j p_j (f(x_j) - y_j)²)."""
    on = SIX_X[:, None] * params.a + params.b >= 0
    groups = {tuple(SIX_X[(on == row).all(1)]) for row in on}
    hidden = np.maximum(SIX_X[:, None] * params.a + params.b, 0.0)
    loss = 0.5 * np.mean((params.c + hidden @ params.w - SIX_Y) ** 2)
    return on, groups, loss


def test_escaped_on_hand_built_networks():
    """docs/theory.md ("Outcome of a run"): escaped iff the final loss is below
    (1 - 10⁻⁶) L_lin or the final pattern groups the points differently from the initial
    one. A kink that crossed and came back, or a neuron whose a_i passes through 0, keeps
    the groups: stuck. (A network with the initial groups is affine on each and cannot go
    below L_lin: the losses below it are given by hand, to test the rule.)"""
    stayed = START._replace(b=np.array([-1.5, 0.0, 0.1]))  # kink at 1.5 splits {1, 2, 3}
    merged = START._replace(b=np.array([5.0, 5.0, 5.0]))  # every neuron on everywhere
    back = START._replace(a=np.array([1.2, -0.8, 0.5]), b=np.array([-0.5, 0.3, 0.1]))
    flipped = START._replace(a=np.array([1.0, -1.0, -0.5]))  # neuron 3: on for x ≤ 0.2
    same = START._replace(w=2 * START.w)  # the initial pattern
    pattern, _, _ = _by_hand(START)
    assert _by_hand(stayed)[1] == {(-3.0, -2.0, -1.0), (1.0,), (2.0, 3.0)}
    assert _by_hand(merged)[1] == {tuple(SIX_X)}
    for final in (back, flipped, same):
        assert _by_hand(final)[1] == SIDES == _by_hand(START)[1]
    assert np.array_equal(_by_hand(back)[0], pattern)  # every kink back inside (-1, 1)
    assert not np.array_equal(_by_hand(flipped)[0], pattern)  # neuron 3 changed side
    cases = {  # name: (final network, its training loss, escaped)
        "crossed and stayed": (stayed, _by_hand(stayed)[2], True),
        "merged the sides": (merged, _by_hand(merged)[2], True),
        "below L_lin": (same, (1 - 2e-6) * SIX_L_LIN, True),
        "within the margin": (same, (1 - 0.5e-6) * SIX_L_LIN, False),
        "crossed and came back": (back, _by_hand(back)[2], False),
        "a_i through 0": (flipped, _by_hand(flipped)[2], False),
    }
    by_hand = {"below L_lin", "within the margin"}  # the others: only the groups decide
    assert all(loss > SIX_L_LIN for name, (_, loss, _) in cases.items() if name not in by_hand)
    data = WeightedData(SIX_X, SIX_Y, np.full(6, 1 / 6))
    one = jax.jit(escaped)
    for name, (final, loss, want) in cases.items():
        assert bool(one(START, final, data, loss, SIX_L_LIN)) is want, name
    # "below (1 - 10⁻⁶) L_lin": a loss of exactly (1 - 10⁻⁶) L_lin is not below it
    assert not bool(one(START, same, data, (1 - 1e-6) * SIX_L_LIN, SIX_L_LIN))
    # batched, with L_lin computed by `classify` from the initial networks
    stack = lambda trees: jax.tree.map(lambda *v: np.stack(v), *trees)  # noqa: E731
    finals, losses, want = zip(*cases.values(), strict=True)
    runs = len(cases)
    threshold, flags = classify(
        stack([START] * runs), stack(finals), stack([data] * runs), np.array(losses)
    )
    np.testing.assert_allclose(threshold, SIX_L_LIN, rtol=1e-12)
    assert np.asarray(flags).tolist() == list(want)
    # a threshold given is taken as L_lin, not recomputed: with L_lin = 0 no loss is
    # below it, and only the runs whose groups changed escaped
    given, flags = classify(
        stack([START] * runs), stack(finals), stack([data] * runs), np.array(losses),
        threshold=np.zeros(runs),
    )  # fmt: skip
    assert np.asarray(given).tolist() == [0.0] * runs
    regrouped = ("crossed and stayed", "merged the sides")
    assert np.asarray(flags).tolist() == [name in regrouped for name in cases]


def test_linear_thresholds_do_not_depend_on_how_many_runs_are_computed_together():
    """Each run's L_lin is computed in a batch of the same size whatever the run count: a
    smaller batch was another program, whose pinv rounded otherwise (49 of 64 values moved
    in their last bits on 2-D radial data when the memory budget split the runs)."""
    from gdrelu import ExperimentSpec
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.engine.state import _linear_regime
    from gdrelu.model import Scaling

    spec = ExperimentSpec(data="radial", dim=2, num_train=64, num_heldout=64, widths=(8,),
                          deltas=(0.0,), runs=100, step_size="ntk", optimizer="adam")  # fmt: skip
    params, data, _ = initial_runs(Cell(8, 0.0, spec), np.arange(100))
    scaling = Scaling(*(jnp.ones(100, params.c.dtype),) * 2)
    regime = jax.jit(_linear_regime)  # as `initial_state` calls it: inside one program
    whole = np.asarray(regime(params, data, scaling)["linear_threshold"])
    part = jax.tree.map(lambda v: np.asarray(v)[3:7], (params, data, scaling))  # < one batch
    np.testing.assert_array_equal(regime(*part)["linear_threshold"], whole[3:7])


def test_a_batch_of_runs_holds_at_most_batch_elements_pattern_entries():
    """`batched_map`: `BATCH_RUNS` runs a batch or fewer, so that a batch holds at most
    `BATCH_ELEMENTS` = 2²² pattern entries (m·n per run). 6 points and 8 neurons: 64 runs a
    batch, 100 runs in 2; 2¹⁶ neurons, 393 216 entries a run: 10 runs a batch (11 would
    be 4 325 376 > 2²²), 25 runs in 3; 2¹⁹ neurons: one run a batch. Traced from shapes
    only: nothing is allocated or compiled."""
    from gdrelu.detectors import BATCH_ELEMENTS, BATCH_RUNS

    assert (BATCH_RUNS, BATCH_ELEMENTS) == (64, 2**22)

    def batches(runs, width):
        shape = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)  # noqa: E731
        params = Params(*(shape(runs, width),) * 3, shape(runs))
        data = WeightedData(*(shape(runs, 6),) * 3)
        fn = lambda p, d: jnp.sum(p.b) + jnp.sum(d.y)  # noqa: E731
        jaxpr = jax.make_jaxpr(lambda a: batched_map(fn, a))((params, data))
        (scan,) = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]
        return scan.params["length"]

    assert batches(100, 8) == 2
    assert batches(25, 2**16) == 3
    assert batches(3, 2**19) == 3


def test_classify_groups_by_the_scaled_preactivations():
    """`classify` with (s_a, s_w) = (0.5, 1): the pattern is s_a a_i x + b_i ≥ 0, so a = 1,
    b = -1.5 has its kink at 3, not 1.5: groups {-3, -2, -1, 1, 2} and {3}, and L_lin is
    the weighted LSQ error of one line through the five (numpy), the point alone fitting
    exactly."""
    from gdrelu.model import Scaling

    net = Params(np.array([[1.0]]), np.array([[-1.5]]), np.array([[1.0]]), np.zeros(1))
    data = WeightedData(SIX_X[None], SIX_Y[None], np.full((1, 6), 1 / 6))
    design = np.stack([SIX_X[:5], np.ones(5)], 1)
    coef, *_ = np.linalg.lstsq(design, SIX_Y[:5], rcond=None)
    want = 0.5 * np.sum((SIX_Y[:5] - design @ coef) ** 2) / 6
    scaling = Scaling(np.array([0.5]), np.array([1.0]))
    threshold, flags = classify(net, net, data, np.array([want]), scaling)
    assert float(threshold[0]) == pytest.approx(want, rel=1e-12)
    assert not bool(flags[0])  # the same network, its loss at L_lin: stuck


def test_a_kink_past_a_point_of_zero_weight_is_an_escape():
    """docs/theory.md, "Outcome of a run": the final rule groups all m points, those of
    weight p_j = 0 included, as the crossing rule reads min_j |x_j|. A kink moved from 0.5
    to 1.5 crosses only x = 1, of weight 0 here: escaped; the same move on the points
    without x = 1 is not (a threshold of 0: the loss rule never fires)."""
    initial = Params(np.ones((2, 1)), np.full((2, 1), -0.5), np.ones((2, 1)), np.zeros(2))
    final = initial._replace(b=np.full((2, 1), -1.5))
    weights = np.array([[0.2, 0.2, 0.2, 0.0, 0.2, 0.2], [0.2, 0.2, 0.2, 0.0, 0.2, 0.2]])
    x = np.stack([SIX_X, np.where(SIX_X == 1.0, -1.0, SIX_X)])  # run 1: x = 1 moved to -1
    data = WeightedData(x, np.tile(SIX_Y, (2, 1)), weights)
    _, flags = classify(initial, final, data, np.ones(2), threshold=np.zeros(2))
    assert np.asarray(flags).tolist() == [True, False]


def test_the_final_classification_takes_a_few_runs_at_a_time_on_many_points(monkeypatch):
    """The classification after training built each run's (m, n) patterns for 64 runs at
    once whatever m: d-dim data of 5000 points and width 512 peaked at 3.2 GB under a
    0.4 GB budget. A call now holds at most DRAW_ENTRIES // (m·n) runs (here made 2 by a
    small DRAW_ENTRIES), and L_lin and the classification are those of whole batches (on
    made-up final networks and losses: nothing trains)."""
    from gdrelu import batched
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.engine import simulation
    from gdrelu.model import STANDARD
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(
        data="radial", dim=2, num_train=40, widths=(8,), deltas=(0.0,), step_size=0.05
    )
    params, data, _ = jax.device_get(initial_runs(Cell(8, 0.0, spec), np.arange(5)))
    outcomes = simulation._Outcomes.empty(params)
    moved = np.random.default_rng(0).normal(size=params.b.shape)
    for out, leaf in zip(outcomes.params, params, strict=True):
        out[...] = leaf
    outcomes.params[1][...] += moved * (np.arange(5) % 2)[:, None]  # b moves in runs 1, 3
    outcomes.reported["loss"][...] = np.arange(5) * 0.1

    def result():
        return simulation._result(outcomes, params, data, STANDARD, (), None, False)

    whole = result()
    calls = batch_sizes(monkeypatch, simulation, "classify")
    monkeypatch.setattr(batched, "DRAW_ENTRIES", 2 * 40 * 8)
    few = result()
    assert calls == [2, 2, 2]
    assert 0 < whole.escaped.sum() < 5
    for field in ("escaped", "linear_threshold"):
        np.testing.assert_array_equal(getattr(few, field), getattr(whole, field), err_msg=field)
