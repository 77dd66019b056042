"""The general path's chunk as one C loop (`gdrelu.native_general`, kernel="native"), for
GD, SGD, heavy ball and Adam: a direct NumPy implementation's numbers to 1e-12, XLA's
loop's to 1e-10 in the engine, its events exactly, and a clear refusal where it cannot
run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_native import needs_compiler

from gdrelu import Params, WeightedData, engine, native_general, simulate
from gdrelu.detectors import ESCAPE_MARGIN
from gdrelu.engine.state import initial_state
from gdrelu.model import Scaling
from gdrelu.optim import (
    counts_from_words,
    get_optimizer,
    multinomial_words,
    velocity,
    with_velocity,
)
from gdrelu.propagator import check_kernel_trains

B1, B2, EPS, MU = 0.9, 0.999, 1e-8, 0.9


def _runs(runs=11, n=7, m=6, seed=0, padding=2):
    """Params (some runs' last `padding` neurons zero: a wider bucket's padding), data and
    step sizes of `runs` runs, float64."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(runs, n)) * np.sqrt(2)
    b = rng.normal(size=(runs, n)) * 0.3
    w = rng.normal(size=(runs, n)) * np.sqrt(2 / n)
    for v in (a, b, w):
        v[::2, n - padding :] = 0.0
    params = Params(a, b, w, rng.normal(size=runs) * 0.1)
    x = np.sort(rng.uniform(-2, 2, size=(runs, m)), axis=1)
    data = WeightedData(x, rng.normal(size=(runs, m)), rng.dirichlet(np.ones(m), size=runs))
    return params, data, rng.uniform(0.01, 0.06, size=runs)


def _updated(name, v, g, k, mu, nu, count, h):
    """Parameter v after one step of optimizer `name` with gradient g (its state's entry k
    of mu, nu updated in place; count: Adam's, already incremented)."""
    if name in ("gd", "sgd"):
        return v - h * g
    if name == "momentum":  # optax.trace: v ← g + μ v
        mu[k] = g + MU * mu[k]
        return v - h * mu[k]
    mu[k] = (1 - B1) * g + B1 * mu[k]
    nu[k] = (1 - B2) * g**2 + B2 * nu[k]
    m_hat, v_hat = mu[k] / (1 - B1**count), nu[k] / (1 - B2**count)
    return v - h * m_hat / (np.sqrt(v_hat) + EPS)


def _fit(a, b, w, c, x, alpha, scaling):
    """One run's pre-activations z_ji = s_a a_i x_j + b_i and outputs c + s_w Σ_i w_i σ(z_ji)
    on its points x, written out (`scaling` = (s_a, s_w))."""
    sa, sw = scaling
    z = sa * np.outer(x, a) + b
    return z, c + sw * (np.where(z >= 0, z, alpha * z) @ w)


def _reference(params, data, h, alpha, scaling, limit, steps, counts, moments, name="adam"):
    """A chunk of optimizer `name` on one run, written out: (params, mu, nu, count, kink,
    first pattern change, first loss below `limit`, changed neurons) after `steps` steps
    from the optimizer's state `moments` = (mu, nu, count) (Adam's moments, the heavy
    ball's velocity as mu); `counts` (steps, m): each step's multinomial counts / B, None:
    the full batch. Step numbers count from 0 at the chunk's start."""
    a, b, w, c = (np.array(v, float) for v in params)
    x, y, p = (np.asarray(v) for v in data)
    (sa, sw), (mu, nu, count) = scaling, moments
    mu, nu = [np.array(v, float) for v in mu], [np.array(v, float) for v in nu]
    real = (a != 0) | (b != 0) | (w != 0)
    start_pattern, start_side = sa * np.outer(x, a) + b >= 0, a > 0
    kink, first, below, changed = 0.0, -1, -1, np.zeros(a.shape, bool)

    def watch(t, a, b, w, c):
        nonlocal first, below, changed
        z, fit = _fit(a, b, w, c, x, alpha, scaling)
        residual = fit - y
        if (t > 0 or steps == 0) and below < 0 and 0.5 * np.sum(p * residual**2) < limit:
            below = t
        differs = np.any((z >= 0) != start_pattern, axis=0)
        if t > 0 and first < 0 and differs.any():
            first = t
        changed |= differs | ((a > 0) != start_side)
        return z, residual

    for t in range(steps):
        z, residual = watch(t, a, b, w, c)
        r = (p if counts is None else counts[t]) * residual
        on = z >= 0
        back = np.where(on, 1.0, alpha) * r[:, None]
        grads = [
            sa * sw * w * (x @ back),
            sw * w * back.sum(0),
            sw * (r @ np.where(on, z, alpha * z)),
            r.sum(),
        ]
        count += name == "adam"
        params = zip((a, b, w, c), grads, strict=True)
        a, b, w, c = [_updated(name, v, g, k, mu, nu, count, h) for k, (v, g) in enumerate(params)]
        with np.errstate(invalid="ignore", divide="ignore"):  # padding: 0/0, not counted
            kink = max(kink, np.max(np.where(real, np.abs(b / (sa * a)), 0.0)))
    watch(steps, a, b, w, c)
    return (a, b, w, c), mu, nu, count, kink, first, below, changed


