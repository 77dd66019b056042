"""Optimizers through optax: against direct implementations, samplers by their promises,
stop rules per optimizer, and one compile whatever the step sizes and keys."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import numpy_gd, numpy_gradient

from gdrelu import Params, Status, WeightedData, engine, he_init, simulate
from gdrelu.data import paper_data
from gdrelu.optim import batch_weights, get_optimizer, multinomial_words, scale_by_adam, scan_steps

RTOL = 1e-10  # float64 trajectories of a few hundred steps, different association only


@functools.cache
def _draws(seed):
    """Four runs of width 8 (He networks; the six points, weights from 64 samples) as NumPy
    arrays, drawn once per seed: drawing for each run count compiled the draws' programs
    anew (about 2 s each)."""
    keys = jax.random.split(jax.random.key(seed), 8)
    params = jax.vmap(lambda k: he_init(8, key=k))(keys[:4])
    data = jax.vmap(lambda k: paper_data(k, 0.0, 64))(keys[4:])
    return jax.tree.map(np.asarray, (params, data))


def _batch(runs, seed=0):
    """The first `runs` (≤ 4) of `_draws(seed)`, sliced in NumPy."""
    return jax.tree.map(lambda v: jnp.asarray(v[:runs]), _draws(seed))


def test_momentum_is_heavy_ball():
    """v ← g + 0.9 v, θ ← θ - h v (docs/theory.md: heavy ball with 0.9), per-run step sizes."""
    params, data = _batch(2)
    steps = np.array([0.02, 0.005])
    result = simulate(
        params, data, steps, optimizer="momentum", check_every=20, max_checks=15, stop_on=()
    )
    assert np.all(result.status == Status.UNFINISHED) and np.all(result.stop_step == 300)
    for run in range(2):
        theta = [np.asarray(leaf[run]) for leaf in params]
        x, y, p = (np.asarray(v[run]) for v in data)
        velocity = [np.zeros_like(t) for t in theta]
        for _ in range(300):
            grads = numpy_gradient(theta, x, y, p)
            velocity = [g + 0.9 * v for g, v in zip(grads, velocity, strict=True)]
            theta = [t - steps[run] * v for t, v in zip(theta, velocity, strict=True)]
        for got, want in zip(result.params, theta, strict=True):
            np.testing.assert_allclose(got[run], want, rtol=RTOL, atol=RTOL)


def test_multinomial_sampler_draws_batch_size_samples_from_the_weights():
    """q = counts/B of B draws from p: B q is integral, Σq = 1, and E q = p (within 5 Monte
    Carlo standard errors sqrt(p(1-p)/(B T)) over T steps)."""
    sgd = get_optimizer("sgd", batch_size=16)
    p = jnp.array([0.1, 0.2, 0.3, 0.05, 0.35, 0.0])
    steps = 4000
    q = jax.jit(jax.vmap(lambda t: batch_weights(sgd, p, jax.random.key(3), t)))(jnp.arange(steps))
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(16 * q, np.round(16 * q), atol=1e-9)
    assert np.all(q[:, 5] == 0)  # a point of weight 0 is never drawn
    se = np.sqrt(p * (1 - p) / (16 * steps))
    assert np.all(np.abs(q.mean(0) - p) <= 5 * se + 1e-12)
    assert not np.array_equal(q[0], q[1])  # fresh draws each step


P_VALUE = 1e-6  # chi-square tests: a correct sampler fails one with probability 1e-6


def _count_histograms(counts: np.ndarray, draws: int) -> np.ndarray:
    """(points, draws + 1) frequencies of each count value of each point over the rows."""
    return np.stack([np.bincount(c, minlength=draws + 1) for c in counts.T.astype(int)])


@pytest.mark.parametrize("draws", [1, 15, 16])
def test_words_drawn_for_many_steps_are_each_steps_own(draws):
    """One call for 7 steps gives step s the words of the step's own call: threefry2x32
    of the counters step·B' + k, k < B' (B' = draws rounded up to even), paired as one
    step's call pairs them, then the first `draws`."""
    key = jax.random.key_data(jax.random.key(3))
    even = draws + draws % 2
    many = np.asarray(multinomial_words(key, draws, 40, 7))
    for s in range(7):
        counter = np.uint32((40 + s) * even) + np.arange(even, dtype=np.uint32)
        direct = np.asarray(jax.extend.random.threefry_2x32(key, counter))[:draws]
        np.testing.assert_array_equal(many[s], direct)
        np.testing.assert_array_equal(many[s], np.asarray(multinomial_words(key, draws, 40 + s))[0])


@pytest.mark.parametrize(("unroll", "size"), [(1, 64), (8, 64), (3, 63), (48, 48), (100, 100)])
def test_scan_steps_draws_blocks_of_a_multiple_of_the_unroll(unroll, size):
    """The words come in blocks of 64 steps rounded down to a multiple of the unroll (at
    least one unroll): one block in the loop over whole blocks, one for the last, partial
    block, whatever the step count."""
    sizes = []

    def words_for(first, block):
        sizes.append(block)
        return jnp.zeros((block, 2), jnp.uint32)

    scan_steps(lambda c, t, w: (c + w[0], None), jnp.uint32(0), 1000, unroll, words_for)
    assert sizes == [size, size]


@pytest.mark.parametrize("unroll", [1, 3])
def test_scan_steps_gives_every_step_its_words_in_order(unroll):
    """Blocks of words or none, any unroll: the body sees t = 0, 1, … in order, each with
    the words of step t, for step counts below, at and past a block (64 or 63 steps) and
    not a multiple of the unroll; the count is data: one compiled loop takes them all."""
    traces = []

    def body(carry, t, words):
        seen, total = carry
        drawn = 0 if words is None else words
        return (seen.at[t].set(t + 1), total * 3 + drawn + t), None

    def words_for(first, size):
        return (first + jnp.arange(size, dtype=jnp.int32)) * 1000

    for draw, weight in ((words_for, 1000), (None, 0)):

        @jax.jit
        def loop(num_steps, draw=draw):
            traces.append(num_steps)
            start = (jnp.zeros(200, jnp.int32), jnp.int32(0))
            return scan_steps(body, start, num_steps, unroll, draw)

        for num_steps in (0, 1, 7, 63, 64, 100, 130):
            seen, total = loop(num_steps)
            want = 0
            for t in range(num_steps):
                want = (want * 3 + weight * t + t) % 2**32
            np.testing.assert_array_equal(seen[:num_steps], np.arange(1, num_steps + 1))
            assert not np.any(seen[num_steps:])
            assert int(total) % 2**32 == want
    assert len(traces) == 2


def _threefry_words(key_data, draws, step):
    """Step `step`'s words of one run, from the counters step·B' + k, k < B' (B' = draws
    rounded up to even), by threefry2x32 directly."""
    even = draws + draws % 2
    counter = np.uint32(step * even) + np.arange(even, dtype=np.uint32)
    return np.asarray(jax.extend.random.threefry_2x32(jnp.asarray(key_data), counter))[:draws]


def test_words_ahead_give_each_step_of_every_block_its_own_words():
    """A chunk of 128 steps draws its words in two blocks of 64 (`scan_steps`): step t of a
    chunk that starts at run step s gets the words of step s + t in the second block too
    (with the block's offset dropped, steps 64..127 repeated the minibatches of 0..63), for
    one run and for lanes (key data (2, lanes), steps (lanes,), lanes last)."""
    from gdrelu.optim import words_ahead

    sgd = get_optimizer("sgd", batch_size=3)
    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(4), 2)))
    starts, num_steps = np.array([1000, 7]), 128

    def record(words_for, shape):
        def body(seen, t, words):
            return seen.at[t].set(words), None

        return scan_steps(body, jnp.zeros(shape, jnp.uint32), num_steps, 1, words_for)

    one = jax.jit(lambda k, s: record(words_ahead(sgd, k, s), (num_steps, 3)))
    lanes = np.asarray(record(words_ahead(sgd, keys.T, starts, lanes_axis=-1), (num_steps, 3, 2)))
    assert words_ahead(get_optimizer("sgd", sampler="epoch"), keys[0], 0) is None
    for lane in range(2):
        got = np.asarray(one(keys[lane], starts[lane]))
        for t in (0, 1, 63, 64, 100, 127):
            want = _threefry_words(keys[lane], 3, starts[lane] + t)
            np.testing.assert_array_equal(got[t], want)
            np.testing.assert_array_equal(lanes[t, :, lane], want)


