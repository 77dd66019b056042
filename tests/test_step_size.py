"""Step-size rules through the spec, against direct computations on the initial runs."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import batch_sizes

from gdrelu import ExperimentSpec, run_experiment
from gdrelu.cells import Cell, initial_runs
from gdrelu.step_size import initial_step_sizes


@pytest.mark.parametrize(
    ("data", "width", "runs", "training"),
    [
        # 2-D inputs (slow: compiles the star programs for one sum of squares)
        pytest.param("star", 16, 3, dict(check_every=10, stop_on=()), marks=pytest.mark.slow),
        # the draws and programs of tests/test_engine.py's `width8` (40 runs of width 8,
        # checks every 200 steps; the step sizes are data): from the suite's compilation
        # cache when that module compiled them first
        ("six-points", 8, 40, dict(check_every=200)),
    ],
    ids=["star-16", "six-points-8"],
)
def test_param_norm_rule_is_the_factor_over_the_squared_parameter_norm(data, width, runs, training):
    """`--step-size param-norm --step-factor 2`: h = 2 / Σ (a² + b² + w² + c²) of each run's
    initial network, as the paper's star code applied (its Gram's λ_max twice per epoch)."""
    spec = ExperimentSpec(
        data=data, widths=(width,), deltas=(0.0,), runs=runs, step_size="param-norm",
        step_factor=2.0, max_checks=1, **training,
    )  # fmt: skip
    (cell_result,) = run_experiment(spec)
    params, _, _ = jax.device_get(initial_runs(Cell(width, 0.0, spec), np.arange(runs)))
    squares = sum(np.sum(np.square(leaf).reshape(runs, -1), axis=1) for leaf in params)
    np.testing.assert_allclose(cell_result.step_size, 2.0 / squares, rtol=1e-13)


@pytest.mark.parametrize("rule", ["paper", "ntk"])
def test_a_runs_step_size_does_not_depend_on_its_batch(rule):
    """Each run's h, bit for bit, in a batch of 100 runs and in batches of 3: compiled for
    the batch's run count, the eigenvalue programs rounded batches of 1-8 runs otherwise
    (113 of 300 paper step sizes moved by an ulp in batches of 1-3), and Adam amplifies it."""
    spec = ExperimentSpec(widths=(16,), deltas=(0.1,), runs=100, step_size=rule)
    params, data, _ = initial_runs(Cell(16, 0.1, spec), np.arange(100))
    widths = np.full(100, 16)

    def step_sizes(indices):
        part = [jax.tree.map(lambda v: np.asarray(v)[indices], tree) for tree in (params, data)]
        return np.asarray(initial_step_sizes([(spec, indices.size)], *part, widths[indices], 16))

    whole = step_sizes(np.arange(100))
    pieces = np.concatenate([step_sizes(np.arange(s, min(s + 3, 100))) for s in range(0, 100, 3)])
    np.testing.assert_array_equal(pieces, whole)


def test_a_float32_runs_step_size_alone_in_its_call(monkeypatch):
    """A width above DRAW_NEURONS / 2 computes one run per call (here made so at width
    256). XLA's CPU backend, with its YNNPACK fusions, summed one run's neuron Gram
    matrices wrongly in float32 from width 256: h about 30% low (`gdrelu.compiled`).
    Four runs one by one, and `theory.paper_step_size` on one run, against float64."""
    from gdrelu import batched, theory

    spec = ExperimentSpec(widths=(256,), deltas=(0.0,), runs=4, dtype="float32")
    params, data, _ = jax.device_get(initial_runs(Cell(256, 0.0, spec), np.arange(4)))
    wide = [jax.tree.map(lambda v: v.astype(np.float64), tree) for tree in (params, data)]
    exact = np.asarray(theory.paper_step_size(*wide))
    monkeypatch.setattr(batched, "DRAW_NEURONS", 256)
    assert batched.draw_batch(256) == 1
    alone = initial_step_sizes([(spec, 4)], params, data, [256] * 4, 256)
    np.testing.assert_allclose(alone, exact, rtol=1e-4)
    first = [jax.tree.map(lambda v: v[:1], tree) for tree in (params, data)]
    np.testing.assert_allclose(theory.paper_step_size(*first), exact[:1], rtol=1e-4)


@pytest.mark.parametrize("rule", ["paper", "ntk"])
def test_a_leaky_specs_step_size_uses_its_slope(rule):
    """α = 0.3: each run's h is theory's for that α (a run at a time, here), not ReLU's;
    the wiring is what is tested (theory's rules are checked against the golden runs)."""
    from gdrelu import theory

    spec = ExperimentSpec(widths=(8,), deltas=(0.1,), runs=5, step_size=rule, alpha=0.3)
    params, data, _ = jax.device_get(initial_runs(Cell(8, 0.1, spec), np.arange(5)))
    steps = np.asarray(initial_step_sizes([(spec, 5)], params, data, np.full(5, 8), 8))
    direct = theory.paper_step_size if rule == "paper" else theory.ntk_step_size
    one = [jax.tree.map(lambda v, r=r: v[r], (params, data)) for r in range(5)]
    leaky = np.array([direct(p, d, alpha=0.3) for p, d in one])
    relu = np.array([direct(p, d, alpha=0.0) for p, d in one])
    np.testing.assert_allclose(steps, leaky, rtol=1e-10)
    assert np.all(np.abs(leaky / relu - 1) > 1e-3)


def test_numbers_are_each_specs_own_times_the_factor():
    """A number sets h directly, times `step_factor` (docs/theory.md, "Step size"); a batch
    of two specs' runs gets each spec's number, in batch order."""
    from gdrelu.model import Params

    first = ExperimentSpec(widths=(8,), deltas=(0.0,), step_size=0.1, step_factor=2.0)
    second = dataclasses.replace(first, step_size=0.3)
    params = Params(*(np.zeros((5, 8)),) * 3, np.zeros(5))
    steps = initial_step_sizes([(first, 2), (second, 3)], params, None, np.full(5, 8), 8)
    np.testing.assert_allclose(steps, [0.2, 0.2, 0.6, 0.6, 0.6], rtol=1e-15)


def test_an_ntk_runs_step_size_takes_its_true_width_when_padded():
    """docs/theory.md, "Model": in the NTK parameterization n is the true width, never the
    width a network is padded to; padding neurons take no part. Runs of width 8 padded to
    16 neurons get the step sizes of the unpadded runs (`ntk` rule, NTK init)."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.1,), runs=5, init="ntk", step_size="ntk")
    cell, indices, widths = Cell(8, 0.1, spec), np.arange(5), np.full(5, 8)
    params, data, _ = jax.device_get(initial_runs(cell, indices))
    wide, _, _ = jax.device_get(initial_runs(cell, indices, size=16))
    assert wide.a.shape == (5, 16)
    steps = np.asarray(initial_step_sizes([(spec, 5)], params, data, widths, 8))
    padded = np.asarray(initial_step_sizes([(spec, 5)], wide, data, widths, 16))
    np.testing.assert_allclose(padded, steps, rtol=1e-12)


def test_small_rule_is_a_hundredth_over_the_true_width_times_a_factor_below_one():
    """`small`: h = 0.01 / n with n each run's true width (docs/theory.md, "Step size"),
    times `step_factor` also when the factor is below 1: 0.5 · 0.01 / 8 and 0.5 · 0.01 / 5
    for runs of widths 8 and 5 padded to 8 neurons."""
    from gdrelu.model import Params

    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), step_size="small", step_factor=0.5)
    params = Params(*(np.zeros((3, 8)),) * 3, np.zeros(3))
    steps = initial_step_sizes([(spec, 3)], params, None, np.array([8, 5, 8]), 8)
    np.testing.assert_allclose(steps, [0.000625, 0.001, 0.000625], rtol=1e-15)


def test_a_runs_paper_step_size_does_not_depend_on_its_bucket(monkeypatch):
    """docs/design.md, "Buckets": the paper's step size takes the networks padded on the
    host, a call's runs at a time, to the widest bucket: one compiled program for all
    buckets. 40 runs of width 8 trained in a bucket of 8 neurons or of 64 (`classify_width`
    64) get the same h, bit for bit, also where the calls' run counts follow the width
    (DRAW_NEURONS made 512: 8 runs a call at 64 neurons)."""
    from gdrelu import batched
    from gdrelu.model import padded

    spec = ExperimentSpec(widths=(8,), deltas=(0.1,), runs=40)
    params, data, _ = jax.device_get(initial_runs(Cell(8, 0.1, spec), np.arange(40)))
    monkeypatch.setattr(batched, "DRAW_NEURONS", 512)
    assert batched.draw_batch(64) == 8
    widths = np.full(40, 8)
    narrow = initial_step_sizes([(spec, 40)], params, data, widths, 64)
    wide = initial_step_sizes([(spec, 40)], padded(params, 64, xp=np), data, widths, 64)
    np.testing.assert_array_equal(np.asarray(narrow), np.asarray(wide))


def test_ntk_step_sizes_on_many_points_are_computed_a_few_runs_at_a_time(monkeypatch):
    """A run's (m, m) neural-tangent Gram was computed for 64 runs at once whatever m:
    d-dim data of 16 384 points asked XLA for 550 GB. The batch now holds at most
    DRAW_ENTRIES // (m·max(m, n)) runs (here made 2 by a small DRAW_ENTRIES), and every
    run's h equals `theory.ntk_step_size` on that run alone."""
    from gdrelu import batched, step_size, theory

    spec = ExperimentSpec(
        data="radial", dim=2, num_train=40, widths=(8,), deltas=(0.0,), runs=5, step_size="ntk"
    )
    params, data, _ = jax.device_get(initial_runs(Cell(8, 0.0, spec), np.arange(5)))
    monkeypatch.setattr(batched, "DRAW_ENTRIES", 2 * 40 * 40)
    calls = batch_sizes(monkeypatch, step_size, "ntk_step_sizes")
    steps = np.asarray(initial_step_sizes([(spec, 5)], params, data, np.full(5, 8), 8))
    assert calls == [2, 2, 2]
    one = [jax.tree.map(lambda v, r=r: v[r], (params, data)) for r in range(5)]
    np.testing.assert_allclose(steps, [theory.ntk_step_size(p, d) for p, d in one], rtol=1e-12)


@pytest.mark.parametrize(("num_train", "refused"), [(1000, False), (4000, True)])
def test_an_ntk_gram_beyond_the_memory_budget_is_refused_naming_the_step_size(num_train, refused):
    """`--step-size ntk` on d-dim data of 16 384 points (the default m = 256·d at d = 64)
    crashed with XLA's out-of-memory error after the run directory was made: one run's
    Gram alone is 2.1 GB, a few copies of it in the eigenvalue program. `check_fits` now
    refuses it up front, by the Gram's size (shapes only): 6·m²·8 bytes against 0.5 GB."""
    from gdrelu.memory import BudgetError, check_fits, gram_bytes

    spec = ExperimentSpec(
        data="radial", dim=2, num_train=num_train, widths=(8,), deltas=(0.0,), runs=2,
        step_size="ntk",
    )  # fmt: skip
    assert gram_bytes(spec) == 6 * num_train**2 * 8
    assert gram_bytes(dataclasses.replace(spec, step_size=0.1)) == 0
    if not refused:
        check_fits(spec, 5 * 10**8)
        # beside an earlier optimizer's held results (`compare`), the Gram gets what is
        # left: accepted by the command's check, it was refused after that optimizer had
        # stored its unit, and the refusal removed the unit (a review)
        with pytest.raises(BudgetError, match="Gram"):
            check_fits(spec, 5 * 10**8, held=5 * 10**8 - gram_bytes(spec) + 1)
        return
    with pytest.raises(BudgetError) as err:
        check_fits(spec, 5 * 10**8, as_flags=True)
    assert str(err.value) == (
        "--step-size ntk: one run's 4000×4000 neural-tangent Gram on its training points "
        "needs about 0.768 GB, more than the memory budget of 0.5 GB; lower --num-train, "
        "set another --step-size, or raise --memory-budget"
    )