def _chunk(state, data, h, alpha, steps, optimizer):
    run = jax.jit(native_general.general_chunk, static_argnames="optimizer")
    return run(state, data, h, alpha, steps, optimizer=optimizer)


def _real(params):
    """Which neurons of one run are real, not a wider bucket's padding (a = b = w = 0)."""
    return (params.a != 0) | (params.b != 0) | (params.w != 0)


def _state_of(name, opt_state):
    """(mu, nu, count) of `_reference` from one run's optimizer state, and the arrays the C
    loop carries for it (Adam's moments, the heavy ball's velocity, or none)."""
    if name == "adam":
        adam = opt_state[0]
        return (list(adam.mu), list(adam.nu), int(adam.count)), (*adam.mu, *adam.nu)
    if name == "momentum":
        trace = velocity(opt_state)
        return (list(trace), [0.0] * 4, 0), tuple(trace)
    return ([0.0] * 4, [0.0] * 4, 0), ()


def _assert_chunk_equals_reference(name, before, got, data, h, alpha, scaling, limit, steps,
                                   counts):  # fmt: skip
    """Each run of a chunk of `steps` steps from the state `before` (host arrays), `got` =
    (params, opt_state) after it, against `_reference` (`_assert_run_equals`); `limit`
    and `counts` (each an entry per run; counts None: full batches) as `_reference` takes
    them. Returns `_reference`'s results, run by run, for the events."""
    wants = []
    for i in range(len(h)):
        one = jax.tree.map(lambda v, i=i: v[i], (before.params, data, before.opt_state))
        moments, _ = _state_of(name, one[2])
        want = _reference(*one[:2], h[i], alpha, scaling, limit[i], steps, counts[i], moments,
                          name)  # fmt: skip
        _assert_run_equals(name, jax.tree.map(lambda v, i=i: v[i], got), want, one[0])
        wants.append(want)
    return wants


def _assert_run_equals(name, mine, want, start):
    """One run's (params, opt_state) after a chunk against `_reference`'s `want`: the
    parameters and the state the C loop carries to 1e-12 relative (cancelling entries:
    1e-12 of the largest), Adam's count, and its padding (in `start`) still 0."""
    counts, carried = _state_of(name, mine[1])
    wanted = (*want[1], *want[2])[: len(carried)]
    for ours, theirs in zip((*mine[0], *carried), (*want[0], *wanted), strict=True):
        scale = np.max(np.abs(theirs))
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12 * scale)
    assert counts[2] == want[3]  # Adam's count (the others: 0)
    assert not np.any(np.stack(mine[0][:3])[:, ~np.asarray(_real(start))])


