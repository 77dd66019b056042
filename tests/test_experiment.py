"""Specs, keys and the statistics of what the samplers draw."""

import dataclasses
import json
import math
import re

import jax
import numpy as np
import pytest
from conftest import agreeing, finished_cell, numpy_gd, paper_runs

from gdrelu import ExperimentSpec, SpecError, batched, cells, multinomial_weights, run_experiment
from gdrelu.cells import Cell, CellResult, initial_runs, noise_keys, run_key
from gdrelu.data import draw_continuous
from gdrelu.engine import PointAtZeroWarning, SimulationResult, Status
from gdrelu.init import parameterization_of
from gdrelu.model import Params, scaling_of

Z = 5.0  # Monte Carlo tolerances: five standard errors (two-sided p ≈ 6e-7)


def test_initial_runs_do_not_depend_on_batch_or_other_cells():
    spec = ExperimentSpec(widths=(8,), deltas=(0.0, 0.1), runs=10)
    alone = ExperimentSpec(widths=(8, 16), deltas=(0.1,), runs=10)
    cell = Cell(8, 0.1, spec)
    full = initial_runs(cell, np.arange(10))
    part = initial_runs(Cell(8, 0.1, alone), np.array([7, 2]))
    for f, p in zip(jax.tree.leaves(full), jax.tree.leaves(part), strict=True):
        np.testing.assert_array_equal(np.asarray(f)[[7, 2]], p)
    assert Cell(8, 0.1, spec).cell_hash == Cell(8, 0.1, alone).cell_hash


def test_draws_compile_once_and_give_a_run_the_same_bits_in_any_batch():
    """The draws go DRAW_BATCH runs per call: one run, a full batch and a batch and one
    compile each draw once, and a run's bits are the same wherever it sits. On continuous
    data (standardized by the run's own statistics) a one-run program used to round the
    last bit differently."""
    spec = ExperimentSpec(data="p-ex", widths=(8,), runs=2, optimizer="adam", step_size=0.01)
    cell = Cell(8, 0.0, spec)
    before = (draw_continuous._cache_size(), cells._noise_key_data._cache_size())
    drawn = {}
    for count in (1, batched.DRAW_BATCH, batched.DRAW_BATCH + 1):
        indices = np.arange(count)
        drawn[count] = jax.device_get((initial_runs(cell, indices), noise_keys(cell, indices)))
    after = (draw_continuous._cache_size(), cells._noise_key_data._cache_size())
    assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1
    many = drawn[batched.DRAW_BATCH + 1]
    for count, runs in drawn.items():
        for got, want in zip(jax.tree.leaves(runs), jax.tree.leaves(many), strict=True):
            assert got.shape[0] == count
            np.testing.assert_array_equal(got.view(np.uint8), want[:count].view(np.uint8))
    last = jax.device_get(initial_runs(cell, np.array([batched.DRAW_BATCH])))
    for got, want in zip(jax.tree.leaves(last), jax.tree.leaves(many[0]), strict=True):
        np.testing.assert_array_equal(got.view(np.uint8), want[-1:].view(np.uint8))


def test_continuous_held_out_sets_are_own_draws_and_delta_follows_standardizing():
    """docs/theory.md, "Data": a continuous data set standardizes the training set (weighted
    mean 0, standard deviation 1) and adds Δ after, to every target; the validation and
    test sets are separate draws of `num_heldout` points each. The draws of the test above
    (p-ex, 2 runs), at Δ = 2: held-out target means within 0.5 of Δ (7 standard errors of
    the 1024 held-out and 256 training points)."""
    spec = ExperimentSpec(data="p-ex", widths=(8,), runs=2, optimizer="adam", step_size=0.01)
    _, train, (valid, test) = jax.device_get(initial_runs(Cell(8, 2.0, spec), np.arange(2)))
    mean_y = np.sum(train.weights * train.y, axis=1)
    np.testing.assert_allclose(mean_y, 2.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(train.weights * (train.y - 2.0) ** 2, axis=1), 1.0, 1e-12)
    np.testing.assert_allclose(np.sum(train.weights * train.x, axis=1), 0.0, atol=1e-12)
    for held in (valid, test):
        assert held.x.shape == (2, spec.num_heldout)
        assert np.all(np.abs(held.y.mean(axis=1) - 2.0) < 0.5)
    assert not np.allclose(valid.x, test.x)


def test_wide_networks_are_drawn_a_few_runs_at_a_time_to_the_same_bits(monkeypatch):
    """A call draws at most DRAW_NEURONS neurons (runs × width), however wide the
    networks; the runs' bits do not depend on it."""
    width, runs = 4 * batched.DRAW_NEURONS // batched.DRAW_BATCH, 20
    spec = ExperimentSpec(widths=(width,), deltas=(0.0,), runs=runs)
    cell, indices = Cell(width, 0.0, spec), np.arange(runs)
    calls = []
    original = cells._drawn_runs
    monkeypatch.setattr(
        cells, "_drawn_runs", lambda c, i, s: calls.append(i.size) or original(c, i, s)
    )
    few = jax.device_get(initial_runs(cell, indices))
    assert calls == [batched.DRAW_BATCH // 4] * 2  # 20 runs: 16, then 4 padded to 16
    monkeypatch.setattr(batched, "DRAW_NEURONS", batched.DRAW_NEURONS * 4)
    many = jax.device_get(initial_runs(cell, indices))
    assert calls[2:] == [batched.DRAW_BATCH]
    for got, want in zip(jax.tree.leaves(few), jax.tree.leaves(many), strict=True):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_a_draw_batch_is_the_most_runs_whose_neurons_fit_and_one_run_at_least():
    """`draw_batch(width)`: the most runs, up to DRAW_BATCH, whose neurons (runs × width)
    stay within DRAW_NEURONS, found here by counting up; one run for a network wider than
    DRAW_NEURONS (0 runs a call divided by zero)."""
    neurons, most = batched.DRAW_NEURONS, batched.DRAW_BATCH
    assert batched.draw_batch(None) == most
    for width in (1, 8, neurons // most, neurons // most + 1, 3000, neurons - 1, neurons):
        runs = 1
        while runs < most and (runs + 1) * width <= neurons:
            runs += 1
        assert batched.draw_batch(width) == runs, width
    assert batched.draw_batch(neurons + 1) == batched.draw_batch(16 * neurons) == 1


@pytest.mark.parametrize(
    ("count", "calls"), [(0, 1), (1, 1), (batched.DRAW_BATCH, 1), (batched.DRAW_BATCH + 1, 2)]
)
def test_draws_in_batches_call_each_batch_once_and_give_every_run_once(count, calls):
    """`in_draw_batches`: ceil(count / DRAW_BATCH) calls of DRAW_BATCH runs each (a count
    that fills its batches takes no batch of padding alone; no runs, one call of none), and
    the runs asked for, in order, without the padding (joined on the host and on the
    device). The draw is a stub: the claim is the batches' bookkeeping."""
    sizes = []

    def draw(part):
        sizes.append(len(part))
        return {"run": np.asarray(part) * 10, "twice": np.stack([part, part], axis=1)}

    indices = np.arange(100, 100 + count)
    want = {"run": indices * 10, "twice": np.stack([indices, indices], axis=1)}
    got = batched.in_draw_batches(draw, indices, on_host=True)
    assert sizes == ([0] if count == 0 else [batched.DRAW_BATCH] * calls)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
    if count == batched.DRAW_BATCH + 1:  # the device's join: one small concatenation
        on_device = batched.in_draw_batches(draw, indices)
        for key, value in want.items():
            np.testing.assert_array_equal(np.asarray(on_device[key]), value)


def test_cells_and_seeds_give_different_runs():
    # two runs, as the part above: the draws' programs are compiled for that count already
    spec = ExperimentSpec(widths=(8,), deltas=(0.0, 0.1), runs=2)
    a0 = initial_runs(Cell(8, 0.0, spec), np.arange(2))[0].a
    a1 = initial_runs(Cell(8, 0.1, spec), np.arange(2))[0].a
    assert not np.allclose(a0, a1)
    assert Cell(8, 0.0, spec).cell_hash != Cell(16, 0.0, spec).cell_hash
    k0, k1 = run_key(0, 1, 2), run_key(1, 1, 2)
    assert not np.array_equal(jax.random.key_data(k0), jax.random.key_data(k1))


def test_a_negative_zero_offset_is_the_zero_offset():
    """Δ = -0.0 adds the same data as Δ = 0: the same cell and runs, recorded as 0.0 (the
    cell hash read its sign, so --deltas -0 drew other runs than --deltas 0)."""
    spec = ExperimentSpec(widths=(8,), deltas=(-0.0,), runs=2)
    assert math.copysign(1.0, spec.deltas[0]) == 1.0 and tuple(spec.to_dict()["deltas"]) == (0.0,)
    zero = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=2)
    assert Cell(8, -0.0, zero).cell_hash == Cell(8, 0.0, zero).cell_hash
    assert spec.cells()[0].cell_hash == zero.cells()[0].cell_hash


def test_the_optimizer_and_dtype_do_not_change_the_cell():
    """Common random numbers: the cell is defined by data and init, not by how it trains."""
    base = ExperimentSpec(widths=(8,), runs=2)
    other = ExperimentSpec(widths=(8,), runs=2, dtype="float32", check_every=10)
    assert Cell(8, 0.0, base).cell_hash == Cell(8, 0.0, other).cell_hash


def test_the_cell_follows_every_setting_that_defines_its_data(tmp_path):
    """Cells of other data are other cells (docs/design.md, "Runner"): another data file's
    content (not its path), another split, another dimension of the same data set; else
    their runs would share keys and run ids. Settings only, nothing is drawn."""
    text = "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(1, 21))
    for name, content in [("a.csv", text), ("b.csv", text), ("c.csv", text.replace(",2", ",5"))]:
        (tmp_path / name).write_text(content)

    def cell_id(**values):
        spec = ExperimentSpec(**{"widths": (4,), "deltas": (0.0,), **values})
        return Cell(4, 0.0, spec).cell_id

    a, b, c = (dict(data="file", data_file=str(tmp_path / n)) for n in ("a.csv", "b.csv", "c.csv"))
    assert cell_id(**a) == cell_id(**b) != cell_id(**c)
    splits = [cell_id(**a, split=split) for split in [(0.5, 0.25, 0.25), (0.6, 0.2, 0.2)]]
    assert len({cell_id(**a), *splits}) == 3
    dims = {cell_id(data="multi-axis", dim=dim, step_size="ntk") for dim in (2, 3)}
    assert len(dims) == 2


def test_points_at_zero_are_looked_for_only_with_a_split_and_zero_biases(tmp_path):
    """`points_at_zero` flags the runs with a training input x = 0, where every zero-bias
    kink starts, and says None where it cannot happen: no split, or biases drawn away from
    0 (their kinks are not at 0). Rows given by hand, nothing drawn."""
    from gdrelu.cells import points_at_zero

    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(1, 21)))
    file = dict(data="file", data_file=str(tmp_path / "d.csv"), widths=(4,), deltas=(0.0,))
    x = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -2.0], [-0.0, 3.0, 1.0]])
    split = (0.6, 0.2, 0.2)
    flagged = points_at_zero(ExperimentSpec(**file, split=split), x)
    np.testing.assert_array_equal(flagged, [False, True, True])
    assert points_at_zero(ExperimentSpec(**file), x) is None
    assert points_at_zero(ExperimentSpec(**file, split=split, bias_init="unif"), x) is None


