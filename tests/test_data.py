"""Data sets: the geometry of the ray data, the laws of the continuous samplers (Monte
Carlo tolerances of five standard errors, or the DKW bound at δ = 1e-6), training
statistics, and user data files."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import files_left_open

from gdrelu.data import (
    WeightedData,
    check_user_data,
    cross_points,
    double_cross_points,
    load_user_data,
    multi_axis_points,
    multinomial_weights,
    sample_example,
    sample_radial,
    sample_rbf,
    split_indices,
    star_points,
    training_statistics,
)

COUNT = 20_000
Z = 5.0


@pytest.mark.parametrize(
    ("points", "rays", "dim"),
    [
        (star_points(), 11, 2),
        (cross_points(), 4, 2),
        (double_cross_points(), 8, 2),
        (multi_axis_points(4), 8, 4),
    ],
)
def test_ray_data_geometry(points, rays, dim):
    """Three points per ray at radii (0.9, 1, 1.1) on distinct directions, targets (1, -2, 1)."""
    x, y = (np.asarray(v) for v in points)
    assert x.shape == (3 * rays, dim)
    radii = np.linalg.norm(x, axis=1).reshape(rays, 3)
    np.testing.assert_allclose(radii, np.tile([0.9, 1.0, 1.1], (rays, 1)), rtol=1e-12)
    directions = x.reshape(rays, 3, dim)[:, 1]
    assert (
        np.min(np.linalg.norm(directions[:, None] - directions[None], axis=2) + 3 * np.eye(rays))
        > 0.1
    )
    np.testing.assert_array_equal(y, np.tile([1.0, -2.0, 1.0], rays))


def test_star_angles():
    x, _ = star_points()
    angles = np.sort(np.mod(np.arctan2(x[1::3, 1], x[1::3, 0]), 2 * np.pi))
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(11) / 11, atol=1e-12)


def test_example_distribution():
    """P_ex: E X² = 1, P(X > 0) = 1/2, |X| ≤ 1/√(105/196); y - g(X) ~ N(0, (0.1/0.727)²)
    with g written out again from PAPER.md."""
    x, y = (np.asarray(v) for v in sample_example(jax.random.key(0), COUNT))
    x2 = x * x
    assert abs(x2.mean() - 1.0) <= Z * x2.std() / math.sqrt(COUNT)
    assert abs((x > 0).mean() - 0.5) <= Z * 0.5 / math.sqrt(COUNT)
    assert np.all(np.abs(x) <= 1 / math.sqrt(105 / 196) + 1e-12)
    g = (np.cos(7 * np.pi * (x - x / np.sqrt(1 + x**2))) + 0.2 * x**2 + 0.074) / 0.727
    noise_var = (0.1 / 0.727) ** 2
    assert abs(np.var(y - g) - noise_var) <= Z * noise_var * math.sqrt(2 / COUNT)
    assert abs(np.mean(y - g)) <= Z * math.sqrt(noise_var / COUNT)  # the noise has mean 0


@pytest.mark.parametrize("dim", [1, 3])
def test_radial_distribution(dim):
    """P_d: ‖X‖/√3 = U ~ U[0, 1] (DKW bound), y = cos(2πU), directions of mean zero."""
    x, y = (np.asarray(v) for v in sample_radial(jax.random.key(1), COUNT, dim))
    x = x.reshape(COUNT, dim)
    u = np.sort(np.linalg.norm(x, axis=1) / math.sqrt(3))
    eps = math.sqrt(math.log(2 / 1e-6) / (2 * COUNT))
    ecdf = np.arange(1, COUNT + 1) / COUNT
    assert np.max(np.abs(ecdf - u)) <= eps + 1 / COUNT
    np.testing.assert_allclose(
        y, np.cos(2 * np.pi * np.linalg.norm(x, axis=1) / math.sqrt(3)), atol=1e-12
    )
    assert np.all(np.abs(x.mean(0)) <= Z * math.sqrt(1.0 / dim) / math.sqrt(COUNT))


@pytest.mark.parametrize("dim", [1, 3])
def test_rbf_distribution(dim):
    """rbf: X ~ N(0, I_d) (each coordinate of mean 0 and variance 1, within 5 SE; x (m,)
    in 1-D) and the noise-free radial bump y = exp(-‖X‖²/2) (docs/theory.md, "Data")."""
    x, y = (np.asarray(v) for v in sample_rbf(jax.random.key(2), COUNT, dim))
    assert x.shape == ((COUNT,) if dim == 1 else (COUNT, dim)) and y.shape == (COUNT,)
    x = x.reshape(COUNT, dim)
    assert np.all(np.abs(x.mean(0)) <= Z / math.sqrt(COUNT))
    assert np.all(np.abs(x.var(0) - 1.0) <= Z * math.sqrt(2 / COUNT))
    np.testing.assert_allclose(y, np.exp(-(np.linalg.norm(x, axis=1) ** 2) / 2), rtol=1e-12)


def test_training_statistics_standardize_the_training_set():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 2))
    x[:, 1] = 7.0  # a constant coordinate keeps scale 1
    y = rng.normal(-1.0, 0.5, size=50)
    p = rng.dirichlet(np.ones(50))
    stats = training_statistics(WeightedData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(p)))
    xs, ys = (np.asarray(v) for v in stats.apply(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(p @ xs, 0.0, atol=1e-12)
    np.testing.assert_allclose(p @ xs[:, 0] ** 2, 1.0, rtol=1e-12)
    np.testing.assert_allclose(xs[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose([p @ ys, p @ ys**2], [0.0, 1.0], atol=1e-12)


def test_split_is_a_partition():
    parts = split_indices(jax.random.key(3), 101)
    joined = np.sort(np.concatenate([np.asarray(p) for p in parts]))
    np.testing.assert_array_equal(joined, np.arange(101))
    assert [p.size for p in parts] == [61, 20, 20]


def test_user_data_files(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("x1,x2,y\n1,0,1\n0,1,-1\n-1,0.5,2\n")
    x, y = load_user_data(csv)
    assert x.shape == (3, 2) and y.tolist() == [1.0, -1.0, 2.0]
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.array([1.0, 2.0, 3.0]), y=np.array([0.0, 1.0, 0.0]))
    x, y = load_user_data(npz)
    assert x.shape == (3,) and y.shape == (3,)
    column = tmp_path / "column.npz"  # one input column is 1-D data, as in a CSV
    np.savez(column, x=np.array([[1.0], [2.0], [3.0]]), y=np.array([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(load_user_data(column)[0], x)
    one = tmp_path / "one.csv"
    one.write_text("x,y\n1,0\n2,1\n3,0\n")
    np.testing.assert_array_equal(load_user_data(one)[0], x)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([1.0, np.inf]), y=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_user_data(bad)
    with pytest.raises(ValueError, match="data"):
        check_user_data(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="data"):  # a file with a y column alone
        check_user_data(np.ones((3, 0)), np.ones(3))
    with pytest.raises(ValueError, match="cannot read"):
        load_user_data(tmp_path / "missing.csv")
    cut = tmp_path / "cut.npz"  # a damaged archive is refused, its file closed
    cut.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(ValueError, match="not an NPZ archive"):
        load_user_data(cut)
    assert not files_left_open(lambda: load_user_data(cut), ValueError)
    with pytest.raises(ValueError, match="m ≥ 2"):  # one point: nothing to fit or split
        check_user_data(np.ones(1), np.ones(1))


@pytest.mark.parametrize(
    ("dtype", "bits", "widest"), [("float32", 24, 4096), ("float64", 53, 94_906_265)]
)
def test_multinomial_counts_are_exact_up_to_the_dtype_s_integers(dtype, bits, widest):
    """jax.random.multinomial counts in floats: N = 2^bits draws sum exactly to N, the
    square of the next odd width (no float of the dtype) does not."""

    keys = jax.random.split(jax.random.key(0), 20)

    def counts(n):
        probs = jnp.full((6,), 1 / 6, dtype)
        draw = jax.vmap(lambda k: jax.random.multinomial(k, n, probs, dtype=dtype))
        return np.asarray(draw(keys)).astype(np.int64).sum(axis=1)

    assert widest == math.isqrt(2**bits)
    assert np.all(counts(2**bits) == 2**bits)
    odd = widest + 1 + widest % 2
    assert np.any(counts(odd**2) != odd**2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_spec_admits_the_widths_whose_counts_stay_exact(dtype):
    """Counts are drawn in float64 whatever the spec's dtype (x64 on): N = n² exact up to
    width 94 906 265; with x64 off (float32 counts) up to 4096. Above, the spec refuses the
    width, naming it, unless num_samples caps N."""
    from gdrelu import ExperimentSpec, SpecError

    for x64, widest, bits in ((True, 94_906_265, 53), (False, 4096, 24)):
        if not x64 and dtype == "float64":
            continue
        jax.config.update("jax_enable_x64", x64)
        try:
            ExperimentSpec(widths=(widest,), deltas=(0.0,), dtype=dtype)
            with pytest.raises(SpecError, match=f"width {widest + 1}: "):
                ExperimentSpec(widths=(widest + 1,), deltas=(0.0,), dtype=dtype)
            ExperimentSpec(widths=(widest + 1,), deltas=(0.0,), dtype=dtype, num_samples=2**bits)
            with pytest.raises(SpecError, match="num_samples"):
                ExperimentSpec(widths=(8,), deltas=(0.0,), dtype=dtype, num_samples=2**bits + 1)
            ExperimentSpec(widths=(widest + 1,), deltas=(0.0,), dtype=dtype, data="p-ex")
        finally:
            jax.config.update("jax_enable_x64", True)


def test_float32_weights_are_float64_counts_rounded():
    """At width 8192 (N = 2^26 > 2^24) float32 weights are the exact float64 counts / N,
    rounded: the paper's float32 code divided integer counts."""
    from gdrelu.data import multinomial_weights

    key = jax.random.key(5)
    wide = np.asarray(multinomial_weights(key, 33, 8192**2, jnp.float64))
    assert np.sum(np.round(wide * 8192**2)) == 8192**2
    narrow = np.asarray(multinomial_weights(key, 33, 8192**2, jnp.float32))
    np.testing.assert_array_equal(narrow, wide.astype(np.float32))
    assert narrow.dtype == np.float32 and wide.dtype == np.float64  # p_j in the dtype asked


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_validation_weights_are_a_draw_independent_of_the_training_weights(name):
    """The SGD and Adam protocols' validation weights are a second multinomial draw of
    N = n² samples, independent of the training weights (docs/theory.md, "Data"). Over
    4000 runs (N = 64, p = 1/6), within 5 SE: as few runs with both equal as independent
    draws give (q = Σ_c P(c)²); mean p and variance p(1 - p)/N (the sample variance's SE
    from the binomial fourth moment); correlation 0 with the training p_j (SE 1/√runs)."""
    from gdrelu import ExperimentSpec
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.protocols import protocol

    runs, width, m = 4000, 8, 6  # width 8: the draw programs of tests/test_protocols.py
    n, p = width**2, 1 / m
    spec = ExperimentSpec(**protocol(name), widths=(width,), deltas=(0.0,), runs=runs)
    _, data, valid = jax.device_get(initial_runs(Cell(width, 0.0, spec), np.arange(runs)))
    train = np.asarray(data.weights)
    assert valid.shape == train.shape == (runs, m)
    np.testing.assert_allclose(valid.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(valid * n, np.round(valid * n), atol=1e-9)  # counts / N
    # q = (N!/m^N)² [x^N] (Σ_k x^k/k!²)^m: Σ over count vectors c of P(c)²
    series = np.array([1 / math.factorial(k) ** 2 for k in range(n + 1)])
    power = np.ones(1)
    for _ in range(m):
        power = np.convolve(power, series)[: n + 1]
    q = (math.factorial(n) / m**n) ** 2 * power[n]
    equal = int(np.sum(np.all(valid == train, axis=1)))
    assert equal <= runs * q + Z * math.sqrt(runs * q * (1 - q)), (equal, runs * q)
    var = p * (1 - p) / n
    fourth = n * p * (1 - p) * (1 + 3 * (n - 2) * p * (1 - p)) / n**4  # E (p_j - p)⁴
    var_of_var = fourth / runs - var**2 * (runs - 3) / (runs * (runs - 1))
    for j in range(m):
        assert abs(np.mean(valid[:, j]) - p) < Z * math.sqrt(var / runs), j
        assert abs(np.var(valid[:, j], ddof=1) - var) < Z * math.sqrt(var_of_var), j
        correlation = np.corrcoef(train[:, j], valid[:, j])[0, 1]
        assert abs(correlation) < Z / math.sqrt(runs), (j, correlation)


def test_six_points_take_one_delta_and_vmap_over_several():
    """A list of Δ raised "unsupported operand type(s) for +": it is refused, naming delta,
    and vmap gives each Δ's targets."""
    from gdrelu import six_points

    with pytest.raises(ValueError, match=r"^delta: one number Δ \(jax.vmap over several\)"):
        six_points([0.0, 0.1])
    _, y = jax.vmap(six_points)(jnp.array([0.0, 0.5]))
    np.testing.assert_array_equal(y, [[-1, 2, -1, 1, -2, 1], [-0.5, 2.5, -0.5, 1.5, -1.5, 1.5]])


def test_a_single_sample_puts_all_weight_on_one_point():
    """N = 1 is a positive integer: one draw, so p is one point's indicator."""
    weights = np.asarray(multinomial_weights(jax.random.PRNGKey(0), 6, 1))
    np.testing.assert_array_equal(np.sort(weights), [0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("count", [2.5, 0, -5, True, np.array([4, 4])])
def test_a_sample_count_that_is_not_a_positive_integer_is_refused(count):
    """N = 2.5 gave weights summing to 0.8, N ≤ 0 NaN weights."""
    with pytest.raises(ValueError, match=r"^num_samples: .* is not a positive integer"):
        multinomial_weights(jax.random.PRNGKey(0), 6, count)


def test_a_sample_count_beyond_whole_counts_is_refused():
    """Counts are drawn in float64 here (x64 on): above 2^53 draws they stop being whole
    numbers, as `ExperimentSpec` says in refusing such an N; the function took them."""
    above = rf"^num_samples: {2**53 + 1} is above {2**53}, beyond which the counts"
    with pytest.raises(ValueError, match=above):
        multinomial_weights(jax.random.PRNGKey(0), 6, 2**53 + 1)
    assert float(np.sum(multinomial_weights(jax.random.PRNGKey(0), 6, 2**53))) == 1.0


def test_paper_data_names_a_bad_key_or_delta_and_keeps_its_dtype():
    """From the API review: a seed for the key and Δ as text failed inside JAX; a float64
    Δ turned y and the weights float64 beside float32 x."""
    from gdrelu import paper_data

    with pytest.raises(ValueError, match=r"^key: a JAX PRNG key, such as jax.random.key\(0\)"):
        paper_data(0, 0.0, 16)
    with pytest.raises(ValueError, match=r"^delta: one number Δ"):
        paper_data(jax.random.key(0), "0.1", 16)
    for delta in (np.nan, np.inf):  # targets of NaN, which simulate refused only later
        with pytest.raises(ValueError, match=rf"^delta: {delta} is not finite"):
            paper_data(jax.random.key(0), delta, 16)
    data = paper_data(jax.random.key(0), np.float64(0.5), 16, jnp.float32)
    assert [v.dtype for v in data] == [jnp.float32] * 3
    np.testing.assert_array_equal(data.y, np.float32([-1, 2, -1, 1, -2, 1]) + np.float32(0.5))
    deltas = jnp.linspace(0.0, 0.1, 3, dtype=jnp.float64)
    batch = jax.vmap(lambda d: paper_data(jax.random.key(0), d, 16, jnp.float32))(deltas)
    assert [v.dtype for v in batch] == [jnp.float32] * 3


def test_a_sample_count_in_a_concrete_array_is_checked_and_a_traced_one_is_not():
    """A concrete JAX array N = 0 skipped the check and gave NaN weights; it is refused as
    the Python 0 is, while N = 16 in an array draws as 16 does. A traced N (inside `jit`)
    is the caller's to check. No points at all was a ZeroDivisionError."""
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"^num_samples: .* is not a positive integer"):
        multinomial_weights(key, 6, jnp.asarray(0))
    drawn = multinomial_weights(key, 6, jnp.asarray(16))
    np.testing.assert_array_equal(drawn, multinomial_weights(key, 6, 16))
    traced = jax.jit(lambda n: multinomial_weights(key, 6, n))(jnp.asarray(16))
    np.testing.assert_array_equal(traced, drawn)
    with pytest.raises(ValueError, match=r"^num_points: 0 is not a positive integer"):
        multinomial_weights(key, 0, 5)


def test_num_samples_sets_each_runs_multinomial_count():
    """N = 7 instead of the default n² = 64 at width 8: every run's weights times 7 are
    counts (integers summing to 7); with 64 samples most would not be."""
    import jax

    from gdrelu.cells import Cell, initial_runs
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=20, num_samples=7)
    _, data, _ = jax.device_get(initial_runs(Cell(8, 0.0, spec), np.arange(20)))
    counts = np.asarray(data.weights) * 7
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    np.testing.assert_allclose(counts.sum(axis=1), 7)


def test_runs_that_never_stop_early_draw_no_validation_weights():
    """Runs without early stopping (GD's) never read validation weights, so none are drawn;
    the training weights are the same either way (their own key)."""
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.spec import ExperimentSpec

    drawn = {}
    for early in (False, True):
        spec = ExperimentSpec(
            widths=(8,), deltas=(0.0,), runs=20, num_samples=7, early_stopping=early
        )
        drawn[early] = jax.device_get(initial_runs(Cell(8, 0.0, spec), np.arange(20)))
    assert drawn[False][2] is None
    assert np.shape(drawn[True][2]) == (20, 6)
    np.testing.assert_array_equal(drawn[False][1].weights, drawn[True][1].weights)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_papers_targets_are_shifted_by_delta(early_stopping):
    """docs/theory.md, "Data": every run's x = (-3, -2, -1, 1, 2, 3) and
    y = (-1, 2, -1, 1, -2, 1) + Δ, also for runs that stop early (drawing validation
    weights): the draws of the tests above, at Δ = 0.25."""
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(widths=(8,), deltas=(0.25,), runs=20, num_samples=7,
                          early_stopping=early_stopping)  # fmt: skip
    _, data, valid = jax.device_get(initial_runs(Cell(8, 0.25, spec), np.arange(20)))
    if early_stopping:
        assert np.shape(valid) == (20, 6)
    else:
        assert valid is None
    np.testing.assert_array_equal(data.x, np.tile([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], (20, 1)))
    targets = np.array([-1.0, 2.0, -1.0, 1.0, -2.0, 1.0]) + 0.25
    np.testing.assert_allclose(data.y, np.tile(targets, (20, 1)), rtol=1e-15)


@pytest.mark.parametrize("seed", [2**32, 2**40])
def test_a_seed_beyond_32_bits_is_refused(seed):
    """The key takes the seed as uint32: 2**32 would wrap to seed 0's runs."""
    from gdrelu.spec import ExperimentSpec, SpecError

    with pytest.raises(SpecError, match="seed"):
        ExperimentSpec(widths=(8,), deltas=(0.0,), seed=seed)


def test_a_runs_keys_fold_the_seed_the_cell_and_its_own_index():
    """docs/design.md, "Runner": run i of a cell has key fold_in(fold_in(key(seed),
    cell_hash), i) (seed first, then the cell, then the index), and its minibatch noise
    fold_in(that key, 0x5EED), whatever its position among the runs drawn together
    (indices 5 and 2, in that order: their noise is not that of runs 0 and 1)."""
    from gdrelu.cells import Cell, noise_keys, run_key
    from gdrelu.spec import ExperimentSpec

    for seed, cell_hash, index in ((7, 123, 5), (0, 2**31 - 1, 0)):
        want = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), cell_hash), index)
        got = run_key(seed, cell_hash, index)
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    cell = Cell(8, 0.0, ExperimentSpec(widths=(8,), deltas=(0.0,), runs=6, seed=3))
    indices = np.array([5, 2])
    noise = np.asarray(noise_keys(cell, indices))
    for row, index in enumerate(indices):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), cell.cell_hash), index)
        np.testing.assert_array_equal(
            noise[row], jax.random.key_data(jax.random.fold_in(key, 0x5EED))
        )
    assert not np.array_equal(noise, np.asarray(noise_keys(cell, np.arange(2))))