def test_multinomial_budget_ends_at_the_last_unused_counter():
    """S steps of B draws use the counters 0, …, S·B' - 1 (B' = B rounded up to even), so
    S = 2^32 / B' steps (rounded down) are the most before the 2^32 counters repeat:
    allowed, one more refused, naming max_checks; a batch larger than the counters, naming
    batch_size, which no max_checks mends. The epoch sampler has no such limit."""
    from gdrelu.optim import check_multinomial_steps

    for draws, last in ((16, 2**28), (15, 2**28), (1, 2**31), (5, 715_827_882)):
        assert last * (draws + draws % 2) <= 2**32 < (last + 1) * (draws + draws % 2)
        sgd = get_optimizer("sgd", batch_size=draws)
        check_multinomial_steps(sgd, last)
        with pytest.raises(ValueError, match=f"^max_checks: {last + 1} steps"):
            check_multinomial_steps(sgd, last + 1)
    check_multinomial_steps(get_optimizer("sgd", sampler="epoch", batch_size=16), 2**31)
    check_multinomial_steps(get_optimizer("sgd", batch_size=2**32), 1)  # B' = 2^32: one step
    with pytest.raises(ValueError, match=r"^batch_size: 4294967297 multinomial draws a step"):
        check_multinomial_steps(get_optimizer("sgd", batch_size=2**32 + 1), 1)  # no step at all


@pytest.mark.parametrize("batch_size", [True, 2.0, "16", 0, -3])
def test_a_batch_size_that_is_not_a_positive_integer_is_refused(batch_size):
    """`True` is an int to Python, not a batch size; nor are 2.0, "16", 0 or -3."""
    with pytest.raises(ValueError, match=r"^batch_size: "):
        get_optimizer("sgd", batch_size=batch_size)


def test_a_numpy_integer_batch_size_is_a_batch_size():
    """A batch size read from an array (np.int64) is taken, as a Python int."""
    batch = get_optimizer("sgd", batch_size=np.int64(8)).batch_size
    assert batch == 8 and type(batch) is int


def test_the_default_minibatch_is_the_papers_16_multinomial_draws():
    """docs/theory.md: the paper's SGD draws B = 16 multinomial samples per step; "sgd"
    without a sampler or batch size is that, and so is an `Optimizer` left to its defaults."""
    from gdrelu.optim import Optimizer

    sgd = get_optimizer("sgd")
    assert (sgd.sampler, sgd.batch_size) == ("multinomial", 16)
    assert get_optimizer("adam", sampler="multinomial").batch_size == 16
    assert get_optimizer(sgd) is sgd
    assert Optimizer("sgd", sgd.transformation, "multinomial") == sgd