def test_multinomial_weights_statistics():
    """p_j = count_j / N with E p_j = 1/6 and Var p_j = (1/6)(5/6)/N."""
    n_samples, runs = 64, 4000
    keys = jax.random.split(jax.random.key(3), runs)
    w = np.asarray(jax.vmap(lambda k: multinomial_weights(k, 6, n_samples))(keys))
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w * n_samples, np.round(w * n_samples), atol=1e-9)
    var = (1 / 6) * (5 / 6) / n_samples
    assert np.all(np.abs(w.mean(0) - 1 / 6) < Z * np.sqrt(var / runs))
    # the sample variance of p_j has standard error ≈ var·sqrt(2/runs) (near-normal counts)
    assert np.all(np.abs(w.var(0) - var) < Z * var * np.sqrt(2 / runs))


INIT_WIDTH, INIT_RUNS = 256, 400  # 102 400 draws of w_i, and of each coordinate of a_i


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("init", ["he", "ntk", "swapped"])
def test_init_variances(init, dim):
    """The runs' initial networks (`initial_runs`: the padded 1-D and the d-dim draw) have
    the paper's variances (docs/theory.md, "Model"): He a ~ N(0, 2/d I), w ~ N(0, 2/n); swapped
    a ~ N(0, 2/n), w ~ N(0, 2) (1-D in the paper, per coordinate in docs/theory.md); NTK
    raw N(0, 1), scaled by sqrt(2/d), sqrt(2/n) to He's. Mean 0 and variance within 5 SE
    (σ²/N and 2σ⁴/(N - 1) for N normals); b = c = 0."""
    n = INIT_WIDTH
    raw = {"he": (2 / dim, 2 / n), "swapped": (2 / n, 2.0), "ntk": (1.0, 1.0)}[init]
    effective = {"he": (2 / dim, 2 / n), "swapped": (2 / n, 2.0), "ntk": (2 / dim, 2 / n)}[init]
    data = {"step_size": 0.1} if dim == 1 else {"data": "multi-axis", "dim": dim, "step_size": 0.1}
    spec = ExperimentSpec(widths=(n,), deltas=(0.0,), runs=INIT_RUNS, init=init, **data)
    params, _, _ = jax.device_get(initial_runs(Cell(n, 0.0, spec), np.arange(INIT_RUNS)))
    assert params.a.shape == ((INIT_RUNS, n) if dim == 1 else (INIT_RUNS, dim, n))
    assert params.w.shape == (INIT_RUNS, n)
    assert not np.any(params.b) and not np.any(params.c)
    scaling = scaling_of(parameterization_of(init), n, dim, xp=np)
    groups = {
        "a": (params.a, raw[0]),
        "w": (params.w, raw[1]),
        "s_a a": (float(scaling.a) * params.a, effective[0]),
        "s_w w": (float(scaling.w) * params.w, effective[1]),
    }
    for name, (values, var) in groups.items():
        count = values.size
        assert abs(np.mean(values)) < Z * np.sqrt(var / count), name
        assert abs(np.var(values, ddof=1) - var) < Z * var * np.sqrt(2 / (count - 1)), name
    if dim > 1:  # each coordinate of a_i alike
        for coordinate in np.moveaxis(params.a, 1, 0):
            assert abs(np.var(coordinate, ddof=1) - raw[0]) < Z * raw[0] * np.sqrt(
                2 / (coordinate.size - 1)
            )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("widths", (0,)),
        ("widths", ()),
        ("deltas", (float("nan"),)),
        ("runs", 0),
        ("seed", -1),
        ("dtype", "float16"),
        ("check_every", 0),
        ("max_checks", 1.5),
        ("step_size", -1.0),
        ("alpha", 1.0),
        ("init", "xavier"),
        ("deltas", (True,)),  # a bool is not a number (`numbers.is_real`), nor a count
        ("step_factor", True),
        ("runs", True),
        ("deltas", (float("inf"),)),  # finite: Δ is added to every target
        ("deltas", ()),  # no cell to run
        ("data", "csv"),  # a file is data = "file" with data_file
        ("bias_init", 3),  # a name, not a TypeError from its parser
    ],
)
def test_bad_spec_values_name_their_field(field, value):
    with pytest.raises(SpecError) as err:
        ExperimentSpec(**{field: value})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}:")


def test_offsets_and_file_values_beyond_the_dtypes_range_are_refused(tmp_path):
    """Δ = 1e39 in float32 made every target inf: the engine refused the runs with a
    traceback after the run's directory was made. Refused in the spec now, as is a file
    value beyond the range; the same values in float64, and Δ = 1e37 in float32 (the
    targets stay finite), are accepted."""
    with pytest.raises(SpecError, match=r"^deltas: 1e\+39 is not within a quarter of float32"):
        ExperimentSpec(deltas=(0.0, 1e39), dtype="float32")
    ExperimentSpec(deltas=(0.0, 1e37), dtype="float32")
    ExperimentSpec(deltas=(1e39,))
    (tmp_path / "d.csv").write_text("x,y\n1,1e39\n2,2\n-1,3\n")
    file = dict(data="file", data_file=str(tmp_path / "d.csv"), deltas=(0.0,))
    with pytest.raises(SpecError, match=r"^data_file: .*d.csv: a value 1e\+39 is not within"):
        ExperimentSpec(**file, dtype="float32")
    ExperimentSpec(**file)


def test_bias_scales_beyond_the_dtype_and_too_many_mixed_points_are_refused(monkeypatch):
    """normal(1e200) made the paper's step size NaN, refused as if the data had no
    curvature; with a given step size every run read diverged. σ that rounds to 0 in the
    dtype trained zero biases as another bias init. he+k drew (runs, n, k) indices with
    no bound on k (a traceback from MLIR, a run directory left half-made): k ≤ 64, and
    its draws run fewer runs per call as k grows (`batched.draw_batch` of n·k)."""
    with pytest.raises(SpecError, match=r"^bias_init: σ = 1e\+200 is above 1.31e\+151, the sq"):
        ExperimentSpec(bias_init="normal(1e200)")
    with pytest.raises(SpecError, match=r"^bias_init: σ = 1e\+30 is above 1.8e\+16"):
        ExperimentSpec(bias_init="uniform(1e30)", dtype="float32")
    with pytest.raises(SpecError, match=r"^bias_init: σ = 1e-50 is 0 in float32$"):
        ExperimentSpec(bias_init="normal(1e-50)", dtype="float32")
    for accepted in ("normal(1e30)", "normal(1e-50)", "he+64"):
        ExperimentSpec(bias_init=accepted)
    with pytest.raises(SpecError, match=r"^bias_init: 'he\+65' needs 1 ≤ k ≤ 64: each neuron"):
        ExperimentSpec(bias_init="he+65")

    widths = []
    drawing = cells.in_draw_batches
    monkeypatch.setattr(
        cells, "in_draw_batches", lambda d, i, w: widths.append(w) or drawing(d, i, w)
    )
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3, bias_init="he+5", stop_on=())
    params, _, _ = cells.initial_runs(cells.Cell(4, 0.0, spec), np.arange(3))
    assert widths == [20] and params.b.shape == (3, 4) and np.all(np.asarray(params.b) != 0)


def test_unknown_setting_is_named_with_the_closest_known_one():
    with pytest.raises(SpecError, match=r"^widht: unknown setting \(did you mean 'widths'\? "):
        ExperimentSpec.from_dict({"widht": [8]})
    with pytest.raises(SpecError, match=r"^zzz: unknown setting \(known: "):
        ExperimentSpec.from_dict({"zzz": 1})