@needs_compiler
@pytest.mark.parametrize(
    "name, alpha, sampler, scaling, m, chunks, staggered",
    [
        ("adam", 0.0, "full", (1.0, 1.0), 6, (13, 24), False),
        ("adam", 0.1, "multinomial", (0.5, 1.7), 6, (13, 24), True),
        ("adam", 0.0, "multinomial", (1.0, 1.0), 40, (0, 13, 24), False),
        ("adam", 0.0, "full", (1.0, 1.0), 1, (0, 13), True),
        ("gd", 0.1, "full", (0.5, 1.7), 9, (0, 13), False),
        ("sgd", 0.0, "multinomial", (1.0, 1.0), 6, (13, 24), False),
        ("momentum", 0.1, "multinomial", (0.5, 1.7), 5, (0, 13, 24), False),
        *(
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                ("adam", 0.0, "multinomial", (1.0, 1.0), 6, (13, 24), False),
                ("adam", 0.0, "full", (1.0, 1.0), 5, (13, 24), False),
                ("adam", 0.2, "multinomial", (1.0, 1.0), 9, (13, 24), False),
                ("gd", 0.0, "full", (1.0, 1.0), 6, (13, 24), False),
                ("sgd", 0.2, "multinomial", (1.0, 1.0), 40, (13, 24), False),
                ("momentum", 0.0, "full", (1.0, 1.0), 6, (13, 24), False),
            ]
        ),
    ],
)
def test_the_c_loop_equals_the_optimizers_written_out(
    name, alpha, sampler, scaling, m, chunks, staggered
):
    """Chunks of 13 and 24 steps (and 0) of 11 runs, some with padding neurons: the
    parameters and the optimizer's state (Adam's moments and count, the heavy ball's
    velocity) to 1e-12 relative, the largest kink to 1e-12, and the events (first pattern
    change, first loss below L_lin, neurons that changed pattern or side) exactly, against
    `_reference`; GD, SGD, heavy ball and Adam, ReLU and LeakyReLU, full batches and
    multinomial minibatches, both parameterizations' multipliers, the paper's six points
    (its own compiled loop) and others (40: pattern bits past 32), and Adam runs whose
    step counts differ (`staggered`: each lane's bias corrections, not one table); six
    cases that repeat what another covers run with `-m slow`."""
    params, data, h = _runs(m=m)
    runs = h.shape[0]
    optimizer = get_optimizer(name, sampler=sampler)
    keys = np.random.default_rng(1).integers(0, 2**32, size=(runs, 2), dtype=np.uint32)
    multipliers = Scaling(*(np.full(runs, v) for v in scaling))
    state = initial_state(params, h, keys, multipliers, optimizer=optimizer, data=data).state
    if staggered:
        adam, *rest = state.opt_state
        count = jnp.asarray(np.arange(runs) * 7, adam.count.dtype)
        state = state._replace(opt_state=(adam._replace(count=count), *rest))
    if name == "momentum":  # a velocity that is not zero at the first chunk's start
        start = velocity(state.opt_state)  # the padding's stays 0, as the engine keeps it
        moving = {f: np.where(_real(params), 0.1, 0.0) for f in "abw"}
        start = start._replace(**moving, c=start.c + 0.1)
        state = state._replace(opt_state=with_velocity(state.opt_state, start))
    # a threshold that some runs pass within the chunks: the loss below L_lin happens
    threshold = np.asarray(state.linear_threshold) * np.linspace(1.5, 30.0, runs)
    state = state._replace(linear_threshold=jnp.asarray(threshold))
    limit = (1.0 - ESCAPE_MARGIN) * threshold
    events = {"first": 0, "below": 0}
    for chunk in chunks:
        start, before = int(state.step[0]), jax.device_get(state)
        state, kink, first, below, changed = _chunk(state, data, h, alpha, chunk, optimizer)
        state = state._replace(step=state.step + chunk)
        got = jax.device_get((state.params, state.opt_state))
        counts = [None] * runs
        if sampler == "multinomial" and chunk:
            for i in range(runs):
                words = multinomial_words(keys[i], 16, start, chunk)
                counts[i] = np.stack([counts_from_words(v, data.weights[i]) for v in words]) / 16
        wants = _assert_chunk_equals_reference(
            name, before, got, data, h, alpha, scaling, limit, chunk, counts
        )
        for i, want in enumerate(wants):
            np.testing.assert_allclose(kink[i], want[4], rtol=1e-12)
            assert int(first[i]) == (want[5] + start if want[5] >= 0 else -1)
            assert int(below[i]) == (want[6] + start if want[6] >= 0 else -1)
            np.testing.assert_array_equal(np.asarray(changed[i]), want[7])
            events["first"] += int(first[i]) >= 0
            events["below"] += int(below[i]) >= 0
    if m > 1:  # the events were exercised
        assert events["first"] > 0 and events["below"] > 0