def test_a_cells_runs_follow_its_width_and_default_to_n_squared_samples():
    """A cell's hash (its runs' keys) follows its width even where the sample count does
    not (N set, or continuous data's points): else widths 8 and 16 would train on the same
    data. Without N a run's weights come from N = n² samples (docs/fidelity.md)."""
    from gdrelu.cells import Cell
    from gdrelu.spec import ExperimentSpec

    for spec in (
        ExperimentSpec(widths=(8, 16), deltas=(0.0,), num_samples=7),
        ExperimentSpec(data="p-ex", widths=(8, 16), optimizer="adam", step_size=0.01),
    ):
        assert Cell(8, 0.0, spec).num_samples == Cell(16, 0.0, spec).num_samples
        assert Cell(8, 0.0, spec).cell_hash != Cell(16, 0.0, spec).cell_hash
    paper = ExperimentSpec(widths=(8, 16), deltas=(0.0,))
    assert [Cell(n, 0.0, paper).num_samples for n in (8, 16)] == [64, 256]


def test_training_statistics_are_weighted_by_weights_that_need_not_sum_to_1():
    """docs/theory.md, "Data": the weighted mean and standard deviation of the training
    inputs (per coordinate) and targets, Σ p_j v_j / Σ p_j, whatever the weights' total
    (numpy's weighted average here)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2)) * [2.0, 3.0] + [1.0, -1.0]
    y = rng.normal(size=30) + 4.0
    w = rng.uniform(0.5, 2.0, size=30)  # total about 37
    stats = training_statistics(WeightedData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)))
    for v, mean, scale in ((x, stats.x_mean, stats.x_scale), (y, stats.y_mean, stats.y_scale)):
        want = np.average(v, weights=w, axis=0)
        np.testing.assert_allclose(mean, want, rtol=1e-12)
        np.testing.assert_allclose(
            scale, np.sqrt(np.average((v - want) ** 2, weights=w, axis=0)), rtol=1e-12
        )


def test_user_data_refused_for_each_fault_naming_it(tmp_path):
    """An NPZ file needs both arrays x and y (one alone was a KeyError); integer arrays are
    real numbers; NaN or Inf is refused in y as in x; y must be one column (m,)."""
    alone = tmp_path / "x_only.npz"
    np.savez(alone, x=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="needs arrays 'x' and 'y'"):
        load_user_data(alone)
    integers = tmp_path / "integers.npz"
    np.savez(integers, x=np.array([1, 2, 3]), y=np.array([0, 1, 0]))
    x, y = load_user_data(integers)
    assert x.tolist() == [1.0, 2.0, 3.0] and y.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_user_data(np.array([1.0, 2.0, 3.0]), np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="need x"):
        check_user_data(np.array([1.0, 2.0, 3.0]), np.ones((3, 1)))


def test_a_split_is_split_indices_parts_standardized_with_the_training_part():
    """docs/theory.md, "Data": a file split by --split fractions is, per run, the parts of
    `split_indices` with equal weights (1/4 of 4 training points, 1/2 of 2 held out), every
    part standardized with the training part's mean and standard deviation (numpy here),
    then Δ added to every target."""
    from gdrelu.data import draw_split

    x = np.array([-4.0, -3.0, -1.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    y = np.array([2.0, -1.0, 0.0, 3.0, 1.0, -2.0, 4.0, 0.5])
    fractions, delta = (0.5, 0.25, 0.25), 0.5
    keys = jax.random.split(jax.random.key(4), 3)
    train, held = jax.device_get(
        draw_split(keys, jnp.asarray(x), jnp.asarray(y), jnp.asarray(delta), fractions=fractions)
    )
    for run, key in enumerate(keys):
        parts = [np.asarray(i) for i in split_indices(key, x.size, fractions)]
        mx, sx = x[parts[0]].mean(), x[parts[0]].std()
        my, sy = y[parts[0]].mean(), y[parts[0]].std()
        for got, index in zip((train, *held), parts, strict=True):
            np.testing.assert_allclose(got.x[run], (x[index] - mx) / sx, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(got.y[run], (y[index] - my) / sy + delta, rtol=1e-12)
            np.testing.assert_allclose(got.weights[run], 1 / index.size, rtol=1e-15)


def test_continuous_held_out_sets_weigh_their_own_points_equally():
    """docs/theory.md, "Data": `--num-train` training points and `--num-heldout` validation
    and test points each, with equal weights: 1/256 on the training points, 1/1024 on each
    held-out set's (the draws of tests/test_experiment.py's p-ex cell, 2 runs)."""
    from gdrelu.cells import Cell, initial_runs
    from gdrelu.spec import ExperimentSpec

    spec = ExperimentSpec(data="p-ex", widths=(8,), runs=2, optimizer="adam", step_size=0.01)
    _, train, held = jax.device_get(initial_runs(Cell(8, 2.0, spec), np.arange(2)))
    assert train.weights.shape == (2, 256) and spec.num_heldout == 1024
    np.testing.assert_allclose(train.weights, 1 / 256, rtol=1e-15)
    for part in held:
        assert part.weights.shape == part.y.shape == (2, 1024)
        np.testing.assert_allclose(part.weights, 1 / 1024, rtol=1e-15)