def test_numpy_scalars_of_any_width_are_numbers():
    """A float32 or int32 numpy scalar (not a Python float or int subclass, as float64 is)
    is a number where a spec takes one."""
    spec = ExperimentSpec(widths=(np.int32(4),), deltas=(np.float32(0.5),), runs=np.int32(2),
                          step_size=np.float32(0.25), step_factor=np.float32(2.0))  # fmt: skip
    assert (spec.widths, spec.deltas, spec.runs) == ((4,), (0.5,), 2)
    assert spec.step_size == 0.25 and spec.step_factor == 2.0


def test_numpy_grids_are_stored_as_tuples_of_python_numbers():
    """A spec of numpy arrays could not be hashed or written to JSON."""
    spec = ExperimentSpec(widths=np.array([16, 32]), deltas=np.array([0.0, 0.1]), runs=2)
    assert spec.widths == (16, 32) and type(spec.widths[0]) is int
    assert json.loads(json.dumps(spec.to_dict()))["deltas"] == [0.0, 0.1]
    assert hash(spec) == hash(ExperimentSpec(widths=(16, 32), deltas=(0.0, 0.1), runs=2))
    scalars = ExperimentSpec(widths=[np.int64(16)], deltas=tuple(np.array([0.0])), runs=2)
    assert type(scalars.widths[0]) is int and type(scalars.deltas[0]) is float
    json.dumps(scalars.to_dict())  # numpy scalars were not JSON


def test_jax_grids_are_numpy_grids_and_a_generator_is_named():
    """widths=jnp.array([16, 32]) was refused as "a tuple, such as (Array([16, 32]),)",
    advice that fails again; a generator got the same."""
    import jax.numpy as jnp

    spec = ExperimentSpec(widths=jnp.array([16, 32]), deltas=jnp.array([0.0, 0.1]), runs=2)
    assert spec == ExperimentSpec(widths=(16, 32), deltas=(0.0, 0.1), runs=2)
    assert type(spec.widths[0]) is int
    with pytest.raises(SpecError, match=r"^widths: a tuple or list, not a generator$"):
        ExperimentSpec(widths=(w for w in (16, 32)))
    with pytest.raises(SpecError, match=r"^widths: a tuple, such as \(16,\), not 16$"):
        ExperimentSpec(widths=16)


def test_numpy_and_jax_scalars_are_python_numbers_in_every_field():
    """jnp.int32(4) as a width was refused as "Array(4) is not a positive integer", as
    were JAX run counts, α, step sizes and Δ, and np.bool_(True) as "must be true or
    false"; a numpy run count stayed numpy and the spec could not be written to JSON.
    A dtype may be numpy's or JAX's type, kept by name."""
    import jax.numpy as jnp

    odd = ExperimentSpec(widths=(jnp.int32(4),), deltas=(jnp.float64(0.1),), runs=jnp.array(3),
                         alpha=jnp.float64(0.25), step_size=jnp.float64(0.5), seed=np.int64(7),
                         early_stopping=np.bool_(True))  # fmt: skip
    plain = ExperimentSpec(widths=(4,), deltas=(0.1,), runs=3, alpha=0.25, step_size=0.5, seed=7,
                           early_stopping=True)  # fmt: skip
    assert odd == plain and hash(odd) == hash(plain)
    assert [type(getattr(odd, f)) for f in ("runs", "alpha", "seed", "early_stopping")] == [
        int, float, int, bool]  # fmt: skip
    assert json.loads(json.dumps(odd.to_dict())) == json.loads(json.dumps(plain.to_dict()))
    with pytest.raises(SpecError, match=r"^seed: "):  # a key is no number (it raised TypeError)
        ExperimentSpec(seed=jax.random.key(0))
    # a dtype as numpy or JAX spells it: "<class 'numpy.float32'> is not one of float32"
    for dtype in (np.float32, jnp.float32, np.dtype("float32")):
        assert ExperimentSpec(dtype=dtype, runs=3) == ExperimentSpec(dtype="float32", runs=3)
    with pytest.raises(SpecError, match=r"^dtype: 'int32' is not one of float64, float32"):
        ExperimentSpec(dtype=np.int32)


def test_bias_init_cells_leave_the_paper_cells_alone():
    """bias_init = zero keeps the paper's cell hash (and so every run); another init gives
    other runs whose biases follow it, from the same data and weights."""
    from gdrelu.init import SQRT3

    zero = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=6)
    biased = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=6, bias_init="kink-neg-unif")
    assert "bias_init" not in Cell(8, 0.0, zero).settings()
    assert Cell(8, 0.0, zero).cell_hash != Cell(8, 0.0, biased).cell_hash
    params, _, _ = initial_runs(Cell(8, 0.0, biased), np.arange(6))
    offsets = -np.asarray(params.b) / np.abs(np.asarray(params.a))
    assert np.all((offsets >= 0) & (offsets <= SQRT3))


def test_an_ntk_cells_bias_init_acts_on_the_scaled_weights():
    """docs/theory.md, "Bias inits": they act on ã_i = s_a a_i, with s_a = √2 for 1-D NTK.
    kink-neg-unif's kinks -b_i/(s_a |a_i|) then fill [0, √3], past √3/√2 where kinks
    drawn from the raw a_i would end: all 48 short of it has probability 2^-24."""
    from gdrelu.init import SQRT3

    spec = ExperimentSpec(
        widths=(8,), deltas=(0.0,), runs=6, init="ntk", bias_init="kink-neg-unif", step_size="ntk"
    )
    params, _, _ = initial_runs(Cell(8, 0.0, spec), np.arange(6))
    offsets = -np.asarray(params.b) / (np.sqrt(2.0) * np.abs(np.asarray(params.a)))
    assert np.all((offsets >= 0) & (offsets <= SQRT3 * (1 + 1e-12)))
    assert np.max(offsets) > SQRT3 / np.sqrt(2.0)


def test_runs_follow_the_documented_key_derivation():
    """docs/design.md, "Run draws": run key k = fold_in(fold_in(key(seed), cell_hash), i)
    splits into (parameters, data, validation: drawn for runs that stop early); the biases
    use fold_in(parameter key, 0xB1A5), the minibatch noise fold_in(k, 0x5EED). Rebuilt
    here one run at a time."""
    from gdrelu.init import he_init, init_bias

    spec = ExperimentSpec(
        widths=(8,), deltas=(0.1,), runs=6, seed=11, bias_init="unif", early_stopping=True
    )
    cell = Cell(8, 0.1, spec)
    indices = np.array([0, 5])
    params, data, valid = jax.device_get(initial_runs(cell, indices))
    noise = np.asarray(noise_keys(cell, indices))
    for row, index in enumerate(indices):
        key = run_key(spec.seed, cell.cell_hash, int(index))
        key_params, key_data, key_valid = jax.random.split(key, 3)
        m, count = data.x.shape[1], cell.num_samples
        np.testing.assert_array_equal(data.weights[row], multinomial_weights(key_data, m, count))
        np.testing.assert_array_equal(valid[row], multinomial_weights(key_valid, m, count))
        zero_bias = he_init(8, key=key_params)
        biased = init_bias(
            zero_bias,
            data.x[row],
            data.weights[row],
            "unif",
            key=jax.random.fold_in(key_params, 0xB1A5),
        )
        for name in ("a", "b", "w", "c"):  # 2/n traced or not: the last bit may differ
            np.testing.assert_allclose(getattr(params, name)[row], getattr(biased, name), 1e-12)
        assert np.any(biased.b != 0)
        np.testing.assert_array_equal(
            noise[row], jax.random.key_data(jax.random.fold_in(key, 0x5EED))
        )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (dict(bias_init="kink"), "bias_init"),
        (dict(init="xavier"), "init"),
        (dict(bias_init="unif", stop_on=("stuck",)), "stop_on"),
        # random biases put kinks among the data at once: every run would stop there
        (dict(bias_init="unif", stop_on=("crossed",)), "stop_on"),
        (dict(init="ntk", step_size="ntk", stuck_rule="certificate"), "stuck_rule"),
        (dict(stop_on=("crossed",), stuck_rule="certificate"), "lacks degenerate and stuck"),
        (dict(stop_on=("crossed", "stuck"), stuck_rule="certificate"), "lacks degenerate: add it"),
        (dict(data="star", step_size="ntk", stuck_rule="certificate"), "stuck_rule"),
        (dict(optimizer="adam", stop_on=("degenerate",)), "stop_on"),
        (dict(data="star", step_size="ntk", stop_on=("stuck",)), "stop_on"),
        (dict(step_size="huge"), "step_size"),
        (dict(step_size=10**400, dtype="float32"), "step_size"),  # beyond float64 as an int
        (dict(step_size=10**39, dtype="float32"), r"^step_size: .* is inf in float32"),
        (dict(step_size=1e-30, step_factor=1e-30, dtype="float32"), "step_size"),  # 0 there
        # settings nothing would read: refused rather than recorded as if they had acted
        (dict(num_heldout=10), "num_heldout"),
        # a bare number ('int' object is not iterable); padded names were other cells
        (dict(widths=16), r"widths: a tuple, such as \(16,\)"),
        (dict(stop_on="stuck"), r"stop_on: a tuple, such as \('stuck',\)"),  # not s, t, u, c, k
        (
            dict(stop_on=("stuck", "never", "often")),
            "stop_on: 'never', 'often' are not one of crossed, stuck, degenerate$",
        ),
        (dict(deltas=0.1), r"deltas: a tuple, such as \(0.1,\)"),
        (dict(bias_init=" normal(1)"), "bias_init: ' normal"),
        # each bound as the docs and messages state it (docs/theory.md, README)
        (dict(data="p-ex", num_train=1, step_size=0.01), "num_train"),  # an integer ≥ 2
        (dict(num_samples=0), "num_samples"),  # N draws: a positive integer
        (dict(data="p-ex", num_heldout=0, step_size=0.01), "num_heldout"),
        (dict(widths=(8, 8)), r"widths: has duplicates \(8 again\)"),  # the same cell twice
        (dict(deltas=(0.1, 0.1)), r"deltas: has duplicates \(0.1 again\)"),
        (dict(deltas=(0.0, -0.0)), r"deltas: has duplicates \(0.0 again\)"),  # one cell hash
        (dict(seed=2**32), "seed: 4294967296 is not below 2\\*\\*32"),
        (dict(data="star"), r"step_size: 'paper' \(the default\) is the 1-D rule"),  # star is 2-D
        # the paper's rule ignores (s_a, s_w): 4x too small at width 16, 63x at 256
        (dict(init="ntk"), "step_size: 'paper' \\(the default\\) reads the raw"),
        (dict(step_factor=0.0), "step_factor"),  # h = 0 with a rule's step size
        (dict(alpha=-0.1), "alpha"),  # [0, 1)
        (dict(target_halfwidth=0.5, max_runs=2000), "target_halfwidth"),  # (0, 0.5)
        (dict(target_halfwidth=0.1), "max_runs: is needed"),
        (dict(target_halfwidth=0.1, max_runs=10), "max_runs"),  # fewer than runs = 1000
        (dict(data_file="points.csv"), "data_file: is needed exactly when"),  # data: six-points
        (dict(data="star", dim=3, step_size="ntk"), "dim: star data are 2-dimensional"),
        (dict(early_stopping=1), "early_stopping"),  # true or false, not a number
        (dict(target_halfwidth=0.0, max_runs=2000), "target_halfwidth"),  # H > 0
        (dict(data="radial", dim=0, step_size="ntk"), "dim: 0 is not a positive integer"),
        (dict(data="file"), "data_file: is needed exactly when"),  # and no file named
        # settings the data would not read: N draws for continuous data, m for a support
        (dict(num_train=10), "num_train: six-points data have a finite support"),
        (dict(data="p-ex", num_samples=100, step_size=0.01), "num_samples: p-ex data are"),
        # SGD's multinomial counters cover 2^32 / B steps: check_every × max_checks of them
        (dict(optimizer="sgd", check_every=1000, max_checks=300_000), "max_checks: 300000000"),
    ],
)
def test_bad_settings_name_their_field(values, field):
    with pytest.raises(SpecError, match=field) as err:
        ExperimentSpec(**values)
    if re.fullmatch(r"\w+", field):  # a bare name ("init" is in "bias_init: ..." too)
        assert err.value.field == field