def _simulate(kernel, runs=16, steps=300, sampler="multinomial", optimizer="adam", **settings):
    params, data, h = _runs(runs=runs, n=9)
    keys = np.random.default_rng(2).integers(0, 2**32, size=(runs, 2), dtype=np.uint32)
    keys = None if sampler == "full" else keys
    return simulate(
        params, data, h, optimizer=optimizer, sampler=sampler, key=keys, check_every=steps // 3,
        max_checks=3, stop_on=(), kernel=kernel, **settings,
    )  # fmt: skip


@needs_compiler
@pytest.mark.parametrize(
    "sampler, settings",
    [
        ("multinomial", {}),
        ("multinomial", {"optimizer": "sgd"}),  # the propagator's general blocks (redos)
        ("full", {"optimizer": "momentum"}),
        *(
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                ("full", {}),
                ("multinomial", {"alpha": 0.1, "parameterization": "ntk"}),
                ("full", {"path": "fixed_pattern"}),  # its general blocks take the C loop
                ("multinomial", {"optimizer": "sgd", "batch_size": 3, "path": "general"}),
                ("full", {"optimizer": "gd", "alpha": 0.1}),
                ("full", {"optimizer": "gd", "path": "general", "parameterization": "ntk"}),
            ]
        ),
    ],
)
def test_engine_with_the_c_loop_agrees_with_the_xla_loop(sampler, settings):
    """`simulate(kernel="native")` for Adam, SGD, heavy ball and GD, 300 steps in three
    chunks: the parameters agree with XLA's loop to 1e-10 relative (the two sum the points
    and neurons in other orders), and every status, event step and final classification
    is the same; ReLU and LeakyReLU, both parameterizations, the general path, the
    fixed-pattern path's general blocks, and the propagator's (the runs whose kinks reach
    the data, trained as redos). Adam, SGD's redos and heavy ball run by default, the
    other settings with `-m slow`."""
    ours = _simulate("native", sampler=sampler, **settings)
    xla = _simulate("xla", sampler=sampler, **settings)
    for mine, theirs in zip(ours.params, xla.params, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-10 * np.max(np.abs(theirs)))
    np.testing.assert_allclose(ours.max_kink, xla.max_kink, rtol=1e-9)
    for field in ("status", "stop_step", "pattern_change_step", "loss_below_step", "escaped"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(xla, field), err_msg=field)
    assert not np.allclose(ours.params.a, _runs(runs=16, n=9)[0].a)  # it trained
    pairs = zip(ours.params, xla.params, strict=True)
    bits = [np.array_equal(mine, theirs) for mine, theirs in pairs]
    assert not all(bits)  # the C loop ran: its sums round otherwise than XLA's


@needs_compiler
def test_the_c_loop_gives_a_run_the_same_bits_in_any_batch():
    """A run's numbers do not depend on the runs beside it: the first 5 of 13 runs trained
    alone equal the same runs trained with the others, bit for bit (padding lanes)."""
    params, data, h = _runs(runs=13, n=9)
    keys = np.random.default_rng(2).integers(0, 2**32, size=(13, 2), dtype=np.uint32)

    def run(count):
        cut = jax.tree.map(lambda v: v[:count], (params, data, h, keys))
        return simulate(
            *cut[:3], optimizer="adam", sampler="multinomial", key=cut[3], check_every=50,
            max_checks=2, stop_on=(), kernel="native",
        )  # fmt: skip

    alone, together = run(5), run(13)
    for mine, theirs in zip(alone.params, together.params, strict=True):
        np.testing.assert_array_equal(mine, np.asarray(theirs)[:5])