def test_an_optimizer_given_whole_refuses_another_sampler_or_batch_size():
    """`simulate(optimizer=get_optimizer("sgd", batch_size=4), batch_size=32)` trained with
    B = 4, and an `Optimizer` of GD took sampler="multinomial" and trained full-batch, both
    without a word; now each is refused naming the argument. Its own values, or none, pass."""
    sgd = get_optimizer("sgd", batch_size=4)
    with pytest.raises(ValueError, match=r"^batch_size: 32, but the Optimizer given has "):
        get_optimizer(sgd, batch_size=32)
    with pytest.raises(ValueError, match=r"^sampler: 'multinomial', but the Optimizer given has "):
        get_optimizer(get_optimizer("gd"), sampler="multinomial")
    assert get_optimizer(sgd, sampler="multinomial", batch_size=4) is sgd
    params, data = _batch(2)
    with pytest.raises(ValueError, match=r"^batch_size: 32"):
        simulate(
            params,
            data,
            0.1,
            optimizer=sgd,
            batch_size=32,
            key=jax.random.split(jax.random.key(0), 2),
        )


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_a_batch_size_for_a_full_batch_optimizer_is_refused(optimizer):
    """`simulate(optimizer="gd", batch_size=4)` trained on every point with nothing said
    (the CLI refused it); a full-batch experiment's batch_size (ExperimentSpec keeps one
    for `compare`) reaches simulate as None."""
    from gdrelu import ExperimentSpec
    from gdrelu.cells import training_arguments

    params, data = _batch(2)
    with pytest.raises(ValueError, match=rf"^batch_size: 4, but '{optimizer}' trains on every"):
        simulate(params, data, 0.01, optimizer=optimizer, batch_size=4)
    spec = ExperimentSpec(optimizer=optimizer, batch_size=4)
    assert training_arguments(spec)["batch_size"] is None
    if optimizer != "gd":  # minibatches of its own
        epochs = ExperimentSpec(optimizer=optimizer, sampler="epoch", batch_size=4, stop_on=())
        assert training_arguments(epochs)["batch_size"] == 4


def test_only_the_named_transformations_are_named_optimizers():
    """`is_named` (which sends heavy ball to the propagator and named optimizers to the C
    loop, where they are written out) holds for `NAMED`'s transformations under any
    sampler, never for an `Optimizer` built by hand with a name of `NAMED` and a user's
    transformation: that one would otherwise train as the named one, not as given."""
    from gdrelu.optim import NAMED, Optimizer, is_named

    for name in NAMED:
        assert is_named(get_optimizer(name))
    assert is_named(get_optimizer("sgd", sampler="epoch"))
    assert is_named(get_optimizer("momentum", sampler="multinomial"))
    for name in NAMED:
        assert not is_named(Optimizer(name, lambda h: optax.adam(h)))
    assert not is_named(get_optimizer(optax.sgd(0.1)))


@pytest.mark.parametrize("sampler", ["epochs", "Multinomial", "bogus"])
def test_an_unknown_sampler_is_refused(sampler):
    """A misspelt sampler is refused, naming the field (else it trained as the epoch
    sampler, the one `batch_weights` falls through to)."""
    with pytest.raises(ValueError, match=rf"^sampler: {sampler!r} is not one of"):
        get_optimizer("sgd", sampler=sampler)


def test_a_point_of_weight_zero_past_the_last_is_never_drawn_whatever_the_rounding():
    """T_j = ⌊2^K Σ_{i≤j} p_i / Σp⌋ of a category past the last of positive weight may
    round to 2^K - 1 (p = (0.013, 0) in float64, (0.007, 0) in float32: x·(2^K/x) < 2^K),
    so its threshold is +inf (`multinomial_thresholds`): the largest word still picks the
    last point of positive weight, never the point of weight 0 after it."""
    from gdrelu.optim import counts_from_words, multinomial_thresholds

    words = jnp.asarray([0xFFFFFFFF, 0xFFFFFF00, 0], jnp.uint32)
    for dtype, bits, x in ((jnp.float64, 32, 0.013), (jnp.float32, 24, 0.007)):
        one = np.asarray(x, dtype)
        assert np.floor(one * (np.asarray(2.0**bits, dtype) / one)) < 2.0**bits  # the rounding
        for p in ([x, 0.0], [0.0, x, 0.0, 0.0]):
            weights = jnp.asarray(p, dtype)
            thresholds = np.asarray(multinomial_thresholds(weights))
            assert np.all(np.isinf(thresholds[np.flatnonzero(p)[-1] :]))
            want = np.where(np.asarray(p) > 0, 3.0, 0.0)
            np.testing.assert_array_equal(np.asarray(counts_from_words(words, weights)), want)