@pytest.mark.parametrize(
    "values",
    [
        dict(data="multi-axis", dim=2, step_size="ntk"),  # "--dim d ≥ 2" (docs/theory.md)
        dict(widths=(2**40,), num_samples=100),  # refused only above 2^40 neurons
        dict(seed=2**32 - 1),  # below 2**32
        dict(num_samples=2**53),  # float64 counts are exact integers up to 2^53
        dict(target_halfwidth=0.49, max_runs=1000),  # max_runs may equal runs
        # the epoch sampler takes B = m: one minibatch per epoch (docs/theory.md)
        dict(data="p-ex", num_train=16, optimizer="sgd", sampler="epoch", batch_size=16),
        dict(data="p-ex", num_train=2),  # "an integer ≥ 2"
        # the crossed rule is refused with random biases in 1-D only (docs/theory.md): in
        # d dimensions it stops a run whose activation pattern changed
        dict(data="star", bias_init="unif", stop_on=("crossed",)),
    ],
)
def test_settings_at_their_documented_bounds_are_taken(values):
    ExperimentSpec(**{"step_size": 0.01, **values})


def test_a_width_whose_n_squared_draws_are_not_exact_says_where_num_samples_is_set():
    """N = n² multinomial draws above 2^53 are no exact float64 integers; num_samples,
    which has no flag, is set in a --config file."""
    with pytest.raises(SpecError, match=r"widths: width 94906267: .* \(in a --config file\)$"):
        ExperimentSpec(widths=(94906267,), step_size=0.01)


def test_a_data_file_split_and_dimension_are_checked(tmp_path):
    """--split takes three positive fractions summing to 1, each part non-empty; --dim
    must be the file's own dimension. 20 points in 1-D, all nonzero."""
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(1, 21)))
    file = dict(data="file", data_file=str(path))
    assert ExperimentSpec(**file, split=(0.5, 0.25, 0.25)).training_points == 10
    for split, message in [
        ((0.5, 0.25, 0.5), "split: .* not three positive fractions summing to 1"),
        ((0.5, 0.25, 0.255), "split: .* not three positive fractions summing to 1"),
        ((0.5, 0.5, 0.0), "split: .* not three positive fractions"),  # no empty test part
        (0.5, "split: 0.5 is not three positive fractions"),  # not a TypeError: no len()
        ((0.96, 0.02, 0.02), r"split: gives empty parts \(19, 0, 1\)"),  # 0.02·20 rounds to 0
    ]:
        with pytest.raises(SpecError, match=message):
            ExperimentSpec(**file, split=split)
    with pytest.raises(SpecError, match=r"dim: the inputs of .* are not 2-dimensional"):
        ExperimentSpec(**file, dim=2)
    # a split file's training points have equal weights (docs/theory.md): N multinomial
    # draws would act on nothing, yet give the cells another id and a recorded N
    with pytest.raises(SpecError, match="num_samples: a split file's points have equal"):
        ExperimentSpec(**file, split=(0.5, 0.25, 0.25), num_samples=100)
    assert ExperimentSpec(**file, num_samples=100).num_points == 20  # weighted: N acts
    # a split is treated like continuous data (docs/theory.md, "Data"): held-out points,
    # and no multinomial, so no limit on the width from N = n² draws (docs/wide-networks.md)
    split = ExperimentSpec(**file, split=(0.5, 0.25, 0.25), widths=(94906267,))
    assert split.held_out and not ExperimentSpec(**file).held_out
    plane = tmp_path / "plane.csv"
    plane.write_text("x1,x2,y\n" + "".join(f"{i},{-i},{i % 3}\n" for i in range(1, 6)))
    spec = ExperimentSpec(data="file", data_file=str(plane), step_size="ntk")
    assert (spec.input_dim, spec.num_points) == (2, 5)


def test_a_point_at_zero_is_refused_only_where_every_initial_kink_is_there(tmp_path):
    """docs/theory.md, "Data": with zero biases every initial kink is at 0, so 1-D file
    data with a point at x = 0 is refused, unless --split standardizes it (or the biases
    start elsewhere)."""
    path = tmp_path / "zero.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(-10, 10)))
    file = dict(data="file", data_file=str(path))
    with pytest.raises(SpecError, match=r"data_file: .* has a point at x = 0"):
        ExperimentSpec(**file)
    assert ExperimentSpec(**file, split=(0.5, 0.25, 0.25)).training_points == 10
    assert ExperimentSpec(**file, bias_init="unif").num_points == 20