@needs_compiler
def test_only_the_first_active_runs_step():
    """`general_chunk(active=k)` steps the first k runs rounded up to a lane group
    (`native.LANES`), each to the bits of a call that steps every run, and leaves the
    others as they were: same state, no kink, no event, no neuron changed."""
    from gdrelu.native import LANES

    runs = 3 * LANES
    params, data, h = _runs(runs=runs, n=5)
    optimizer = get_optimizer("adam", sampler="multinomial")
    keys = np.random.default_rng(1).integers(0, 2**32, size=(runs, 2), dtype=np.uint32)
    ones = Scaling(np.ones(runs), np.ones(runs))
    state = initial_state(params, h, keys, ones, optimizer=optimizer, data=data).state
    chunk = jax.jit(native_general.general_chunk, static_argnames="optimizer")
    every, some = (
        jax.device_get(chunk(state, data, h, 0.0, 20, optimizer=optimizer, active=active))
        for active in (runs, LANES + 1)  # one compile: the count is data
    )
    stepped = 2 * LANES
    start = jax.device_get((state.params, state.opt_state))
    leaves = [jax.tree.leaves((v[0].params, v[0].opt_state)) for v in (some, every)]
    for mine, full, before in zip(*leaves, jax.tree.leaves(start), strict=True):
        if np.ndim(mine) == 0:  # Adam's count, one for the batch
            continue
        np.testing.assert_array_equal(mine[:stepped], full[:stepped])
        np.testing.assert_array_equal(mine[stepped:], before[stepped:])
        assert not np.array_equal(mine[:stepped], before[:stepped])
    kink, first, below, changed = some[1:]
    assert not np.any(kink[stepped:]) and np.all(first[stepped:] == -1)
    assert np.all(below[stepped:] == -1) and not np.any(changed[stepped:])
    np.testing.assert_array_equal(kink[:stepped], every[1][:stepped])


@needs_compiler
@pytest.mark.parametrize("path", ["general", "fixed_pattern"])
def test_a_chunk_leaves_its_blocks_padding_unstepped(path):
    """A chunk of Adam on the C loop after most runs stopped (`placement.rearranged`: the
    3 runs left first on their device, the rest padding): the blocks' padding lanes past
    the runs' lane group keep their state, and the runs get the bits of a chunk that steps
    every lane of the blocks. On the fixed-pattern path two of the runs train in a
    general block (the counts' other half)."""
    from gdrelu.engine.checks import ChunkScalars
    from gdrelu.engine.chunk import chunk_settings, run_chunk
    from gdrelu.engine.placement import placed, rearranged
    from gdrelu.native import LANES

    block, mixed = 2 * LANES, path == "fixed_pattern"
    params, data, h = _runs(runs=13, n=5)
    optimizer = get_optimizer("adam")
    inputs = engine.check_inputs(data, jnp.asarray(h), data, data)
    device = jax.devices()[:1]
    placing = (None, None, optimizer, block, device, mixed)
    runs, inputs, layout = placed(params, inputs, *placing, kernel="native")
    general = np.array([False, True, True]) if mixed else None
    runs, inputs, layout = rearranged(runs, inputs, layout, np.array([0, 5, 12]), general)
    scalars = ChunkScalars(jnp.asarray(0.0), jnp.asarray(1e-8), jnp.asarray(10), jnp.int32(20))
    settings = chunk_settings(20, ("crossed",), path, optimizer, layout.blocking)
    mesh = layout.sharding.mesh

    def trained(num_blocks):
        out = run_chunk(runs, inputs, num_blocks, scalars, settings=settings, mesh=mesh)
        return jax.device_get(out[0].state.params)

    counts = np.asarray(layout.num_blocks)
    np.testing.assert_array_equal(counts, [[1, 2, 1, 2]] if mixed else [[1, 1, 3, 0]])
    ours, every = trained(layout.num_blocks), trained(counts * [1, 1, 0, 0] + [0, 0, block, block])
    start = jax.device_get(runs.state.params)
    real = np.flatnonzero(layout.slots >= 0)
    untouched = np.arange(block * counts[0, 1]) % block >= LANES  # past the runs' lane group
    if mixed:  # the fixed-pattern block steps all its lanes
        untouched[:block] = False
    for mine, full, before in zip(ours, every, start, strict=True):
        np.testing.assert_array_equal(mine[real], full[real])
        past = [v[: untouched.size][untouched] for v in (mine, full, before)]
        np.testing.assert_array_equal(past[0], past[2])
        assert not np.array_equal(past[1], past[2])  # a chunk that steps them changes them