@pytest.mark.parametrize(("dtype", "bits"), [(np.float64, 32), (np.float32, 24)])
def test_counts_are_the_categories_of_the_words_drawn_one_by_one(dtype, bits):
    """`counts_from_words` (differences of the draws at or above each category) against the
    inverse CDF draw by draw, for weights with zeros (inside, first and last) and words
    on every threshold, one below it and the extremes."""
    from conftest import multinomial_counts_by_hand

    from gdrelu.optim import counts_from_words

    rng = np.random.default_rng(5)
    for m in (1, 2, 6, 9):
        for _ in range(12):
            weights = rng.integers(0, 4, m) * (rng.random(m) < 0.7) / 64.0  # exact sums
            if not weights.any():
                weights[rng.integers(m)] = 1 / 64
            cdf = np.cumsum(weights)
            edges = np.floor(cdf[:-1] * (2.0**bits / cdf[-1])).astype(np.uint64)
            on_edges = np.concatenate([edges, np.maximum(edges, 1) - 1]) << np.uint64(32 - bits)
            extremes = np.array([0, 2**32 - 1], np.uint64)
            words = np.concatenate([on_edges, extremes, rng.integers(0, 2**32, 16, np.uint64)])
            words = np.minimum(words, 2**32 - 1).astype(np.uint32)  # an edge may be 2^32
            got = counts_from_words(jnp.asarray(words), jnp.asarray(weights, dtype))
            assert got.dtype == dtype
            want = multinomial_counts_by_hand(words, weights.astype(dtype), bits)
            np.testing.assert_array_equal(np.asarray(got), want, f"{weights}")


@pytest.mark.parametrize(
    "p",
    [
        [0.1, 0.2, 0.3, 0.05, 0.35, 0.0],
        [0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
        [1 / 6] * 6,
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [0.97, 0.01, 0.01, 0.01, 0.0, 0.0],
    ],
)
def test_multinomial_counts_are_distributed_as_numpys_multinomial(p):
    """Each point's count, and the count of the first three points together (a joint
    property), have the same distribution as numpy's multinomial(B, p): chi-square
    homogeneity tests over T draws of each, bins with fewer than 5 expected draws merged."""
    from scipy import stats

    from gdrelu.optim import multinomial_counts

    draws, rows = 16, 20_000
    p = np.asarray(p)
    keys = jax.random.split(jax.random.key(11), rows)
    ours = np.asarray(jax.vmap(lambda k: multinomial_counts(k, draws, jnp.asarray(p)))(keys))
    theirs = np.random.default_rng(11).multinomial(draws, p, size=rows)
    assert np.all(ours.sum(1) == draws) and np.all(ours[:, p == 0] == 0)
    ours_ = np.concatenate([ours, ours[:, :3].sum(1, keepdims=True)], axis=1)
    theirs_ = np.concatenate([theirs, theirs[:, :3].sum(1, keepdims=True)], axis=1)
    for mine, numpy_ in zip(
        _count_histograms(ours_, draws), _count_histograms(theirs_, draws), strict=True
    ):
        table = np.stack([mine, numpy_])
        table = table[:, table.sum(0) > 0]
        while table.shape[1] > 1 and table.sum(0).min() < 10:  # merge the rarest bin
            i = int(np.argmin(table.sum(0)))
            j = i - 1 if i == table.shape[1] - 1 else i + 1
            table[:, j] += table[:, i]
            table = np.delete(table, i, axis=1)
        if table.shape[1] > 1:
            assert stats.chi2_contingency(table).pvalue > P_VALUE


def test_an_epoch_of_one_batch_of_every_point_is_full_batch_gd():
    """B = m = 12: each step's batch is every point, with weights q_j = p_j m / B = p_j."""
    epoch = get_optimizer("sgd", sampler="epoch", batch_size=12)
    p = jnp.arange(1.0, 13.0) / 78.0
    q = jax.jit(jax.vmap(lambda t: batch_weights(epoch, p, jax.random.key(1), t)))(jnp.arange(3))
    np.testing.assert_allclose(q, np.broadcast_to(p, (3, 12)), rtol=1e-12)


def test_epoch_sampler_visits_every_point_once_per_epoch():
    """m = 12 points, B = 4: each epoch's 3 batches partition the points; q_j = p_j m / B."""
    epoch = get_optimizer("sgd", sampler="epoch", batch_size=4)
    p = jnp.arange(1.0, 13.0) / 78.0
    q = jax.jit(jax.vmap(lambda t: batch_weights(epoch, p, jax.random.key(1), t)))(jnp.arange(9))
    picked = np.asarray(q > 0)
    for e in range(3):
        np.testing.assert_array_equal(picked[3 * e : 3 * e + 3].sum(0), np.ones(12))
        np.testing.assert_allclose(q[3 * e : 3 * e + 3].sum(0), p * 3.0, rtol=1e-12)
    assert not np.array_equal(picked[:3], picked[3:6])  # reshuffled between epochs


def test_epoch_sampler_leaves_the_remainder_out_of_each_permutation():
    """m = 12, B = 5: an epoch is ⌊12/5⌋ = 2 disjoint batches, the first 10 points of
    permutation(fold_in(key, e), 12) (the module's documented draw), 2 points left out;
    step 2 starts epoch 1 with a new permutation."""
    from gdrelu.optim import epoch_batch

    epoch = get_optimizer("sgd", sampler="epoch", batch_size=5)
    key = jax.random.key(2)
    batches = [np.asarray(epoch_batch(epoch, 12, key, jnp.int32(t))) for t in range(6)]
    for e in range(3):
        first, second = batches[2 * e], batches[2 * e + 1]
        assert len(set(first) | set(second)) == 10  # disjoint, two points out
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, e), 12))
        np.testing.assert_array_equal(np.concatenate([first, second]), order[:10])
    assert not np.array_equal(batches[0], batches[2])


def test_an_epoch_batch_larger_than_the_data_is_refused():
    """B > m cannot be an epoch's batch: refused naming batch_size, by `epoch_batch`
    itself and so by `batch_weights` (not a shape error from the slice)."""
    from gdrelu.optim import epoch_batch

    epoch = get_optimizer("sgd", sampler="epoch", batch_size=7)
    with pytest.raises(ValueError, match=r"^batch_size: 7 exceeds the 6 training points"):
        epoch_batch(epoch, 6, jax.random.key(0), 0)
    with pytest.raises(ValueError, match=r"^batch_size: 7 exceeds"):
        batch_weights(epoch, jnp.full(6, 1 / 6), jax.random.key(0), 0)