@pytest.mark.parametrize(
    ("values", "final"),
    [
        ({}, False),  # the paper's: certified and degenerate runs are the stuck ones
        (dict(optimizer="sgd"), True),
        (dict(bias_init="unif"), True),
        (dict(data="star", step_size="ntk"), True),  # no certificate in d dimensions
        (dict(data="cross", step_size="param-norm"), True),
        (dict(stop_on=("crossed", "stuck", "degenerate")), False),
        (dict(stop_on=()), True),  # no run is ever set stuck or degenerate
        (dict(stop_on=("crossed",)), True),
        (dict(stop_on=("crossed", "stuck")), True),  # degenerate runs would go uncounted
    ],
)
def test_p_stuck_reads_the_final_network_wherever_no_certificate_applies(values, final):
    """Without the certificate no run can be certified stuck, so a certificate rule would
    count P(stuck) = 0 whatever the runs did."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), **values)
    assert spec.final_stuck_rule == final


def test_support_sizes_match_the_data_sets():
    for data, dim in (("six-points", None), ("star", None), ("cross", None),
                      ("double-cross", None), ("multi-axis", 3)):  # fmt: skip
        spec = ExperimentSpec(
            data=data, dim=dim, step_size="ntk" if data != "six-points" else "paper"
        )
        assert spec.num_points == spec.support()[1].shape[0]
    # continuous data draw num_train points a run, 256·d by default
    assert ExperimentSpec(data="radial", dim=3, step_size="ntk").num_points == 768
    assert ExperimentSpec(data="radial", dim=3, num_train=40, step_size="ntk").num_points == 40


def test_user_file_split_per_run(tmp_path):
    """--split: each run partitions the file's points into train/validation/test (its own
    permutation), standardized with the training statistics."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(2.0, 3.0, size=(20, 2)), rng.normal(size=20)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    spec = ExperimentSpec(
        data="file", data_file=str(path), split=(0.5, 0.25, 0.25), step_size="ntk", runs=3,
        widths=(4,), deltas=(0.0,),
    )  # fmt: skip
    _, train, (valid, test) = initial_runs(Cell(4, 0.0, spec), np.arange(3))
    assert train.x.shape == (3, 10, 2) and valid.x.shape == test.x.shape == (3, 5, 2)
    for r in range(3):
        np.testing.assert_allclose(train.x[r].mean(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(train.x[r].std(0), 1.0, rtol=1e-12)
        # the three parts hold the file's 20 points: per coordinate, the sorted standardized
        # values are an exact affine image of the sorted raw ones
        joined = np.concatenate([train.x[r], valid.x[r], test.x[r]])
        for k in range(2):
            raw, std = np.sort(x[:, k]), np.sort(np.asarray(joined[:, k]))
            slope, icpt = np.polyfit(std, raw, 1)
            np.testing.assert_allclose(slope * std + icpt, raw, atol=1e-10)
    assert not np.allclose(train.x[0], train.x[1])  # each run its own split
    with pytest.raises(SpecError, match="split"):
        ExperimentSpec(split=(0.5, 0.5, 0.5))


def test_a_split_that_puts_a_training_point_at_the_mean_is_warned_of(tmp_path):
    """x = 0, ..., 9, six training points: 20 of the C(10, 6) = 210 subsets hold their own
    mean (counted by hand in the test), which standardizes to x = 0, where every initial
    kink of zero biases is: such runs 'cross' at once. Of 3000 runs, Binomial(3000, 2/21)
    have one, within 5 standard errors; a run warns once per cell with their count, however
    many batches the memory budget cut it into (each batch warned of its own)."""
    import itertools
    import warnings

    from gdrelu.cells import points_at_zero

    subsets = list(itertools.combinations(range(10), 6))
    holding = sum(sum(s) % 6 == 0 and sum(s) // 6 in s for s in subsets)
    assert (holding, len(subsets)) == (20, 210)
    path = tmp_path / "ints.csv"
    path.write_text("x,y\n" + "".join(f"{i},{(7 * i) % 5}\n" for i in range(10)))
    spec = ExperimentSpec(data="file", data_file=str(path), split=(0.6, 0.2, 0.2), runs=3000,
                          widths=(4,), deltas=(0.0,), check_every=10, max_checks=1)  # fmt: skip
    flagged = points_at_zero(spec, initial_runs(Cell(4, 0.0, spec), np.arange(3000))[1].x)
    p = holding / len(subsets)
    assert abs(flagged.sum() - 3000 * p) < 5 * np.sqrt(3000 * p * (1 - p))
    small = dataclasses.replace(spec, runs=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(small, memory_budget=100_000)  # batches of 9 runs
    (warning,) = [str(w.message) for w in caught if "training mean" in str(w.message)]
    assert not [w for w in caught if w.category is PointAtZeroWarning]  # said per cell
    assert warning.startswith(f"{flagged[:60].sum()} of 60 runs of width 4, Δ = 0: ")


def _indexed(cell: Cell, indices, bucket: int | None = None) -> CellResult:
    """A cell's result whose step size, stop step and final network hold each run's index,
    and final loss its Δ (training stubbed)."""
    index = np.asarray(indices, float)
    params = Params(*(np.repeat(index[:, None], bucket or cell.width, axis=1),) * 3, index)
    fields = {f: index for f in SimulationResult._fields if f != "params"}
    fields.update(
        status=np.full(index.size, Status.CROSSED, np.int8),
        final_loss=index * 0 + cell.delta,
        certificate_checked=np.full(index.size, cell.spec.applies_certificate),
    )
    return CellResult(cell, index, SimulationResult(params=params, **fields))


def _recording(trained: list):
    """A `runner.train_cells` stub of `_indexed` results that appends each cell's indices
    to `trained`."""

    def train(work, **kwargs):
        trained.extend([list(indices) for _, indices in work])
        return [_indexed(cell, indices) for cell, indices in work]

    return train


def _crossed(work, **kwargs):
    """A `runner.train_cells` stub: every run crossed."""
    return [finished_cell(cell, [Status.CROSSED] * idx.size) for cell, idx in work]


@pytest.mark.parametrize(
    ("runs", "process", "trains", "shares"),
    [
        (7, 1, [1, 4], [[0, 3, 6], [1, 4, 4], [2, 5, 5]]),  # by hand: p, p + 3, … padded to 3
        (3, 2, [2], [[0], [1], [2]]),  # as many runs as processes: one run each
    ],
)
def test_processes_train_their_share_and_gather_every_run_in_index_order(
    runs, process, trains, shares, monkeypatch
):
    """Process `process` of 3 (training stubbed, each run's values its index) trains its
    runs p, p + 3, … (of 7 runs process 1 trains runs 1 and 4; of 3 runs, as many as the
    processes, each holds one run of every cell, and the run goes ahead); `gather` receives
    them padded to ⌈runs/3⌉ by repeating the last; from every process's share padded
    alike, the cell's runs 0, 1, … in order."""
    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=runs)
    trained = []

    def gather(local):
        np.testing.assert_array_equal(local[0], shares[process])
        parts = [_indexed(Cell(4, 0.0, spec), share) for share in shares]
        return jax.tree.map(lambda *v: np.stack(v), *[(p.step_size, p.result) for p in parts])

    monkeypatch.setattr(runner, "train_cells", _recording(trained))
    (cell,) = run_experiment(spec, processes=runner.Processes(process, 3, agreeing(gather, 3)))
    assert trained == [trains]
    for values in (cell.step_size, cell.result.stop_step, cell.result.params.w[:, 0]):
        np.testing.assert_array_equal(values, np.arange(runs))


@pytest.mark.parametrize("refused", [0, 1])
def test_a_share_refused_on_one_process_ends_them_all(refused, monkeypatch):
    """Process 0 of 2 (training stubbed): where process `refused`'s draws give a step size
    of 1/0, every process raises a SpecError naming step_size, none waits to gather runs;
    the refused process names its run."""
    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=4)
    said = []

    def train(work, **kwargs):
        if refused == 0:
            raise SpecError("step_size", "rule 'paper' gives h = inf for run 2")
        return [_indexed(cell, indices) for cell, indices in work]

    def gather(local):
        assert isinstance(local, np.ndarray) and local.ndim == 0, "runs gathered after a refusal"
        said.append(bool(local))
        return np.stack([local, np.asarray(refused != 1)])

    monkeypatch.setattr(runner, "train_cells", train)
    message = "step_size: .*h = inf for run 2" if refused == 0 else "runs: another process"
    with pytest.raises(SpecError, match=message):
        run_experiment(spec, processes=runner.Processes(0, 2, gather))
    assert said == [refused != 0]


def test_fewer_runs_than_processes_are_refused_before_any_run(monkeypatch):
    """3 runs per cell on 4 processes: process 3 would hold no run of any cell, and its
    share could not be gathered beside the others'; refused naming the field."""
    from gdrelu import runner

    monkeypatch.setattr(runner, "train_cells", lambda *a, **k: pytest.fail("trained"))
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=3)
    with pytest.raises(ValueError, match=r"^runs: 3 per cell, fewer than the 4 processes"):
        run_experiment(spec, processes=runner.Processes(3, 4, lambda v: pytest.fail("gathered")))


def test_a_batch_refused_for_memory_on_one_process_ends_them_all(monkeypatch):
    """Process 0 of 2 (training stubbed): where its share does not fit its memory budget
    (`BudgetError`), it says so at the gather the others wait at, then raises its own
    error; had it raised at once, the others would wait for its runs until timed out."""
    from gdrelu import runner
    from gdrelu.memory import BudgetError

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=4)
    said = []

    def train(work, **kwargs):
        raise BudgetError("width 4: one run needs more than the memory budget")

    def gather(local):
        said.append(bool(local))
        return np.stack([local, np.asarray(True)])

    monkeypatch.setattr(runner, "train_cells", train)
    with pytest.raises(BudgetError, match="width 4: one run needs"):
        run_experiment(spec, processes=runner.Processes(0, 2, gather))
    assert said == [False]


def _stub_training(monkeypatch, at_zero=None, batches_of_four=True):
    """Training stubbed in batches of 4 runs (else as the memory budget splits them):
    each batch reports one check, its runs crossed with `_indexed` results, and the runs
    `at_zero` (by Δ) with a point at 0."""
    import types

    from gdrelu import memory, runner

    at_zero = at_zero or {}

    def inputs(batch, *, bucket, classify_width):
        step = np.concatenate([indices for _, indices in batch]).astype(float)
        return None, types.SimpleNamespace(x=batch), step, {}

    def simulate(params, data, step, *, on_check, block, redo):
        on_check(1, np.full(step.size, Status.CROSSED, np.int8))
        parts = [_indexed(cell, indices, bucket=2 * cell.width) for cell, indices in data.x]
        return jax.tree.map(lambda *v: np.concatenate(v), *[p.result for p in parts])

    def flagged(spec, batch):
        return np.array([i in at_zero.get(cell.delta, ()) for cell, indices in batch
                         for i in indices])  # fmt: skip

    if batches_of_four:
        monkeypatch.setattr(runner, "run_bytes", lambda *args: (1, 1))
        monkeypatch.setattr(memory, "batching", lambda *args, **kwargs: (4, None, None))
    monkeypatch.setattr(runner, "batch_inputs", inputs)
    monkeypatch.setattr(runner, "simulate", simulate)
    monkeypatch.setattr(runner, "points_at_zero", flagged)