@needs_compiler
def test_adam_on_the_c_loop_compiles_once_for_any_step_sizes_and_steps():
    """Step sizes and the chunk's step count are data: a second `simulate` with other step
    sizes and another `check_every` traces no new chunk program."""
    params, data, h = _runs(runs=24, n=5, m=7, seed=3)

    def run(step_sizes, every):
        simulate(params, data, step_sizes, optimizer="adam", check_every=every, max_checks=2,
                 stop_on=(), kernel="native")  # fmt: skip

    run(h, 20)
    before = engine.TRACE_COUNT["general"]
    run(h * 0.5, 35)
    assert engine.TRACE_COUNT["general"] == before


@needs_compiler
def test_the_c_loop_refuses_what_it_cannot_train():
    """Kernel "native" takes GD, SGD, heavy ball and Adam with full batches or multinomial
    minibatches of float64 runs on 1-D data with at most 63 points; "auto" leaves the
    general path on XLA's loop, whose bits the results had before; the other kernels'
    refusals stand."""
    adam = get_optimizer("adam")
    check_kernel_trains("native", adam)
    check_kernel_trains("native", get_optimizer("adam", sampler="multinomial", batch_size=3))
    with pytest.raises(ValueError, match="float64"):
        check_kernel_trains("native", adam, np.float32)
    with pytest.raises(ValueError, match="epoch"):
        check_kernel_trains("native", get_optimizer("adam", sampler="epoch"))
    with pytest.raises(ValueError, match="2\\^k"):
        check_kernel_trains("native", get_optimizer("sgd", batch_size=3))
    assert engine.propagator_kernel("cpu", "auto", adam) == "xla"
    sgd = get_optimizer("sgd", batch_size=3)
    assert [engine.general_kernel(k, sgd) for k in ("auto", "xla", "native")] == ["xla"] * 2 + [
        "native"
    ]
    assert engine.general_kernel("native", get_optimizer("sgd", sampler="epoch")) == "xla"
    params, data, h = _runs(runs=8)
    with pytest.raises(ValueError, match="not epoch minibatches"):  # before compiling
        keys = np.zeros((8, 2), np.uint32)
        simulate(params, data, h, optimizer="adam", sampler="epoch", batch_size=2, key=keys,
                 check_every=5, max_checks=1, kernel="native")  # fmt: skip
    params, data, h = _runs(runs=8, m=64)
    with pytest.raises(ValueError, match="at most 63 points"):
        simulate(params, data, h, optimizer="adam", check_every=5, max_checks=1, kernel="native")
    flat = _runs(runs=8)
    planar = WeightedData(np.stack([flat[1].x, flat[1].x], -1), flat[1].y, flat[1].weights)
    wide = Params(np.stack([flat[0].a, flat[0].a], 1), flat[0].b, flat[0].w, flat[0].c)
    for name in ("adam", "gd"):
        with pytest.raises(ValueError, match="1-D data, not 2-D"):
            simulate(wide, planar, h, optimizer=name, check_every=5, max_checks=1, kernel="native")
    with pytest.raises(ValueError, match="momentum with full batches or multinomial"):
        simulate(params, data, h, optimizer="momentum", sampler="epoch", batch_size=2, key=keys,
                 check_every=5, max_checks=1, kernel="native")  # fmt: skip