def test_sgd_noise_depends_only_on_the_run_key():
    """A run's SGD trajectory is the same alone or in a batch, and changes with its key."""
    params, data = _batch(4)
    keys = jax.random.split(jax.random.key(7), 4)
    kwargs = dict(optimizer="sgd", check_every=20, max_checks=5)
    together = simulate(params, data, 0.01, key=keys, **kwargs)
    pick = lambda tree, i: jax.tree.map(lambda v: v[i : i + 1], tree)  # noqa: E731
    alone = simulate(pick(params, 2), pick(data, 2), 0.01, key=keys[2:3], **kwargs)
    for got, want in zip(alone.params, together.params, strict=True):
        np.testing.assert_array_equal(got[0], want[2])
    other = simulate(pick(params, 2), pick(data, 2), 0.01, key=keys[3:4], **kwargs)
    assert not np.array_equal(other.params.a, alone.params.a)


def test_transformation_with_its_own_learning_rate_equals_the_named_optimizer():
    """A transformation with its own learning rate trains as the named optimizer does,
    bit for bit; the named Adam, whose bias corrections are products by reciprocals, is
    optax's Adam to rounding."""
    params, data = _batch(2)
    kwargs = dict(check_every=20, max_checks=10, stop_on=())
    named = simulate(params, data, 1e-3, optimizer="adam", **kwargs)
    ours = optax.chain(scale_by_adam(), optax.scale_by_learning_rate(1e-3))
    given = simulate(params, data, None, optimizer=ours, **kwargs)
    by_optax = simulate(params, data, None, optimizer=optax.adam(1e-3), **kwargs)
    for got, want, optax_adam in zip(given.params, named.params, by_optax.params, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(optax_adam, want, rtol=1e-12)
    with pytest.raises(ValueError, match="step_size"):
        simulate(params, data, 1e-3, optimizer=optax.adam(1e-3), **kwargs)


def test_adam_runs_do_not_depend_on_the_device_count():
    """Adam's runs are the same bit for bit on one device and sharded over two. (With
    optax's division by 1 - βᵗ, XLA's CPU compiler turned it into a product by the
    reciprocal on one device only, and every run differed in its last bits.)"""
    params, data = _batch(2)
    kwargs = dict(check_every=20, max_checks=10, stop_on=())
    assert jax.device_count() == 2
    two = simulate(params, data, 1e-3, optimizer="adam", **kwargs)
    one = simulate(params, data, 1e-3, optimizer="adam", devices=jax.devices()[:1], **kwargs)
    for got, want in zip(one.params, two.params, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(optimizer="adam", stop_on=("stuck",)), "stop_on"),
        (dict(optimizer="momentum", stop_on=("degenerate",)), "stop_on"),
        (dict(optimizer="sgd"), "key"),
        (dict(optimizer="gd", sampler="multinomial"), "sampler"),
        (dict(optimizer="lbfgs"), "optimizer"),
        # ignored: a user who passed keys to Adam may have meant the paper's minibatches
        (dict(optimizer="adam", key=np.zeros((2, 2), np.uint32)), r"key: 'adam' trains on every"),
        (dict(optimizer="gd", key=np.zeros((2, 2), np.uint32)), r"key: .* or optimizer='sgd' for"),
        # an AttributeError ('int' object has no attribute 'init') once the state was built
        (dict(optimizer=lambda h: 3), r"optimizer: <lambda>\(h\) returned int, not an optax"),
        (
            dict(optimizer="sgd", sampler="epoch", batch_size=7, key=np.zeros((2, 2), np.uint32)),
            "batch_size",
        ),
        (
            dict(optimizer="sgd", sampler="epoch", batch_size=0, key=np.zeros((2, 2), np.uint32)),
            "batch_size",
        ),
    ],
)
def test_bad_optimizer_settings_name_the_field(kwargs, field):
    """The message starts with the field at fault (GD with a minibatch sampler and no key
    is refused for its sampler, not for the missing key)."""
    params, data = _batch(2)
    with pytest.raises(ValueError, match=f"^{field}"):
        simulate(params, data, 0.01, check_every=20, max_checks=1, **kwargs)


def test_a_function_named_like_a_named_optimizer_is_not_that_optimizer():
    """A user's Adam in a function called `gd` gets no GD certificate: its default stop
    rules are none, as any function's."""

    def gd(h):
        return optax.adam(h)

    optimizer = get_optimizer(gd)
    assert optimizer.name == "custom gd" and not optimizer.certificate
    assert get_optimizer(gd, sampler="multinomial").sampler == "multinomial"
    params, data = _batch(2)
    result = simulate(params, data, 1e-3, optimizer=gd, check_every=20, max_checks=2)
    assert np.all(result.status == Status.UNFINISHED)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p, d, h: (p, d._replace(x=d.x[:1]), h), "data"),
        (lambda p, d, h: (p, d, h, {"validation_weights": d.weights[:1]}), "validation_weights"),
        (lambda p, d, h: (p, d, np.array([0.01, 0.01, 0.01])), "step_size"),
        (lambda p, d, h: (p, d, -0.01), "step_size"),
        (lambda p, d, h: (p, d, np.array([0.01, np.nan])), "step_size"),
        (lambda p, d, h: (p, d, 0.0), "step_size"),
        (
            lambda p, d, h: (p, WeightedData(d.x[:, :1], d.y[:, :1], d.weights[:, :1] * 0 + 1), h),
            "data",
        ),
    ],
)
def test_inputs_for_other_runs_or_bad_step_sizes_are_refused(change, field):
    """Data or validation weights for another number of runs would train a run on another
    run's points; a step size that is not positive and finite burns the whole budget."""
    params, data = _batch(2)
    params, data, h, *extra = change(params, data, 0.01)
    with pytest.raises(ValueError, match=f"^{field}"):
        simulate(params, data, h, check_every=20, max_checks=1, **(extra[0] if extra else {}))