def test_batches_split_cells_and_report_and_warn_per_cell(monkeypatch):
    """Two cells of 5 runs in batches of 4 (training stubbed): batches of runs 0-3 of Δ 0,
    then run 4 and runs 0-2 of Δ 0.1, then runs 3-4, announced so before the first; each
    cell comes back in run order, its networks cut from the bucket's 8 neurons to its 4; a
    later batch's checks report the earlier batches' runs too (4, 8, 10 statuses); and
    each cell warns of its own runs with a point at x = 0 (runs 0 and 4 of Δ 0, run 3 of
    Δ 0.1), not of its batches'."""
    import warnings

    from gdrelu import runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0, 0.1), runs=5)
    work = [(Cell(4, delta, spec), np.arange(5)) for delta in spec.deltas]
    _stub_training(monkeypatch, at_zero={0.0: {0, 4}, 0.1: {3}})
    seen, planned = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = runner.train_cells(
            work, bucket=8, classify_width=8, budget=1,
            on_check=lambda widths, k, status: seen.append((widths, status.size)),
            on_batches=planned.append,
        )  # fmt: skip
    assert seen == [((4,), 4), ((4,), 8), ((4,), 10)]
    first, second = (cell for cell, _ in work)
    assert planned == [[[first], [first, second], [second]]]
    for (cell, _), result in zip(work, done, strict=True):
        assert result.cell == cell and result.result.params.w.shape == (5, 4)
        for values in (result.step_size, result.result.stop_step):
            np.testing.assert_array_equal(values, np.arange(5))
        np.testing.assert_array_equal(result.result.final_loss, np.full(5, cell.delta))
    messages = [str(w.message) for w in caught]
    assert [m.split(":")[0] for m in messages] == [
        "2 of 5 runs of width 4, Δ = 0",
        "1 of 5 runs of width 4, Δ = 0.1",
    ]


def test_a_cells_batches_are_joined_once_into_the_whole_and_freed():
    """Four batches of a cell (3, 1, 5 and 2 runs, every field random in its dtype) join
    into the arrays of the 11 runs whole, as joined pair by pair, each field concatenated
    once; the list of batches is emptied and their arrays freed, and one batch comes back
    as it is."""
    import functools
    import weakref

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=11)
    cell = Cell(4, 0.0, spec)
    rng = np.random.default_rng(3)
    done = finished_cell(cell, [Status.CROSSED] * 11)
    random = jax.tree.map(lambda v: (rng.random(v.shape) * 100).astype(v.dtype), done[1:])
    whole = CellResult(cell, *random)
    cuts = [(0, 3), (3, 4), (4, 9), (9, 11)]
    batches = [
        CellResult(cell, *jax.tree.map(lambda v, a=a, b=b: v[a:b].copy(), random)) for a, b in cuts
    ]
    pairwise = functools.reduce(cells.joined_cell, batches)
    freed = [weakref.ref(b.result.params.a) for b in batches]
    joined = cells.joined_cells(batches)
    assert batches == [] and [ref() for ref in freed] == [None] * len(cuts)
    assert joined.cell is cell
    leaves = [jax.tree.leaves(c[1:]) for c in (joined, whole, pairwise)]
    for got, want, pair in zip(*leaves, strict=True):
        assert got.dtype == want.dtype == pair.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(pair, want)
    one = [whole]
    assert cells.joined_cells(one) is whole and one == []
    other = whole._replace(result=whole.result._replace(params=None))
    with pytest.raises(ValueError, match="batches of one cell differ"):
        cells.joined_cells([whole, other])


def test_the_batches_to_come_are_announced_before_they_train(monkeypatch):
    """run_experiment announces every batch of its buckets before the first trains, then
    a grown cell's batches as they begin (training stubbed, batches of 4): widths 4 and 64
    (two buckets) of 5 runs per Δ, three batches each; every crossed, so each cell's
    interval (half-width 0.26 at 5 runs) is too wide for 0.2 and it grows to max_runs 7:
    2 more runs per cell, one batch per bucket, before the next bucket trains. Each batch
    announced is one that trains: as many checks 1, and of its widths."""
    from gdrelu.runner import run_experiment

    _stub_training(monkeypatch)
    spec = ExperimentSpec(widths=(4, 64), deltas=(0.0, 0.1), runs=5, target_halfwidth=0.2,
                          max_runs=7)  # fmt: skip
    begun, planned = [], []
    done = run_experiment(
        spec,
        on_check=lambda widths, k, status: begun.append(widths) if k == 1 else None,
        on_batches=planned.append,
    )
    assert [cr.result.status.size for cr in done] == [7] * 4
    c4, c4b, c64, c64b = spec.cells()
    thirds = [[[c4], [c4, c4b], [c4b], [c64], [c64, c64b], [c64b]], [[c4, c4b]], [[c64, c64b]]]
    assert planned == thirds
    first, grown4, grown64 = ([tuple(sorted({c.width for c in b})) for b in p] for p in planned)
    assert begun == first[:3] + grown4 + first[3:] + grown64 == [(4,)] * 4 + [(64,)] * 4


def test_a_compares_batches_are_each_priced_once_and_all_begin(monkeypatch):
    """`gdrelu compare` plans every spec's batches ahead, and each spec's run announces
    them again: with the real memory split (training stubbed) of two specs under a budget
    that splits both, every batch planned begins, none is queued twice, and none is left
    owed at the end."""
    from gdrelu import memory, runner
    from gdrelu.cli import run
    from gdrelu.cli.progress import RunProgress
    from gdrelu.progress import spec_clock

    _stub_training(monkeypatch, batches_of_four=False)
    specs = [ExperimentSpec(widths=(4, 64), deltas=(0.0, 0.1), runs=400, optimizer=name)
             for name in ("gd", "momentum")]  # fmt: skip
    budget = 2 * sum(memory.results_bytes(s) for s in specs)
    left = [budget, budget - memory.results_bytes(specs[0])]  # the first spec's results kept
    planned = [
        len(runner.first_batches(s, memory_budget=b)) for s, b in zip(specs, left, strict=True)
    ]
    clock = spec_clock(specs)
    progress = RunProgress(sum(s.runs * 4 for s in specs), clock, enabled=False)
    begun = []
    on_check = clock.on_check
    monkeypatch.setattr(clock, "on_check", lambda i, w, k: begun.append(i) or on_check(i, w, k))
    done = run._train(specs, progress, processes=None, budget=budget, out=None)
    assert len(done) == 8 and min(planned) > 2
    assert [begun.count(i) for i in (0, 1)] == planned  # one check per stubbed batch
    assert not any(clock.queued) and all(not any(w.values()) for w in clock.waiting)


@pytest.mark.parametrize("name", ["on_check", "on_cells_done", "on_batches", "on_forecast"])
def test_a_callback_that_cannot_be_called_is_refused_before_training(name, monkeypatch):
    """`run_experiment(spec, on_check=3)` failed with "'int' object is not callable" after
    the first chunk had trained (API review)."""
    from gdrelu import runner

    monkeypatch.setattr(runner, "train_cells", lambda *a, **k: pytest.fail("trained"))
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=4)
    with pytest.raises(ValueError, match=rf"^{name}: 3 is not a function"):
        runner.run_experiment(spec, **{name: 3})


def test_a_cell_grown_to_a_target_stops_at_max_runs_exactly(monkeypatch):
    """A target no 6 runs can meet (half-width 0.01): batches of 4 grow each cell to 4,
    then to 6 (a last batch of runs 4 and 5, not 4 runs), and no further."""
    from gdrelu import runner

    trained = []

    def train_cells(work, **kwargs):
        trained.extend([list(indices) for _, indices in work])
        return train(work, **kwargs)

    train = runner.train_cells
    monkeypatch.setattr(runner, "train_cells", train_cells)
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=4, check_every=100, max_checks=5,
                          target_halfwidth=0.01, max_runs=6)  # fmt: skip
    (cell,) = runner.run_experiment(spec)
    assert cell.result.status.size == 6
    assert trained == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_adaptive_runs_equal_a_run_of_their_final_size():
    """--target-halfwidth: each cell grows in batches of `runs` until its interval is
    narrow enough or it has max_runs; every cell equals a run of its final count from the start."""
    from gdrelu.analysis import interval_halfwidth
    from gdrelu.runner import run_experiment

    base = dict(widths=(4,), deltas=(0.0, 0.1), check_every=100, max_checks=20)
    adaptive = run_experiment(ExperimentSpec(**base, runs=8, target_halfwidth=0.2, max_runs=32))
    sizes = [cr.result.status.size for cr in adaptive]
    assert all(s in (8, 16, 24, 32) for s in sizes) and max(sizes) > 8
    for cr in adaptive:
        size = cr.result.status.size
        assert interval_halfwidth(cr) <= 0.2 or size == 32
        if size > 8:  # it grew because the smaller count was too wide
            shorter = cr._replace(result=jax.tree.map(lambda v, s=size: v[: s - 8], cr.result))
            assert interval_halfwidth(shorter) > 0.2
        (whole,) = [
            c
            for c in run_experiment(ExperimentSpec(**base, runs=size))
            if c.cell.delta == cr.cell.delta
        ]
        np.testing.assert_array_equal(whole.result.status, cr.result.status)
        np.testing.assert_array_equal(whole.result.stop_step, cr.result.stop_step)
        np.testing.assert_array_equal(whole.result.params.a, cr.result.params.a)