def test_the_c_loop_takes_up_to_63_points_of_1_d_data():
    """`native_general.MAX_POINTS` is the C loop's (general.c): 63 points are taken, 64
    refused; `data_shape` reads (dimension, points) from (runs, m) and (runs, m, d)."""
    import re

    from gdrelu import native

    defined = re.search(r"MAX_POINTS = (\d+)", native.GENERAL_SOURCE.read_text())
    assert defined is not None and int(defined.group(1)) == native_general.MAX_POINTS == 63
    native_general.check_trains(1, 63, np.float64)
    with pytest.raises(ValueError, match="at most 63 points, not 64"):
        native_general.check_trains(1, 64, np.float64)
    assert native_general.data_shape(np.zeros((2, 63))) == (1, 63)
    assert native_general.data_shape(np.zeros((2, 64, 1))) == (1, 64)
    assert native_general.data_shape(np.zeros((2, 5, 3))) == (3, 5)


def test_custom_optimizers_never_take_the_c_loop():
    """An optax transformation, or a function of h (even one named "adam"), is not one of
    gdrelu's named optimizers: the C loop does not train it, kernel "native" leaves it on
    XLA's general path without a refusal, and `general_chunk` refuses it by name before
    it reads the batch."""
    import optax

    def adam(h):
        return optax.adam(h)

    for custom in (get_optimizer(optax.sgd(0.1)), get_optimizer(adam)):
        assert not native_general.trains(custom)
        assert engine.general_kernel("native", custom) == "xla"
        native_general.check_requested("native", custom, 1, 6, np.float64)
        with pytest.raises(ValueError, match=f"sgd, momentum and adam, not '{custom.name}'"):
            native_general.general_chunk(None, None, None, 0.0, 1, custom)


def _nine_runs():
    """9 runs of GD (one more than a group of `native.LANES` = 8 lanes) on 9 points, as
    `initial_state` starts them: params, data, step sizes, state."""
    params, data, h = _runs(runs=9, m=9)
    ones = Scaling(np.ones(9), np.ones(9))
    gd = get_optimizer("gd")
    return params, data, h, initial_state(params, h, None, ones, optimizer=gd, data=data).state


@needs_compiler
def test_the_last_run_steps_in_a_group_of_lanes_of_its_own():
    """With 9 runs, the C loop's second group of lanes holds the ninth run and 7 lanes of
    padding: all 9 runs, the ninth too, equal `_reference` after 13 GD steps."""
    params, data, h, state = _nine_runs()
    gd = get_optimizer("gd")
    stepped = _chunk(state, data, h, 0.1, 13, gd)[0]
    got = jax.device_get((stepped.params, stepped.opt_state))
    before = jax.device_get(state)
    _assert_chunk_equals_reference("gd", before, got, data, h, 0.1, (1.0, 1.0), [0.0] * 9, 13,
                                   [None] * 9)  # fmt: skip
    assert not np.allclose(got[0].a[8], params.a[8])


@needs_compiler
def test_the_loss_below_event_keeps_the_escape_margin():
    """A loss counts as below L_lin where it is below (1 - ε) L_lin (ε = `ESCAPE_MARGIN`,
    as on XLA's loop): a chunk of 0 steps reports its start for the runs whose starting
    loss L_0 is (1 - 2ε) L_lin, and nothing for those where it is (1 - ε/2) L_lin, below
    L_lin but within the margin."""
    params, data, h, state = _nine_runs()
    runs = zip(*(np.asarray(v) for v in params), data.x, strict=True)
    fit = np.stack([_fit(*one, 0.1, (1.0, 1.0))[1] for one in runs])
    start = 0.5 * np.sum(data.weights * (fit - data.y) ** 2, axis=1)
    outside = np.arange(9) % 2 == 0
    threshold = start / np.where(outside, 1.0 - ESCAPE_MARGIN / 2, 1.0 - 2 * ESCAPE_MARGIN)
    state = state._replace(linear_threshold=jnp.asarray(threshold))
    below = _chunk(state, data, h, 0.1, 0, get_optimizer("gd"))[3]
    np.testing.assert_array_equal(below, np.where(outside, -1, state.step))