def test_a_bad_step_size_names_its_run_and_where_nan_comes_from():
    """A run of weights summing to 0 gets h = nan from `paper_step_size` (a user's flow,
    README's "Python API"); simulate named neither the run nor why."""
    from gdrelu import theory

    params, data = _batch(2)
    data = data._replace(weights=data.weights.at[1].set(0.0))
    h = theory.paper_step_size(params, data)
    assert np.isfinite(h[0]) and not np.isfinite(h[1])
    with pytest.raises(ValueError, match=r"^step_size: run 1 has (nan|inf); every step size .*"
                       r"for data that are not finite or weights of sum 0\)$"):  # fmt: skip
        simulate(params, data, h, check_every=20, max_checks=1)
    for one in (-0.01, [-0.01]):  # one step size for every run names no run
        with pytest.raises(ValueError, match=r"^step_size: -0.01; every step size must be posit"):
            simulate(params, data, np.asarray(one), check_every=20, max_checks=1)


def test_a_step_size_of_one_value_serves_every_run():
    params, data = _batch(2)
    one = simulate(params, data, np.array([0.01]), check_every=20, max_checks=1)
    scalar = simulate(params, data, 0.01, check_every=20, max_checks=1)
    np.testing.assert_array_equal(one.params.a, scalar.params.a)


def test_default_stop_rules_follow_the_optimizer():
    """Adam's default applies no certificate: every run trains the whole budget."""
    params, data = _batch(3)
    result = simulate(params, data, 1e-3, optimizer="adam", check_every=20, max_checks=2)
    assert np.all(result.status == Status.UNFINISHED) and np.all(result.stop_step == 40)


def test_stop_rules_of_each_setting():
    """`outcome.stop_rules` directly (no program compiled): by default the three rules only
    where the certificate is a proof (GD, standard, 1-D), none elsewhere, d-dim GD
    included; the proofs asked for elsewhere refused, crossing allowed; the rules sorted
    and once each (one compiled program per set of rules), then the flags "reference_rows"
    (eigenvectors from the rows, otherwise only a slow test sees it) and "early_stopping"."""
    from gdrelu.outcome import stop_rules

    gd, adam = get_optimizer("gd"), get_optimizer("adam")
    assert stop_rules(None, gd, True, True, "columns", False) == ("crossed", "degenerate", "stuck")
    for optimizer, standard, one_dimensional in [(gd, True, False), (gd, False, True),
                                                 (adam, True, True)]:  # fmt: skip
        setting = (optimizer, standard, one_dimensional, "columns", False)
        assert stop_rules(None, *setting) == ()
        for proof in ("stuck", "degenerate"):
            with pytest.raises(ValueError, match=rf"^stop_on: \['{proof}'\] are proofs"):
                stop_rules((proof,), *setting)
        assert stop_rules(("crossed",), *setting) == ("crossed",)
    stop_on = ("stuck", "crossed", "stuck")
    assert stop_rules(stop_on, gd, True, True, "columns", False) == ("crossed", "stuck")
    assert stop_rules(stop_on, gd, True, True, "rows", True) == (
        "crossed", "stuck", "reference_rows", "early_stopping"
    )  # fmt: skip
    refusal = "^stop_on: 'sometimes' is not one of crossed, stuck, degenerate$"
    with pytest.raises(ValueError, match=refusal):
        stop_rules(("crossed", "sometimes"), gd, True, True, "columns", False)


def test_step_sizes_keys_and_check_every_are_data():
    """One trace of each path for Adam and SGD on the general path and for GD on the
    propagator, whatever the step sizes, keys and steps per check; a run stops at its
    check's step."""
    params, data = _batch(2, seed=1)
    for optimizer, stop_on in (("adam", ()), ("sgd", ()), ("gd", None)):
        traces = []
        for h, seed, check_every in ((1e-3, 0, 20), (3e-3, 1, 50), (np.array([1e-2, 2e-3]), 2, 7)):
            keys = jax.random.split(jax.random.key(seed), 2) if optimizer == "sgd" else None
            result = simulate(params, data, h, optimizer=optimizer, key=keys, stop_on=stop_on,
                              check_every=check_every, max_checks=1)  # fmt: skip
            np.testing.assert_array_equal(result.stop_step, [check_every] * 2)
            traces.append(dict(engine.TRACE_COUNT))
        assert traces[0] == traces[1] == traces[2], optimizer  # (the first may reuse a trace)


def test_gd_through_optax_equals_the_plain_step():
    """The general path (optax.sgd) is θ - h ∇L step for step, bit for bit."""
    params, data = _batch(2)
    result = simulate(params, data, 0.01, check_every=20, max_checks=2, stop_on=(), path="general")
    one = lambda tree, i: jax.tree.map(lambda v: v[i], tree)  # noqa: E731
    step = jax.jit(engine.gd_step)
    for run in range(2):
        theta, d = one(params, run), one(data, run)
        for _ in range(40):
            theta = step(theta, d, 0.01)
        for got, want in zip(result.params, theta, strict=True):
            np.testing.assert_allclose(got[run], want, rtol=1e-14, atol=1e-15)