def test_float64_without_x64_says_how_to_enable_it():
    """JAX without its 64-bit mode would train float64 specs in float32: refused, naming
    the switch (the CLI turns it on before it builds its specs)."""
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(SpecError, match=r'jax.config.update\("jax_enable_x64", True\)') as err:
            ExperimentSpec()
        assert err.value.field == "dtype"
        ExperimentSpec(dtype="float32")
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("value", [[], {}, 3])
def test_a_named_setting_of_the_wrong_type_is_a_spec_error(value):
    """`optimizer = []` in a TOML file: a SpecError naming the field, not a TypeError."""
    with pytest.raises(SpecError, match="optimizer"):
        ExperimentSpec.from_dict({"optimizer": value})


def test_from_dict_takes_back_what_to_dict_wrote_and_names_a_bare_value():
    """A resume rebuilds its specs from the manifest's `to_dict` (None where stop_on or
    split is unset, lists after JSON); a bare value where a list belongs is a SpecError
    naming the field, not a TypeError."""
    specs = (
        ExperimentSpec(widths=(8,), runs=2),
        ExperimentSpec(
            widths=(8, 16), deltas=(0.1,), runs=2, optimizer="sgd", stop_on=("crossed",)
        ),
    )
    for spec in specs:
        assert ExperimentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for name, value in (("widths", 16), ("split", 1), ("stop_on", 3), ("widths", np.int64(8))):
        with pytest.raises(SpecError, match=f"^{name}: must be a list"):
            ExperimentSpec.from_dict({name: value})
    # a numpy array, as the constructor takes (it was 'must be a list'); no mapping at all
    arrays = {"widths": np.array([8, 16]), "deltas": np.array([0.1])}
    assert ExperimentSpec.from_dict({**arrays, "runs": 2}) == ExperimentSpec(**arrays, runs=2)
    with pytest.raises(TypeError, match=r"^values: a mapping of spec fields"):
        ExperimentSpec.from_dict(None)


def test_the_defaults_are_the_documented_job():
    """README.md: widths 16-128, Δ ∈ {0, 0.01, 0.1}, 1000 runs per cell, float64, GD with
    the paper's step size; docs/theory.md: checks every 1000 steps, at most 1000."""
    spec = ExperimentSpec()
    assert (spec.widths, spec.deltas, spec.runs) == ((16, 32, 64, 128), (0.0, 0.01, 0.1), 1000)
    assert (spec.dtype, spec.optimizer, spec.step_size) == ("float64", "gd", "paper")
    assert (spec.check_every, spec.max_checks, spec.seed) == (1000, 1000, 0)
    assert spec.certified and not spec.final_stuck_rule


def test_cells_run_width_by_width_each_delta_in_the_given_order():
    """The rows follow the cells in order (docs/outputs.md): width by width as given, each
    width's offsets Δ in the order given."""
    spec = ExperimentSpec(widths=(16, 8), deltas=(0.1, 0.0), runs=2)
    assert [(c.width, c.delta) for c in spec.cells()] == [(16, 0.1), (16, 0.0), (8, 0.1), (8, 0.0)]


@pytest.mark.parametrize(
    ("values", "full"),
    [
        ({}, True),
        (dict(optimizer="adam"), True),
        (dict(optimizer="sgd"), False),  # the multinomial sampler by default
        (dict(optimizer="sgd", sampler="full"), True),
        (dict(data="p-ex", optimizer="sgd", sampler="epoch", step_size=0.01), False),
    ],
)
def test_full_batch_follows_the_optimizers_sampler(values, full):
    """Whether runs draw minibatch noise (`runner`) and take --batch-size (`cli`)."""
    assert ExperimentSpec(widths=(8,), runs=2, **values).full_batch is full


def test_run_experiment_needs_64_bit_mode_even_for_float32():
    """Without x64 the multinomial counts were drawn in float32: a float32 spec's weights
    and statuses differed from the CLI's (which turns x64 on) for the same seed."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=4, dtype="float32", max_checks=1)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            run_experiment(spec)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_run_experiment_names_a_spec_or_budget_it_cannot_take():
    with pytest.raises(TypeError, match="spec: an ExperimentSpec"):
        run_experiment({"widths": [4]})  # 'dict' object has no attribute 'path'
    for budget in ("1GB", True, -1):
        with pytest.raises(ValueError, match=r"memory_budget: .* is not a positive number"):
            run_experiment(ExperimentSpec(widths=(4,), runs=2), memory_budget=budget)


@pytest.mark.parametrize(("bad", "named"), [(0, (8, 0.0, 5)), (3, (8, 0.0, 8)),
                                            (4, (4, 0.1, 2)), (6, (4, 0.1, 4))])  # fmt: skip
def test_a_bad_step_size_names_its_own_cell_and_run(bad, named):
    """A batch of two cells, runs 5-8 of (8, 0) then 2-4 of (4, 0.1): the h at batch
    position `bad` belongs to the run counted here by hand, at every cell boundary."""
    from gdrelu.runner import _check_step_sizes

    spec = ExperimentSpec(widths=(4, 8), deltas=(0.0, 0.1), runs=10)
    work = [(Cell(8, 0.0, spec), np.arange(5, 9)), (Cell(4, 0.1, spec), np.arange(2, 5))]
    step = np.full(7, 0.1)
    step[bad] = np.inf
    width, delta, run = named
    with pytest.raises(SpecError, match=rf"for run {run} of width {width}, Δ = {delta:g} \(1 "):
        _check_step_sizes(work, step)


def test_a_batch_whose_runs_are_all_held_is_neither_announced_nor_trained(monkeypatch):
    """One cell of 8 runs in batches of 4 (training stubbed), runs 0-3 held (stored
    before): only the second batch is announced and trains; its check counts the 4 held
    runs as finished, and the cell holds runs 0-7 in index order."""
    from gdrelu import parts, runner

    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=8)
    (cell,) = spec.cells()
    _stub_training(monkeypatch)
    trained, planned, seen = [], [], []
    simulate = runner.simulate

    def counted(params, data, *args, **kwargs):
        trained.append([idx.tolist() for _, idx in data.x])
        return simulate(params, data, *args, **kwargs)

    monkeypatch.setattr(runner, "simulate", counted)
    stored = _indexed(cell, np.arange(4))
    held = {cell: parts.held_runs(cell, [(np.arange(4), stored.step_size, stored.result)])}
    (done,) = runner.train_cells(
        [(cell, np.arange(8))], bucket=4, classify_width=4, budget=1,
        on_check=lambda widths, k, status: seen.append(status.size),
        on_batches=planned.append, held=held,
    )  # fmt: skip
    assert planned == [[[cell]]] and trained == [[[4, 5, 6, 7]]] and seen == [8]
    np.testing.assert_array_equal(done.step_size, np.arange(8))
    np.testing.assert_array_equal(done.result.stop_step, np.arange(8))


@pytest.mark.parametrize(
    ("widths", "deltas", "buckets", "trains", "unit_seconds"),
    [
        ((4, 6), (0.0,), "one", [[4, 6]], {4: 100.0, 6: 0.0}),  # one bucket of two widths
        ((8, 4), (0.0, 0.1), "auto", [[8], [4]], {8: 100.0, 4: 100.0}),  # a bucket each
    ],
)
def test_each_unit_records_only_its_own_training_time(
    widths, deltas, buckets, trains, unit_seconds, tmp_path, monkeypatch
):
    """A bucket's training time (faked: 100 s per bucket) goes to its first width's unit
    and none to the others, so the stored seconds add up to the time trained (which a
    resume adds to its own), not counted once per width nor from the clock's zero; a
    resume hands the stored units to `on_stored` and trains none of them again."""
    import types

    from gdrelu import runner, store

    clock = types.SimpleNamespace(now=1000.0)  # the clock's reading at the start
    trained = []

    def train(work, **kwargs):
        trained.append(sorted({cell.width for cell, _ in work}))
        clock.now += 100.0
        return [finished_cell(cell, [Status.CROSSED] * idx.size) for cell, idx in work]

    monkeypatch.setattr(runner, "train_cells", train)
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    spec = ExperimentSpec(widths=widths, deltas=deltas, runs=3, buckets=buckets)
    runner.run_experiment(spec, units=tmp_path)
    assert trained == trains
    units = {width: tmp_path / store.UNITS / f"gd-w{width}.npz" for width in widths}
    assert {width: float(np.load(unit)["seconds"]) for width, unit in units.items()} == unit_seconds
    assert store.stored_seconds(tmp_path) == 100.0 * len(trains)
    loaded = []
    again = runner.run_experiment(spec, units=tmp_path, on_stored=loaded.extend)
    assert trained == trains  # read back, not trained again
    assert [cr.cell for cr in loaded] == [cr.cell for cr in again] == spec.cells()


def test_a_widths_cells_are_reported_done_only_once_its_unit_is_stored(tmp_path, monkeypatch):
    """`on_cells_done` hears of a width's cells only once its unit is on disk, so a
    Ctrl-C there keeps them: widths 4 and 64 in two buckets (training stubbed), each
    width's unit exists when its cells are reported, the next width's not yet."""
    from gdrelu import runner, store

    train = _crossed

    def done(cells):
        on_disk = [(tmp_path / store.UNITS / f"gd-w{w}.npz").exists() for w in (4, 64)]
        seen.append((cells[0].cell.width, on_disk))

    seen = []
    monkeypatch.setattr(runner, "train_cells", train)
    spec = ExperimentSpec(widths=(4, 64), deltas=(0.0,), runs=3)
    runner.run_experiment(spec, units=tmp_path, on_cells_done=done)
    assert seen == [(4, [True, False]), (64, [True, True])]


def test_a_buckets_batches_get_the_budget_less_the_finished_runs(monkeypatch):
    """Each bucket's batches are planned in the memory budget less what the spec's
    finished runs hold (`memory.results_bytes`: they stay in memory until the end)
    (training stubbed)."""
    from gdrelu import memory, runner

    budgets = []

    def train(work, *, budget, **kwargs):
        budgets.append(budget)
        return [_indexed(cell, indices) for cell, indices in work]

    monkeypatch.setattr(runner, "train_cells", train)
    spec = ExperimentSpec(widths=(4, 64), deltas=(0.0,), runs=3)
    run_experiment(spec, memory_budget=1 << 30)
    assert budgets == [(1 << 30) - memory.results_bytes(spec)] * 2


def test_the_batches_announced_on_resume_leave_out_the_stored_widths(tmp_path, monkeypatch):
    """Resuming with width 4's unit stored: the batches announced before training hold
    only width 64's cells, those that train (training stubbed)."""
    from gdrelu import runner, store

    train = _crossed

    monkeypatch.setattr(runner, "train_cells", train)
    spec = ExperimentSpec(widths=(4, 64), deltas=(0.0,), runs=3)
    c4, c64 = spec.cells()
    (tmp_path / store.UNITS).mkdir()
    store.save_unit(tmp_path, "gd-w4", [finished_cell(c4, [Status.CROSSED] * 3)], 1.0)
    planned = []
    done = run_experiment(spec, units=tmp_path, on_batches=planned.append)
    assert planned == [[[c64]]] and [cr.cell for cr in done] == [c4, c64]