@needs_compiler
def test_a_general_loop_that_does_not_build_is_refused_before_any_run(tmp_path, monkeypatch):
    """The general loop is a library of its own (`native.general_library`): where only it
    fails to compile, kernel "native" is refused with the compiler's message (its
    diagnostics, general.c:1:...: error) before a chunk runs, as a missing compiler is,
    not at the first general block; "auto" never builds it."""
    from gdrelu import native
    from gdrelu.engine import chunk

    broken = tmp_path / "general.c"
    broken.write_text("this is not C;\n")
    monkeypatch.setattr(native, "GENERAL_SOURCE", broken)

    def trained(*args, **kwargs):
        raise AssertionError("a chunk ran")

    monkeypatch.setattr(chunk, "run_chunk", trained)
    native.general_library.cache_clear()
    try:
        params, data, h = _runs(runs=8)
        for name in ("gd", "adam"):
            compiled = r"(?s)could not compile general\.c:\n.*general\.c:1:\d+: error"
            with pytest.raises(native.NativeUnavailable, match=compiled):
                simulate(params, data, h, optimizer=name, check_every=5, max_checks=1,
                         kernel="native")  # fmt: skip
        with pytest.raises(AssertionError, match="a chunk ran"):  # auto: on to the chunks
            simulate(params, data, h, optimizer="adam", check_every=5, max_checks=1, kernel="auto")
    finally:
        native.general_library.cache_clear()


@needs_compiler
def test_a_run_directory_records_the_general_c_loop_and_never_mixes_it(tmp_path, monkeypatch):
    """An Adam spec records nothing with "auto" (XLA's general path, as before) and
    "adam-native" with the C loop, whose bits differ, beside GD's propagator kernel
    ("native" either way) and "general-native" for GD's general steps on the C loop: a
    directory started with one refuses to resume with the other, naming what differs,
    with or without a GD spec beside it."""
    from gdrelu import provenance, store
    from gdrelu.engine import KERNEL_VARIABLE
    from gdrelu.spec import ExperimentSpec

    def manifest(specs):
        return provenance.manifest([s.to_dict() for s in specs], specs)

    for name in ("auto", "gd-auto", "native"):
        (tmp_path / name).mkdir()

    adam = [ExperimentSpec(widths=(4,), runs=2, optimizer="adam")]
    both = [ExperimentSpec(widths=(4,), runs=2), *adam]
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert provenance.settings(adam) == {"kernels": "none"}
    store.write_manifest(tmp_path / "auto", manifest(adam))
    store.write_manifest(tmp_path / "gd-auto", manifest(both))  # GD's C loop, Adam's XLA
    monkeypatch.setenv(KERNEL_VARIABLE, "native")
    assert provenance.settings(adam) == {"kernels": "adam-native"}
    assert provenance.settings(both) == {"kernels": "native,general-native,adam-native"}
    store.write_manifest(tmp_path / "native", manifest(both))
    for started in ("auto", "gd-auto"):
        with pytest.raises(ValueError, match="adam-native"):
            store.check_manifest(tmp_path / started, manifest(adam if started == "auto" else both))
    monkeypatch.delenv(KERNEL_VARIABLE)
    with pytest.raises(ValueError, match="adam-native"):
        store.check_manifest(tmp_path / "native", manifest(both))


@needs_compiler
def test_a_manifest_from_before_the_general_c_loop_does_not_resume_on_it(tmp_path, monkeypatch):
    """A manifest of an older gdrelu records `kernel`, GD's "native" here: its Adam runs
    trained on XLA's loop. Resumed with Adam on the C loop it is refused; with "auto"
    (Adam on XLA's loop, GD on its C loop as before) it resumes."""
    from gdrelu import provenance, store
    from gdrelu.engine import KERNEL_VARIABLE
    from gdrelu.spec import ExperimentSpec

    specs = [
        ExperimentSpec(widths=(4,), runs=2),
        ExperimentSpec(widths=(4,), runs=2, optimizer="adam"),
    ]
    monkeypatch.setenv(KERNEL_VARIABLE, "native")
    now = provenance.manifest([s.to_dict() for s in specs], specs)
    store.write_manifest(tmp_path, {**now, "settings": {"kernel": "native"}})
    with pytest.raises(store.ResumeError, match="before the general path's C loop"):
        store.check_manifest(tmp_path, now)
    monkeypatch.delenv(KERNEL_VARIABLE)
    store.check_manifest(tmp_path, provenance.manifest([s.to_dict() for s in specs], specs))