def test_params_of_a_transformation_stay_float64():
    params, data = _batch(1)
    result = simulate(
        Params(*params), WeightedData(*data), 1e-3, optimizer="adam", check_every=20, max_checks=1
    )
    assert result.params.a.dtype == np.float64


def test_ntk_parameterization_with_leaky_relu_trains_the_scaled_network():
    """f = c + s_w Σ w_i σ_α(s_a a_i x + b_i) with (s_a, s_w) = (√2, √(2/n)), α = 0.1 and
    nonzero biases: the engine's GD equals a hand-written gradient of that network."""
    params, data = _batch(2)
    rng = np.random.default_rng(1)
    params = params._replace(b=jnp.asarray(rng.normal(scale=0.3, size=params.b.shape)))
    alpha, h, steps, width = 0.1, 0.01, 40, params.b.shape[1]
    result = simulate(
        params, data, h, alpha=alpha, parameterization="ntk", check_every=20, max_checks=2,
        stop_on=(),
    )  # fmt: skip
    sa, sw = np.sqrt(2.0), np.sqrt(2.0 / width)
    for run in range(2):
        a, b, w, c = (np.asarray(leaf[run]) for leaf in params)
        x, y, p = (np.asarray(v[run]) for v in data)
        for _ in range(steps):
            z = sa * x[:, None] * a + b
            slope = np.where(z >= 0, 1.0, alpha)
            r = p * (c + sw * (np.where(z >= 0, z, alpha * z) @ w) - y)
            grads = (
                sw * sa * (r[:, None] * slope * x[:, None]).sum(0) * w,
                sw * (r[:, None] * slope).sum(0) * w,
                sw * (r[:, None] * np.where(z >= 0, z, alpha * z)).sum(0),
                r.sum(),
            )
            a, b, w, c = (t - h * g for t, g in zip((a, b, w, c), grads, strict=True))
        for got, want in zip(result.params, (a, b, w, c), strict=True):
            np.testing.assert_allclose(got[run], want, rtol=RTOL, atol=RTOL)


def test_certificate_rules_need_the_standard_parameterization():
    params, data = _batch(2)
    with pytest.raises(ValueError, match="stop_on"):
        simulate(params, data, 0.01, parameterization="ntk", stop_on=("stuck",), max_checks=1)
    with pytest.raises(ValueError, match="path"):
        simulate(params, data, 0.01, parameterization="ntk", stop_on=("crossed",),
                 path="propagator", max_checks=1)  # fmt: skip


def test_best_validation_check_and_the_test_loss_there():
    """Held-out validation and test points: the reported best check is the argmin of the
    validation loss over the checks, and the test loss is taken there (each check's
    losses recomputed with numpy from separate, shorter runs)."""
    params, data = _batch(2)
    rng = np.random.default_rng(3)

    def held_out(size):
        x = rng.uniform(-3, 3, size=(2, size))
        return WeightedData(x, np.sin(x), np.full((2, size), 1.0 / size))

    validation, test = held_out(7), held_out(5)
    kwargs = dict(optimizer="adam", check_every=20, stop_on=(), validation=validation, test=test)
    full = simulate(params, data, 0.05, max_checks=6, **kwargs)

    def loss(theta, points, run):
        a, b, w, c = (np.asarray(v[run]) for v in theta)
        x = points.x[run]
        r = c + np.maximum(x[:, None] * a + b, 0) @ w - points.y[run]
        return 0.5 * np.sum(points.weights[run] * r * r)

    checks = [simulate(params, data, 0.05, max_checks=k, **kwargs).params for k in range(1, 7)]
    for run in range(2):
        val = [loss(theta, validation, run) for theta in checks]
        best = int(np.argmin(val))
        assert full.best_step[run] == 20 * (best + 1)
        assert full.best_validation_loss[run] == pytest.approx(val[best], rel=1e-10)
        assert full.test_loss_at_best[run] == pytest.approx(
            loss(checks[best], test, run), rel=1e-10
        )
    # without test points no test loss: it read the validation loss
    untested = simulate(params, data, 0.05, max_checks=6, **{**kwargs, "test": None})
    np.testing.assert_array_equal(untested.best_validation_loss, full.best_validation_loss)
    assert np.isnan(untested.test_loss_at_best).all()