def test_a_target_halfwidth_across_processes_is_refused_before_any_run(monkeypatch):
    """docs/design.md: growing cells to a target is not yet done across processes; the
    runner refuses it, naming the field, before anything trains or is gathered."""
    from gdrelu import runner

    monkeypatch.setattr(runner, "train_cells", lambda *a, **k: pytest.fail("trained"))
    spec = ExperimentSpec(widths=(4,), deltas=(0.0,), runs=4, target_halfwidth=0.1, max_runs=8)
    with pytest.raises(ValueError, match=r"^target_halfwidth: not supported across processes"):
        run_experiment(spec, processes=runner.Processes(0, 2, lambda v: pytest.fail("gathered")))


def _paper_runs(runs=40):
    """The first `runs` of 40 paper runs of width 8 at Δ = 0 and their h (tests/test_engine.py's
    `width8`: the same shapes, so the same compiled programs)."""
    return jax.tree.map(lambda v: np.asarray(v)[:runs], paper_runs(8, 40))


def test_simulate_reports_every_check_until_the_last_run_stops():
    """`simulate`'s docstring: `on_check(k, status)` gets every status after check k, and
    a run stopped at check k is reported from that check on with its final status (the
    others RUNNING); the checks end with the last run, not at `max_checks`. Without
    held-out points the test loss is NaN (docs/outputs.md); step numbers are integers;
    the certificate was checked only where both of its rules, stuck and degenerate, were
    applied (`certificate_checked`)."""
    from gdrelu import simulate

    params, data, step = _paper_runs(38)  # the first 38 stop by check 80, the 39th at 100
    seen = []
    result = simulate(
        params,
        data,
        step,
        check_every=200,
        max_checks=100,
        on_check=lambda k, status: seen.append((k, status)),
    )
    last = int(result.stop_step.max()) // 200
    assert 1 < last < 100 and Status.UNFINISHED not in result.status.tolist()
    assert [k for k, _ in seen] == list(range(1, last + 1))
    for k, status in seen:
        want = np.where(result.stop_step <= 200 * k, result.status, Status.RUNNING)
        np.testing.assert_array_equal(status, want)
    assert np.isnan(result.test_loss_at_best).all()
    for field in ("stop_step", "pattern_change_step", "loss_below_step", "best_step"):
        assert np.issubdtype(getattr(result, field).dtype, np.integer), field
    assert result.certificate_checked.all()
    # one of the proofs: the programs of tests/test_engine.py's points at zero
    one_proof = simulate(params, data, step, check_every=200, max_checks=1, stop_on=("stuck",))
    assert not one_proof.certificate_checked.any()


def test_simulate_casts_jax_inputs_to_the_parameters_dtype():
    """`simulate`'s docstring: runs train in the params' dtype, to which the other inputs
    are cast, JAX arrays as well as numpy ones: float32 runs given float64 points and
    step sizes as JAX arrays equal those given them as float32 numpy arrays, bit for bit."""
    from gdrelu import simulate

    params, data, step = _paper_runs()
    as32 = lambda t: type(t)(*(np.asarray(f, np.float32) for f in t))  # noqa: E731
    kwargs = dict(check_every=200, max_checks=2)
    want = simulate(as32(params), as32(data), np.float32(step), **kwargs)
    got = simulate(as32(params), jax.device_put(data), jax.device_put(step), **kwargs)
    assert got.params.a.dtype == np.float32
    np.testing.assert_array_equal(got.status, want.status)
    for g, w in zip(got.params, want.params, strict=True):
        np.testing.assert_array_equal(g, w)


def test_simulate_ntk_on_d_dim_data_trains_the_scaled_network():
    """docs/theory.md: the NTK parameterization's forward multipliers are (√(2/d), √(2/n))
    for d-dimensional inputs and n neurons: f = c + √(2/n) Σ w_i σ(√(2/d) a_i·x + b_i).
    GD on d = 2, n = 3 (so that d and n differ) equals a hand-written gradient loop."""
    from gdrelu import WeightedData, simulate

    rng = np.random.default_rng(11)
    runs, dim, width, points, h, steps = 2, 2, 3, 5, 0.05, 20
    params = Params(
        rng.normal(size=(runs, dim, width)),
        rng.normal(scale=0.3, size=(runs, width)),
        rng.normal(size=(runs, width)),
        rng.normal(scale=0.1, size=runs),
    )
    x = rng.normal(size=(runs, points, dim))
    data = WeightedData(x, np.sin(x.sum(-1)), np.full((runs, points), 1.0 / points))
    result = simulate(params, data, h, parameterization="ntk", check_every=10, max_checks=2,
                      stop_on=())  # fmt: skip
    assert result.status.tolist() == [Status.UNFINISHED] * runs
    scales = (np.sqrt(2.0 / dim), np.sqrt(2.0 / width))
    for run in range(runs):
        theta = [np.asarray(leaf[run]) for leaf in params]
        want = numpy_gd(theta, *(np.asarray(v[run]) for v in data), h, steps, scales)
        for got, w in zip(result.params, want, strict=True):
            np.testing.assert_allclose(got[run], w, rtol=1e-10, atol=1e-12)


def test_simulate_passes_the_data_and_held_out_points_to_its_choices():
    """Refused before any run trains, naming the argument: the certificate's rules on
    d-dim data and the propagator for d-dim inputs or with held-out test points
    (`simulate`'s docstring, docs/design.md "Training paths"), and more multinomial SGD
    steps (check_every × max_checks) than one run's counters cover. Each input also has a
    point that is not finite, refused later: the refusal asked for must come first."""
    from gdrelu import WeightedData, simulate

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 2))
    x[0, 0, 0] = np.nan
    planar = WeightedData(x, np.ones((2, 4)), np.full((2, 4), 0.25))
    wide = Params(np.ones((2, 2, 3)), np.zeros((2, 3)), np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"^stop_on: \['stuck'\] are proofs .* d-dim data"):
        simulate(wide, planar, 0.01, stop_on=("stuck",))
    with pytest.raises(ValueError, match=r"^path='propagator' needs"):
        simulate(wide, planar, 0.01, stop_on=(), path="propagator")
    line = np.array([[-1.0, 0.5, 2.0, np.nan], [-2.0, -0.5, 1.0, 3.0]])
    data = WeightedData(line, np.sin(line), np.full((2, 4), 0.25))
    params = Params(*(np.full((2, 2), v) for v in (1.0, 0.0, 0.5)), np.zeros(2))
    clean = data._replace(x=np.nan_to_num(line))
    with pytest.raises(ValueError, match=r"^path='propagator' needs"):
        simulate(params, data, 0.01, path="propagator", stop_on=("crossed",), test=clean)
    keys = np.zeros((2, 2), np.uint32)
    with pytest.raises(ValueError, match=r"^max_checks: 268451840 steps of 16 multinomial"):
        simulate(params, data, 0.01, optimizer="sgd", key=keys, check_every=2**14,
                 max_checks=2**14 + 1)  # fmt: skip


def test_simulate_turns_on_the_default_compilation_cache(monkeypatch):
    """`simulate`'s docstring: its call turns on JAX's compilation cache (`gdrelu.cache`,
    which acts once per process; tests/test_cache.py checks what it does), whatever the
    call is then refused for."""
    from gdrelu import WeightedData, simulate
    from gdrelu.engine import simulation

    calls = []
    monkeypatch.setattr(simulation, "use_default_cache", lambda: calls.append(True))
    params = Params(*(np.full((2, 2), v) for v in (1.0, 0.0, 0.5)), np.zeros(2))
    data = WeightedData(np.ones((2, 3)), np.ones((2, 3)), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"^check_every: must be a positive integer"):
        simulate(params, data, 0.01, check_every=0)
    assert calls == [True]