def test_gathered_minibatch_gives_the_gradient_of_the_weighted_one():
    """The epoch sampler's gathered batch and its zero-padded weights define one loss."""
    from gdrelu.model import weighted_loss
    from gdrelu.optim import minibatch

    epoch = get_optimizer("sgd", sampler="epoch", batch_size=4)
    params, data = _batch(1)
    one = jax.tree.map(lambda v: v[0], (params, data))
    theta, points = one
    key = jax.random.key(5)

    @jax.jit
    def gradients(step):
        gathered = minibatch(epoch, points, key, step)
        weights = batch_weights(epoch, points.weights, key, step)
        g1 = jax.grad(weighted_loss)(theta, gathered.x, gathered.y, gathered.weights)
        return g1, jax.grad(weighted_loss)(theta, points.x, points.y, weights)

    for step in range(5):
        g1, g2 = gradients(step)
        for u, v in zip(g1, g2, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "optimizer, sampler",
    [  # GD: tests/test_loss_below.py compares the fixed-pattern path with the general one;
        # Adam's fixed-pattern runs: tests/test_golden.py::test_adam_trajectories
        pytest.param("gd", None, marks=pytest.mark.slow),
        pytest.param("momentum", None, marks=pytest.mark.slow),
        pytest.param("adam", None, marks=pytest.mark.slow),
        pytest.param("sgd", "multinomial", marks=pytest.mark.slow),
        ("sgd", "epoch"),
    ],
)
def test_fixed_pattern_path_equals_the_general_path(optimizer, sampler):
    """On path="fixed_pattern" every optimizer on 1-D data trains on the O(n) gradients of
    the per-side lines while its kinks stay inside the data and in general blocks once
    they leave: the statuses, the steps of the pattern changes and the parameters equal
    the general path's (1e-10)."""
    from gdrelu.cells import Cell, initial_runs, noise_keys
    from gdrelu.spec import ExperimentSpec

    cell = Cell(8, 0.0, ExperimentSpec(widths=(8,)))
    indices = np.arange(24)
    params, data, _ = initial_runs(cell, indices)
    h = 0.05 if optimizer != "adam" else 0.005
    batch_size = None if sampler is None else 4  # full-batch: none to give
    kwargs = dict(optimizer=optimizer, sampler=sampler, batch_size=batch_size,
                  key=noise_keys(cell, indices) if sampler else None)  # fmt: skip
    kwargs.update(check_every=50, max_checks=8, stop_on=())
    fast = simulate(params, data, h, path="fixed_pattern", **kwargs)
    general = simulate(params, data, h, path="general", **kwargs)
    changed = fast.pattern_change_step >= 0
    assert (
        0 < changed.sum() < changed.size
    )  # runs that left the fixed pattern and runs that did not
    np.testing.assert_array_equal(fast.status, general.status)
    np.testing.assert_array_equal(fast.pattern_change_step, general.pattern_change_step)
    for got, want in zip(fast.params, general.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_simulated_epochs_of_one_batch_of_every_point_are_gd(parameterization):
    """B = m = 6 (the paper's points): every step's gathered batch is all the points in a
    new order with weights p_j m / B = p_j, so `simulate` trains as full-batch GD written
    out in numpy (the sums' order aside: 1e-10), in either parameterization: the epoch
    sampler's gradient pass scales the network as the NTK's (s_a, s_w) = (√2, √(2/n)) do.
    (The fixed-pattern path equals the general one: the test below.)"""
    from gdrelu.cells import Cell, initial_runs, noise_keys
    from gdrelu.spec import ExperimentSpec

    cell = Cell(8, 0.0, ExperimentSpec(widths=(8,)))
    indices = np.arange(2)
    params, data, _ = initial_runs(cell, indices)
    epoch = dict(optimizer="sgd", sampler="epoch", batch_size=6, key=noise_keys(cell, indices))
    epoch.update(parameterization=parameterization, path="general")
    sgd = simulate(params, data, 0.05, check_every=50, max_checks=4, **epoch)
    assert np.all(sgd.status == Status.UNFINISHED) and np.all(sgd.stop_step == 200)
    scales = (1.0, 1.0) if parameterization == "standard" else (np.sqrt(2.0), np.sqrt(2.0 / 8))
    for run in indices:
        theta = [np.asarray(leaf[run]) for leaf in params]
        x, y, p = (np.asarray(v[run]) for v in data)
        theta = numpy_gd(theta, x, y, p, 0.05, 200, scales)
        for got, want in zip(sgd.params, theta, strict=True):
            np.testing.assert_allclose(got[run], want, rtol=1e-10, atol=1e-12)
        assert not np.allclose(theta[0], params.a[run])


def test_a_budget_beyond_the_multinomial_counters_is_refused():
    """Step t of B multinomial draws uses the counters t·B'..t·B'+B'-1 (B' = B rounded up
    to even) of a 2^32 counter space: B = 16 (or 15) covers 2^32/16 = 268 435 456 steps.
    One check of 1000 steps past that is refused, naming max_checks. GD and the epoch
    sampler are limited only by the int32 step counters: 2 147 483 checks of 1000 steps
    (≤ 2^31 - 1 = 2 147 483 647 steps), not one more."""
    from gdrelu import ExperimentSpec
    from gdrelu.spec import SpecError

    last = 268_435  # checks of 1000 steps: 268 435 000 ≤ 268 435 456 < 268 436 000
    for batch_size in (15, 16):
        ExperimentSpec(optimizer="sgd", batch_size=batch_size, max_checks=last)
        with pytest.raises(SpecError, match=r"^max_checks: 268436000 steps .* 268435456 steps"):
            ExperimentSpec(optimizer="sgd", batch_size=batch_size, max_checks=last + 1)
    with pytest.raises(SpecError, match=r"^batch_size: 100000000000000000000 multinomial"):
        ExperimentSpec(optimizer="sgd", batch_size=10**20)  # blamed max_checks
    for unlimited in (dict(optimizer="sgd", sampler="epoch", batch_size=2), {}):
        ExperimentSpec(**unlimited, max_checks=2_147_483)
        with pytest.raises(SpecError, match="int32 step counter"):
            ExperimentSpec(**unlimited, max_checks=2_147_484)
    params = jax.vmap(lambda k: he_init(4, key=k))(jax.random.split(jax.random.key(0), 2))
    data = jax.vmap(lambda k: paper_data(k, 0.0, 16))(jax.random.split(jax.random.key(1), 2))
    keys = jax.random.split(jax.random.key(2), 2)
    with pytest.raises(ValueError, match="max_checks"):  # before anything compiles
        simulate(params, data, 0.01, optimizer="sgd", key=keys, max_checks=last + 1)
