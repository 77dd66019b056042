"""The engine: statuses, batching independence, paths, compile counts, faults."""

import functools
import re

import jax
import numpy as np
import pytest
from conftest import numpy_gradient, paper_runs

from gdrelu import ExperimentSpec, SpecError, Status, engine, simulate, theory
from gdrelu.engine import chunk, placement


def _subset(tree, idx):
    return type(tree)(*(np.asarray(f)[idx] for f in tree))


def _first_runs(runs, count):
    """The first `count` of (params, data, step): no new draw for a small batch."""
    params, data, step = runs
    idx = np.arange(count)
    return _subset(params, idx), _subset(data, idx), np.asarray(step)[idx]


@pytest.fixture(scope="module")
def width8():
    return paper_runs(8, 40)


@pytest.fixture(scope="module")
def width8_result(width8):
    return simulate(*width8, check_every=200, max_checks=100)


@pytest.fixture(scope="module")
def width8_general(width8):
    """The runs of `width8` on the general path, and the chunk traces that took per path.
    (The tests below reuse the shapes of `width8`, 40 runs of width 8 checked every 200
    steps, wherever their claim allows: each new shape or setting compiles its programs.)"""
    jax.clear_caches()  # count this run's traces, whatever an earlier test compiled
    before = dict(engine.TRACE_COUNT)
    result = simulate(*width8, check_every=200, max_checks=100, path="general")
    traces = {p: engine.TRACE_COUNT[p] - before[p] for p in before}
    return result, traces


def test_only_the_pallas_kernel_compiles_its_step_count_in():
    """A chunk's step count is data, one program for every `check_every`, but where the
    propagator's steps go through the Pallas kernel (or its interpret mode), whose loop
    cannot close over a traced count: there the count is compiled in. The other paths
    never take the kernel, so they keep the count as data whatever kernel is named."""
    for kernel in ("xla", "native", "pallas", "interpret"):
        blocking = placement.Blocking(block=64, redo=8, unroll=1, check=64, kernel=kernel)
        for path in ("propagator", "fixed_pattern", "general"):
            settings = chunk.chunk_settings(250, (), path, engine.GD, blocking)
            pallas = path == "propagator" and kernel in ("pallas", "interpret")
            assert settings.static_steps == (250 if pallas else None), (kernel, path)


def test_result_does_not_depend_on_the_batch(width8, width8_result):
    """A run gives the same result alone, in a small batch, or in the full batch; and
    its initial state is computed on the lanes, so the smaller batch compiles no new
    `initial_state`."""
    params, data, step = width8
    idx = np.array([3, 17, 25])
    programs = engine.initial_state._cache_size()
    part = simulate(
        _subset(params, idx),
        _subset(data, idx),
        np.asarray(step)[idx],
        check_every=200,
        max_checks=100,
    )
    np.testing.assert_array_equal(part.status, width8_result.status[idx])
    np.testing.assert_array_equal(part.stop_step, width8_result.stop_step[idx])
    for got, full in zip(part.params, width8_result.params, strict=True):
        np.testing.assert_array_equal(got, full[idx])
    assert engine.initial_state._cache_size() == programs


def test_result_does_not_depend_on_the_device_count(width8, width8_result, monkeypatch):
    import jax

    from gdrelu.engine import simulation

    assert jax.device_count() == 2  # tests/conftest.py asks for two CPU devices
    meshes = []

    def placed(*args, **kwargs):
        runs, inputs, layout = placement.placed(*args, **kwargs)
        meshes.append(len(jax.tree.leaves(runs)[0].devices()))  # where the runs were put
        return runs, inputs, layout

    monkeypatch.setattr(simulation, "placed", placed)
    one = simulate(*width8, check_every=200, max_checks=100, devices=jax.devices()[:1])
    assert meshes and set(meshes) == {1}  # the runs were put on one device
    np.testing.assert_array_equal(one.status, width8_result.status)
    np.testing.assert_array_equal(one.stop_step, width8_result.stop_step)
    for got, full in zip(one.params, width8_result.params, strict=True):
        np.testing.assert_array_equal(got, full)


def test_own_lanes_move_exactly_the_lanes_asked_for():
    """`own_lane_batches`, `own_lanes_at` and `put_own_lanes` (each device its own lanes)
    against numpy's take and set, bit for bit: signed zeros, NaN, ints and bools, lanes
    on either device and more on one than the other, padding dropped."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), (engine.RUNS_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(engine.RUNS_AXIS))
    devices, per_device = mesh.size, 6
    rng = np.random.default_rng(0)
    floats = rng.normal(size=(devices * per_device, 3))
    floats[[1, 10], 0] = -0.0, np.nan
    ints = rng.integers(0, 2**32, (devices * per_device, 2), dtype=np.uint32)
    tree = (floats, ints, rng.random(devices * per_device) < 0.5)
    placed = jax.device_put(tree, sharding)
    lanes = np.array([0, 1, 3, 4, 5, 11])  # five on the first of two devices, one on the second
    size = 2 * devices
    batches = list(placement.own_lane_batches(lanes, per_device, devices, size))
    assert devices == 2 and len(batches) == 3  # two lanes per device and batch
    seen = np.concatenate([taken[taken >= 0] for _, taken in batches])
    assert sorted(seen.tolist()) == list(range(lanes.size))  # each lane once
    put = jax.device_put(tree, sharding)  # put_own_lanes donates it: `placed` stays
    expected = [leaf.copy() for leaf in tree]
    for positions, taken in batches:
        assert positions.shape == taken.shape == (size,)
        got = placement.own_lanes_at(placed, positions, mesh)
        real = taken >= 0
        for g, leaf in zip(got, tree, strict=True):
            np.testing.assert_array_equal(
                np.asarray(g)[real].view(np.uint8), leaf[lanes[taken[real]]].view(np.uint8)
            )
            assert g.sharding.is_equivalent_to(sharding, g.ndim)
        values = tuple(np.flip(np.asarray(g), 0) for g in got)  # other values, each lane its own
        put = placement.put_own_lanes(put, positions, jax.device_put(values, sharding), mesh)
        for e, value in zip(expected, values, strict=True):
            e[lanes[taken[real]]] = value[real]
    for got, e in zip(put, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got).view(np.uint8), e.view(np.uint8))


def test_finished_runs_are_copied_at_most_a_batch_at_a_time():
    """Four redo sizes of finished lanes per copy, but no more than the batch's lanes (the
    memory budget counts one copy of those) and no fewer than a redo's, which is at most
    the batch's lanes."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), (engine.RUNS_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(engine.RUNS_AXIS))
    blocking = engine.Blocking(block=8, redo=16, unroll=1, check=8)

    def copied(lanes):
        layout = placement.Layout(np.zeros(lanes, int), None, None, blocking, sharding)
        return layout.finished_lanes

    assert [copied(n) for n in (8, 40, 1024)] == [8, 40, 64]


def test_finished_runs_copied_in_several_batches_go_back_to_their_runs(
    monkeypatch, width8, width8_result
):
    """Finished runs cross to the host `finished_lanes` at a time, each batch's lanes put
    back at their own runs: with 4 lanes per copy (more runs than that finish at the first
    check) every run's result equals the one copied in a single batch."""
    monkeypatch.setattr(placement.Layout, "finished_lanes", property(lambda self: 4))
    got = simulate(*width8, check_every=200, max_checks=100)
    assert np.sum(width8_result.stop_step == 200) > 4
    np.testing.assert_array_equal(got.status, width8_result.status)
    np.testing.assert_array_equal(got.stop_step, width8_result.stop_step)
    for leaf, want in zip(got.params, width8_result.params, strict=True):
        np.testing.assert_array_equal(leaf, want)
    for field in ("max_kink", "final_loss", "pattern_change_step", "best_validation_loss"):
        np.testing.assert_array_equal(getattr(got, field), getattr(width8_result, field))


def test_a_redo_trains_every_lane_it_takes_batch_after_batch(monkeypatch, width8, width8_general):
    """Redos of more lanes per device than a block (4 lanes, blocks of 2) train all of
    them, block by block (the redo used to train its first block only; the rest came
    back unchanged and still running). A chunk's crossed runs take several such batches:
    each put updates the batch in place (donated), and each next batch still starts from
    the chunk's start, the fields the chunk left unchanged read from its outputs
    (`chunk._redo`; redone from the chunk's end instead, a run ended otherwise). Against
    the general path, which redoes nothing: the same statuses and steps, parameters to
    1e-10."""
    general, _ = width8_general
    redos = []
    monkeypatch.setattr(chunk, "run_chunk", _spy(chunk.run_chunk, redos))
    small = simulate(*width8, check_every=200, max_checks=100, block=2, redo=8)
    assert np.sum((general.stop_step == 200) & (general.status == Status.CROSSED)) > 8
    assert redos[:3] == [40, 8, 8]  # the batch, then the first chunk's redos of 8 lanes
    np.testing.assert_array_equal(small.status, general.status)
    np.testing.assert_array_equal(small.stop_step, general.stop_step)
    for got, want in zip(small.params, general.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # the CPU's mixed batches are checked by test_propagator_optimizers
def test_accelerator_blocking_of_a_mixed_batch_gives_the_same_runs(monkeypatch):
    """Heavy ball without a stop rule (a mixed batch, `paths.mixes_paths`) under a GPU's
    blocking: its whole share in one block, the general blocks redone in one call, loops
    unrolled; every run as with the CPU's blocks of 16."""
    from types import SimpleNamespace

    params, data, step = paper_runs(8, 130, delta=0.01)
    kwargs = dict(optimizer="momentum", check_every=200, max_checks=30, stop_on=())
    cpu = simulate(params, data, 0.1 * step, **kwargs)
    gpu = [SimpleNamespace(platform="gpu")]
    blocking_for, redone_blocking = engine.blocking_for, placement.redone_blocking
    monkeypatch.setattr(placement, "ACCELERATOR_UNROLL", 3)
    monkeypatch.setattr(
        placement,
        "blocking_for",
        lambda d, n, block=None, kernel=None, redo=None, width=None, *rest: blocking_for(
            gpu * len(d), n, block, kernel, redo, width, *rest
        ),
    )
    monkeypatch.setattr(
        placement,
        "redone_blocking",
        lambda b, d, block=None, redo=None: redone_blocking(b, gpu * len(d), block, redo),
    )
    got = simulate(params, data, 0.1 * step, **kwargs)
    assert 0 < np.sum(got.pattern_change_step >= 0) < 130  # some runs in general blocks
    np.testing.assert_array_equal(got.status, cpu.status)
    np.testing.assert_array_equal(got.pattern_change_step, cpu.pattern_change_step)
    for leaf, want in zip(got.params, cpu.params, strict=True):
        np.testing.assert_allclose(leaf, want, rtol=1e-10, atol=1e-12)


def _spy(run_chunk, counts):
    """`run_chunk` that records each call's lane count (the batch's, or a redo's)."""

    def spied(runs, *args, **kwargs):
        counts.append(runs.info.max_kink.shape[0])
        return run_chunk(runs, *args, **kwargs)

    return spied


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_accelerator_blocking_gives_the_same_runs(monkeypatch):
    """A GPU's blocking (its whole share in one block, other redos, unrolled loops), here
    on the CPU devices, gives every run's status and steps exactly as the CPU's blocks of
    64 do, and its values to rounding (jaxlib 0.12.1: an entry of 3.8e-4 in a matrix of
    about 0.1 came out 1.3e-15 apart)."""
    from types import SimpleNamespace

    runs = paper_runs(8, 130, delta=0.01)
    cpu = simulate(*runs, check_every=200, max_checks=40)
    gpu = [SimpleNamespace(platform="gpu")]
    blocking_for = engine.blocking_for
    monkeypatch.setattr(placement, "ACCELERATOR_REDO", 16)  # several redo calls per check
    monkeypatch.setattr(placement, "ACCELERATOR_UNROLL", 3)  # 200 steps: a partial iteration
    monkeypatch.setattr(
        placement,
        "blocking_for",
        lambda d, n, block=None, kernel=None, redo=None, width=None, *rest: blocking_for(
            gpu * len(d), n, block, kernel, redo, width, *rest
        ),
    )
    assert placement.blocking_for([None, None], 130) == (128, 16, 3, 128, "xla", None, "xla")
    got = simulate(*runs, check_every=200, max_checks=40)
    assert 0 < np.sum(got.status == Status.CROSSED) < 130  # some runs were redone
    np.testing.assert_array_equal(got.status, cpu.status)
    np.testing.assert_array_equal(got.stop_step, cpu.stop_step)
    for leaf, want in zip(got.params, cpu.params, strict=True):  # sums of other blocks
        np.testing.assert_allclose(leaf, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    for field in ("final_loss", "max_kink", "linear_threshold"):
        np.testing.assert_allclose(getattr(got, field), getattr(cpu, field), rtol=1e-12)
    np.testing.assert_array_equal(got.pattern_change_step, cpu.pattern_change_step)


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
@pytest.mark.parametrize("path", ["propagator", "general"])
def test_check_batches_give_the_same_runs(monkeypatch, path):
    """The checks go `CHECK_BLOCK` runs at a time after every block trained: batches of
    128 over shares of 3 blocks of 64 (the last batch overlaps the one before) give every
    run exactly as checks block by block do."""
    runs = paper_runs(8, 300, delta=0.01, seed=1)
    monkeypatch.setattr(placement, "CHECK_BLOCK", 64)
    by_block = simulate(*runs, check_every=200, max_checks=40, path=path)
    monkeypatch.setattr(placement, "CHECK_BLOCK", 128)
    assert placement.blocking_for(jax.devices(), 300).check == 128
    batched = simulate(*runs, check_every=200, max_checks=40, path=path)
    assert {Status.CROSSED, Status.STUCK} <= set(batched.status.tolist())
    np.testing.assert_array_equal(batched.status, by_block.status)
    np.testing.assert_array_equal(batched.stop_step, by_block.stop_step)
    for got, want in zip(batched.params, by_block.params, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # 2048 runs in blocks of 1024
def test_large_cpu_blocks_train():
    """Blocks of 1024 runs on the two CPU devices (the chunk's batched LAPACK eigh used to
    deadlock XLA's thread pool from 768 on; the checks now call no LAPACK)."""
    params, data, step = paper_runs(4, 2048, seed=2)
    big = simulate(params, data, step, check_every=100, max_checks=2, block=1024)
    small = simulate(params, data, step, check_every=100, max_checks=2)
    np.testing.assert_array_equal(big.status, small.status)
    np.testing.assert_array_equal(big.params.a, small.params.a)


@pytest.mark.parametrize("path", ["fixed_pattern", "propagator"])
def test_fast_paths_equal_the_general_path(width8, width8_general, path):
    general, _ = width8_general
    fast = simulate(*width8, check_every=200, max_checks=100, path=path)
    assert {Status.CROSSED, Status.STUCK} <= set(fast.status.tolist())  # both outcomes occur
    np.testing.assert_array_equal(fast.status, general.status)
    np.testing.assert_array_equal(fast.stop_step, general.stop_step)
    for f, g in zip(fast.params, general.params, strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.max_kink, general.max_kink, rtol=1e-10)
    np.testing.assert_allclose(fast.final_loss, general.final_loss, rtol=1e-9)


def test_the_fixed_pattern_path_equals_the_general_one_for_leaky_relu(width8):
    """α = 0.2 is data to both paths' programs (the shapes of `width8`): the fixed-pattern
    gradient's leaky slopes on each side must be the general path's, or its parameters
    drift (nothing redoes a chunk whose pattern held)."""
    params, data, step = _first_runs(width8, 8)
    kwargs = dict(check_every=200, max_checks=10, alpha=0.2)
    general = simulate(params, data, step, path="general", **kwargs)
    fast = simulate(params, data, step, path="fixed_pattern", **kwargs)
    np.testing.assert_array_equal(fast.status, general.status)
    np.testing.assert_array_equal(fast.stop_step, general.stop_step)
    for f, g in zip(fast.params, general.params, strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def width8_unstopped(width8):
    """The runs of `width8` on the general path without a stop rule, 4 checks."""
    return simulate(*width8, check_every=200, max_checks=4, stop_on=(), path="general")


@pytest.mark.parametrize("path", ["fixed_pattern", "propagator"])
def test_runs_out_of_the_zone_train_in_general_blocks(monkeypatch, width8, width8_unstopped, path):
    """Without a stop rule a fast path's batch is mixed: "A run whose kinks leave the
    data-free zone continues in the chunk's general blocks ... until its kinks are back
    inside" (docs/design.md). At every chunk a run is in a general block exactly when its
    start has some |b_i/a_i| ≥ min_j |x_j| (numpy) or initial groups that do not refine
    the sides; on the fixed-pattern path only runs of its own blocks are ever redone (a
    general block is trained on the general path, exactly). In blocks of 4 runs (the
    propagator's redos then take 24 lanes per device, in one block of their own size,
    `Layout.redo_block`), every run ends as on the general path."""
    from gdrelu.engine import simulation
    from gdrelu.engine.state import materialized_params

    chunks, redone = [], []

    def spy(start, inputs, scalars, settings, layout):
        a, b = (np.asarray(v) for v in materialized_params(start.state)[:2])
        kink = np.max(np.abs(b / a), axis=1)
        inside = kink < np.min(np.abs(np.asarray(inputs.data.x)), axis=1)
        ready = inside & np.asarray(start.state.within_sides)
        chunks.append((layout.slots.copy(), layout.general.copy(), ready))
        return chunk.exact_chunk(start, inputs, scalars, settings, layout)

    def redo(lanes, start, inputs, scalars, settings, layout, out):
        redone.append(layout.general[lanes].copy())
        return _redo(lanes, start, inputs, scalars, settings, layout, out)

    _redo = chunk._redo
    monkeypatch.setattr(simulation, "exact_chunk", spy)
    monkeypatch.setattr(chunk, "_redo", redo)
    fast = simulate(*width8, check_every=200, max_checks=4, stop_on=(), path=path, block=4)
    general_lanes = 0
    for slots, general, ready in chunks:
        real = slots >= 0
        np.testing.assert_array_equal(general[real], ~ready[real])
        general_lanes += np.sum(general[real])
    assert general_lanes > 0 and len(redone) > 0  # runs moved, after a redo
    if path == "fixed_pattern":
        assert not np.concatenate(redone).any()
    for field in ("status", "pattern_change_step", "loss_below_step"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(width8_unstopped, field))
    for f, g in zip(fast.params, width8_unstopped.params, strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)


_TRACED = []  # (event, seconds) of every trace and compile while a test listens
_LISTENING = []


def _on_duration(event, seconds, **kwargs):
    if _LISTENING and event in ("/jax/core/compile/jaxpr_trace_duration",
                                "/jax/core/compile/backend_compile_duration"):  # fmt: skip
        _TRACED.append((event, seconds))


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def test_no_compile_for_other_step_sizes_or_data(width8, width8_general):
    """Step sizes and data are arrays: a second sweep with other values traces and compiles
    nothing, neither its chunk program nor any other (JAX's own trace and compile events;
    the inputs are made in numpy first, as an eager JAX operation would compile)."""
    params, data, step = width8  # `width8_general` ran them on the general path
    before = dict(engine.TRACE_COUNT)
    other = data._replace(y=np.asarray(data.y) + 0.1)
    half = 0.5 * np.asarray(step)
    _TRACED.clear()
    _LISTENING.append(True)
    try:
        jax.jit(lambda v: v + 1)(np.ones(3))  # a new program: the listener hears it
        heard, _TRACED[:] = len(_TRACED), []
        simulate(params, other, half, check_every=200, max_checks=3, path="general")
    finally:
        _LISTENING.clear()
    assert heard > 0 and before == engine.TRACE_COUNT and _TRACED == []


def test_one_trace_per_path_however_many_runs_finish(width8_general):
    result, traces = width8_general
    # runs finish over many checks; the active ones move to the front, no shape changes
    assert traces == {**dict.fromkeys(traces, 0), "general": 1}
    assert len(set(result.stop_step.tolist())) > 3
    assert np.all(result.status != Status.RUNNING)


def test_one_chunk_trace_for_other_step_sizes_seeds_and_deltas(monkeypatch, width8):
    """The chunk program, wrapped in `chex.assert_max_traces`, is traced once for two
    sweeps at the same width with other step sizes, seeds and Δ (general path: no redo
    program besides it)."""
    import chex

    traced = []

    @functools.wraps(chunk.chunk_program)
    def counted(*args, **kwargs):
        traced.append(1)
        return chunk.chunk_program(*args, **kwargs)

    chex.clear_trace_counter()
    once = chex.assert_max_traces(counted, n=1)
    monkeypatch.setattr(chunk, "CHUNK_PROGRAMS", chunk.compiled_programs(once))
    for runs, scale in ((width8, 1.0), (paper_runs(8, 40, delta=0.1, seed=4), 0.5)):
        params, data, step = runs
        simulate(params, data, scale * step, check_every=200, max_checks=3, path="general")
    assert traced == [1]  # the wrapped program is the one that ran


def test_float64_without_x64_is_refused(width8):
    """float64 numpy params with jax_enable_x64 off: a ValueError that says how to turn it
    on, before anything compiles (not a silent float32 run). Float64 data and step sizes
    (numpy's default) beside float32 params are cast, as the docstring says: the runs
    equal those on float32 data."""
    params, data, step = _first_runs(width8, 2)
    as64 = lambda t: type(t)(*(np.asarray(f, np.float64) for f in t))  # noqa: E731
    params, data, step = as64(params), as64(data), np.asarray(step)
    before = dict(engine.TRACE_COUNT)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match=r'jax.config.update\("jax_enable_x64", True\)'):
            simulate(params, data, step, check_every=10, max_checks=1)
        with pytest.raises(ValueError, match=r"^params: float64 but jax_enable_x64"):
            simulate(params._replace(a=params.a.astype(np.float32)), data, step)  # b, w, c
        assert before == engine.TRACE_COUNT  # nothing was traced
        as32 = lambda t: type(t)(*(np.asarray(f, np.float32) for f in t))  # noqa: E731
        cast = simulate(as32(params), data, step, check_every=10, max_checks=2)
        given = simulate(as32(params), as32(data), step.astype(np.float32), check_every=10,
                         max_checks=2)  # fmt: skip
    finally:
        jax.config.update("jax_enable_x64", True)
    assert cast.final_loss.dtype == np.float32
    for field in ("status", "stop_step", "final_loss", "max_kink"):
        np.testing.assert_array_equal(getattr(cast, field), getattr(given, field))


def _kinks_by_numpy_gd(params, data, h, steps):
    """One 1-D run, GD θ ← θ - h ∇L(θ) in numpy: max_i |b_i/a_i| after each step (steps,)."""
    theta = [np.array(v, float) for v in params]
    kinks = np.empty(steps)
    for t in range(steps):
        theta = [v - h * g for v, g in zip(theta, numpy_gradient(theta, *data), strict=True)]
        kinks[t] = np.max(np.abs(theta[1] / theta[0]))
    return kinks


def _first_check_at(kinks, x_min, every):
    """The first check (step a multiple of `every`) by which a step's kink reached x_min; -1."""
    reached = np.flatnonzero(kinks >= x_min)
    return -1 if reached.size == 0 else -(-(reached[0] + 1) // every) * every


@pytest.mark.parametrize("x_scale", [0.5, 2.0])
def test_crossing_on_scaled_data_equals_a_direct_loop(width8, x_scale):
    """Crossed (docs/theory.md): some max_i |b_i/a_i| ≥ min_j |x_j| after any step, the run
    stopped at the check that follows. With the points and targets scaled (min_j |x_j| =
    `x_scale`, not the six points' 1), every CROSSED run stops at the check a numpy GD
    loop gives, no other run crossed before its stop (a certified one never does), and
    some runs would stop at another check were min_j |x_j| taken as 1."""
    params, data, _ = width8  # its shapes and checks: the module's compiled programs
    every, checks = 200, 5
    data = data._replace(x=x_scale * np.asarray(data.x), y=x_scale * np.asarray(data.y))
    h = np.asarray(theory.paper_step_size(params, data))
    result = simulate(params, data, h, check_every=every, max_checks=checks)
    assert Status.CROSSED in result.status.tolist()
    differs_at_one = 0
    for r in range(h.size):
        one = lambda tree, r=r: type(tree)(*(np.asarray(f)[r] for f in tree))  # noqa: E731
        kinks = _kinks_by_numpy_gd(one(params), one(data), h[r], every * checks)
        crossing = _first_check_at(kinks, np.min(np.abs(data.x[r])), every)
        stop, status = result.stop_step[r], result.status[r]
        if status == Status.CROSSED:
            assert stop == crossing, r
        else:
            assert crossing < 0 or (crossing > stop and status != Status.STUCK), r
        differs_at_one += _first_check_at(kinks, 1.0, every) != crossing
        assert result.max_kink[r] == pytest.approx(np.max(kinks[:stop]), rel=1e-8), r
    assert differs_at_one > 0


def test_unfinished_and_stop_step(width8, width8_result):
    """After the last check, the runs still going are UNFINISHED; every run stops there
    but those that stopped at that check in the longer sweep, with their status."""
    result = simulate(*width8, check_every=200, max_checks=1)
    first = width8_result.stop_step == 200
    assert 0 < first.sum() < first.size
    want = np.where(first, width8_result.status, Status.UNFINISHED)
    np.testing.assert_array_equal(result.status, want)
    assert np.all(result.stop_step == 200)


def test_diverged_runs_leave_the_others_untouched(width8, width8_result):
    params, data, step = width8
    step = np.asarray(step).copy()
    step[5] = 1e3
    result = simulate(params, data, step, check_every=200, max_checks=100)
    assert result.status[5] == Status.DIVERGED
    others = np.arange(step.size) != 5
    np.testing.assert_array_equal(result.status[others], width8_result.status[others])
    np.testing.assert_array_equal(result.params.w[others], width8_result.params.w[others])


def test_a_diverged_run_reads_escaped_whatever_its_parameters(width8):
    """30 times the paper's step, checked every 5 steps: some runs diverge with finite
    parameters (an infinite loss), whose pattern groups the points as before; they read
    escaped, as the NaN ones do (docs/outputs.md)."""
    params, data, step = width8
    result = simulate(params, data, 30 * np.asarray(step), check_every=5, max_checks=4)
    diverged = result.status == Status.DIVERGED
    finite = np.isfinite(np.asarray(result.params.a)).all(axis=1)
    assert np.any(diverged & finite) and not np.all(np.isfinite(result.final_loss[diverged]))
    assert np.all(result.escaped[diverged])


def test_degenerate_runs(width8):
    """Run 0 has all a_i > 0; run 1 has one point of positive weight for x < 0; run 2
    both, which the paper's code calls x-degenerate (the others have all a_i > 0 too,
    unless one changed sign in the 10 steps). With early stopping after 0 checks, every
    run stops early: the paper's code checks early stopping before degeneracy."""
    params, data, step = width8
    a = np.abs(np.asarray(params.a))
    a[1] = np.asarray(params.a[1])
    weights = np.asarray(data.weights).copy()
    weights[1:3] = [0.3, 0.0, 0.0, 0.3, 0.2, 0.2]  # one point of positive weight for x < 0
    settings = {"check_every": 10, "max_checks": 1, "stop_on": ("degenerate",)}
    degenerate = (params._replace(a=a), data._replace(weights=weights), step)
    result = simulate(*degenerate, **settings)
    want = [Status.A_DEGENERATE, Status.X_DEGENERATE, Status.X_DEGENERATE]
    assert result.status[:3].tolist() == want
    assert set(result.status[3:].tolist()) <= {Status.A_DEGENERATE, Status.UNFINISHED}
    early = simulate(*degenerate, **settings, validation_weights=weights, patience=0)
    assert set(early.status.tolist()) == {Status.EARLY_STOPPED}


def test_early_stopping_on_validation_weights(width8):
    """Without the certificate, a converged run stops once validation stalls for 10 checks:
    by default (docs/theory.md, "Outcome of a run") a run stops once its validation loss
    has not improved by 1e-8 for 10 checks, so an early-stopped run stops 10 checks after
    its best one, and the defaults are those values given."""
    params, data, step = width8
    kwargs = dict(check_every=1000, max_checks=200, stop_on=("crossed",),
                  validation_weights=data.weights)  # fmt: skip
    result = simulate(params, data, step, **kwargs, min_delta=1e-8, patience=10)
    assert Status.EARLY_STOPPED in result.status.tolist()
    assert set(result.status.tolist()) <= {Status.EARLY_STOPPED, Status.CROSSED}
    assert not result.certificate_checked.any()  # stop_on lacks stuck and degenerate:
    with pytest.raises(ValueError, match="40 of 40 runs were never checked"):
        result.stuck()  # no proof ran, so no run may be counted stuck by it
    early = result.status == Status.EARLY_STOPPED
    np.testing.assert_array_equal(result.stop_step[early] - result.best_step[early], 10_000)
    defaults = simulate(params, data, step, **kwargs)
    for field in ("status", "stop_step", "best_step", "best_validation_loss"):
        np.testing.assert_array_equal(getattr(defaults, field), getattr(result, field))


def test_float32_runs_and_agrees_on_status(width8, width8_result):
    params, data, step = width8
    as32 = lambda t: type(t)(*(np.asarray(f, np.float32) for f in t))  # noqa: E731
    result = simulate(as32(params), as32(data), np.float32(step), check_every=200, max_checks=100)
    assert result.params.a.dtype == np.float32
    assert width8_result.certificate_checked.all() and result.certificate_checked.all()
    assert Status.DIVERGED not in result.status.tolist()
    # Crossing is robust to float32 rounding; the certificate is not: it needs residuals far
    # below float32's resolution, so float32 runs that do not cross often end UNFINISHED.
    crossed = width8_result.status == Status.CROSSED
    assert np.mean(result.status[crossed] == Status.CROSSED) >= 0.9
    assert set(result.status[~crossed].tolist()) <= {
        Status.STUCK,
        Status.UNFINISHED,
        Status.CROSSED,
    }


def test_points_and_weights_that_are_no_distribution_are_named(width8):
    """They trained: a NaN or infinite point or a weight of -0.1 ended the run diverged, a
    weight of -1e-300 did not show, validation weights of sum 0 gave a flat validation
    loss; now the input, its first bad run and the count are named."""
    params, data, step = _first_runs(width8, 4)
    x, w = np.array(data.x), np.array(data.weights)
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"^data: run 2: points that are not finite"):
        simulate(params, data._replace(x=x), step)
    y = np.array(data.y)
    y[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"^data: run 0: points"):
        simulate(params, data._replace(y=y), step)
    w[1, 0], w[3, 5] = -0.1, -1e-300
    with pytest.raises(ValueError, match=r"^data: run 1 and 1 more: .* weights that are neg"):
        simulate(params, data._replace(weights=w), step)
    zero = np.array(data.weights)
    zero[3] = 0.0
    with pytest.raises(ValueError, match=r"^validation_weights: run 3: "):
        simulate(params, data, step, validation_weights=zero)
    test = data._replace(x=x)
    with pytest.raises(ValueError, match=r"^test: run 2: "):
        simulate(params, data, step, validation=data, test=test)
    with pytest.raises(ValueError, match=r"^validation: run 2: "):
        simulate(params, data, step, validation=test, test=data)


def test_training_points_at_zero_are_warned_of(width8):
    """A point at x = 0 (or within 64 ulp of it) puts min |x_j| = 0 under the kink rule:
    such a run stopped as crossed at its first check, silently; now `simulate` names the
    first and counts the others. Without the kink rule nothing is said."""
    import warnings

    params, data, step = width8  # the shapes of `width8_result`: its programs
    x = np.array(data.x)
    x[1, 2], x[3, 0] = 0.0, 1e-17 * x[3, 0]
    kwargs = dict(check_every=200, max_checks=3)
    with pytest.warns(engine.PointAtZeroWarning, match=r"^data: run 1 and 1 more: .* x = 0"):
        result = simulate(params, data._replace(x=x), step, **kwargs)
    assert result.status[1] == result.status[3] == Status.CROSSED
    assert result.stop_step[1] == result.stop_step[3] == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", engine.PointAtZeroWarning)
        simulate(params, data, step, **kwargs)
        simulate(params, data._replace(x=x), step, stop_on=("stuck",), **kwargs)


def test_kinks_that_start_among_the_data_are_warned_of(width8):
    """Non-zero biases can put a kink at or beyond the nearest point before any step: the
    kink rule then stops the run as crossed at its first check, and P(stuck) read 0 with
    no word of why. Now `simulate` names the first such run; a kink inside the gap, or no
    kink rule, is no reason to warn."""
    import warnings

    params, data, step = width8
    nearest = np.min(np.abs(np.asarray(data.x)), axis=1)
    b = np.zeros(params.b.shape)
    b[2, 0] = 1.5 * nearest[2] * params.a[2, 0]  # kink |b / a| = 1.5 min |x_j|
    b[5, 3] = -0.5 * nearest[5] * params.a[5, 3]  # inside the gap
    kwargs = dict(check_every=200, max_checks=3)
    with pytest.warns(engine.KinksAmongDataWarning, match=r"^params: run 2: a kink"):
        result = simulate(params._replace(b=b), data, step, **kwargs)
    assert result.status[2] == Status.CROSSED and result.stop_step[2] == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", engine.KinksAmongDataWarning)
        b[2, 0] = 0.0
        simulate(params._replace(b=b), data, step, **kwargs)
        b[2, 0] = 1.5 * nearest[2] * params.a[2, 0]
        simulate(params._replace(b=b), data, step, stop_on=("stuck",), **kwargs)


def test_bad_arguments_are_named(width8):
    params, data, step = _first_runs(width8, 1)
    with pytest.raises(ValueError, match="stop_on"):
        simulate(params, data, step, stop_on=("sometimes",))
    with pytest.raises(ValueError, match="eigenvectors"):
        simulate(params, data, step, eigenvectors="diagonal")
    with pytest.raises(ValueError, match="check_every"):
        simulate(params, data, step, check_every=0)
    bad_counts = [("block", 0), ("block", -3), ("block", 2.5), ("redo", -1), ("redo", True)]
    for field, bad in [*bad_counts, ("max_checks", 0), ("check_every", 2.5)]:
        with pytest.raises(ValueError, match=f"^{field}: must be a positive integer"):
            simulate(params, data, step, **{field: bad})
    with pytest.raises(ValueError, match=r"^max_checks: .* int32 step counter"):
        simulate(params, data, step, check_every=2**16, max_checks=2**15)
    # each of these ran: α outside [0, 1) diverged or kept the certificate of ReLU, a
    # negative patience stopped every run at its first check, NaN never stopped any
    for field, bad in [("alpha", np.nan), ("alpha", 1.0), ("alpha", -0.5), ("min_delta", np.nan),
                       ("min_delta", -1e-8)]:  # fmt: skip
        with pytest.raises(ValueError, match=rf"^{field}: .* is not in \[0, "):
            simulate(params, data, step, **{field: bad})
    with pytest.raises(ValueError, match=r"^alpha: one real number"):
        simulate(params, data, step, alpha=np.zeros(1))  # crashed in the C loop's arguments
    with pytest.raises(ValueError, match=r"^patience: must be an integer ≥ 0"):
        simulate(params, data, step, patience=-1)
    with pytest.raises(
        ValueError, match=r"^stop_on: a tuple of rule names, such as \('crossed',\)"
    ):
        simulate(params, data, step, stop_on="crossed")  # read as the letters c, r, o, ...
    with pytest.raises(ValueError, match=r"^step_size: 'paper' is a rule of ExperimentSpec"):
        simulate(params, data, "paper")
    one = jax.tree.map(lambda v: v[0], (params, data, step))
    for bad in (one[0], params._replace(b=params.b[:, :0], a=params.a[:, :0], w=params.w[:, :0])):
        with pytest.raises(ValueError, match=r"^params: .* a leading runs axis"):
            simulate(bad, data, step)  # an IndexError; width 0: argmax of an empty sequence
    for dtype in (np.int64, np.float16):  # "not inexact"; no float16 eigensolver
        with pytest.raises(ValueError, match=f"^params: {np.dtype(dtype)} weights"):
            simulate(jax.tree.map(lambda v, t=dtype: np.asarray(v, t), params), data, step)


def _tiny_runs():
    """Two 1-D runs of width 2 on three points, written out: for refusals, which come
    before anything compiles."""
    from gdrelu import Params, WeightedData

    params = Params(*(np.full((2, 2), v) for v in (1.0, 0.0, 0.5)), np.zeros(2))
    x = np.array([[-1.0, 0.5, 2.0], [-2.0, -0.5, 1.0]])
    return params, WeightedData(x, np.sin(x), np.full((2, 3), 1 / 3))


def test_inputs_that_do_not_fit_the_runs_are_named():
    """Held-out points of another run count, keys of another run count, early stopping
    without validation or not a bool, a bool or complex step size, devices that are not a
    list of devices, stop rules that are not names, both kinds of validation at once, and
    no step size for a named optimizer are each refused, naming the argument, before
    anything compiles. Unrefused, a missing step size trains at h = 0 and keys are taken
    by lane, clipped: every run ends unfinished, or trains on another run's noise, without
    a word."""
    params, data = _tiny_runs()
    three = type(data)(*(np.concatenate([v, v[:1]]) for v in data))
    for name in ("validation", "test"):
        with pytest.raises(ValueError, match=rf"^{name}: shape \(3, 3\) does not lead with"):
            simulate(params, data, 0.01, **{name: three})
    cases = [(jax.random.split(jax.random.key(0), 3), r"typed keys of shape \(3,\)"),
             (jax.random.key(0), r"typed keys of shape \(\)"),  # one key: its data is (2,)
             (np.zeros((2, 4), np.uint32), r"key data of shape \(2, 4\)")]  # fmt: skip
    for keys, given in cases:
        with pytest.raises(ValueError, match=r"^key: one threefry key per run, \(2,\) typed "
                           rf"keys or \(2, 2\) key data .*, not {given}$"):  # fmt: skip
            simulate(params, data, 0.01, optimizer="sgd", key=keys)
    # keys of the right shape but no threefry key: float data was cut to the same integers
    # (0.2 and 0.9 drew the same minibatches), rbg keys were named by their shape alone
    rbg = jax.random.split(jax.random.key(0, impl="rbg"), 2)
    for keys, said in [(np.full((2, 2), 0.2), r"^key: float64 key data; give uint32 key data"),
                       (np.array([[2**33, 1], [0, 1]]), r"^key: key data outside \[0, 2\*\*32\)"),
                       (np.array([[-1, 1], [0, 1]]), r"^key: key data outside \[0, 2\*\*32\)"),
                       (rbg, r"^key: rbg keys; simulate takes threefry2x32 keys$")]:  # fmt: skip
        with pytest.raises(ValueError, match=said):
            simulate(params, data, 0.01, optimizer="sgd", key=keys)
    with pytest.raises(ValueError, match=r"^early_stopping: needs validation"):
        simulate(params, data, 0.01, early_stopping=True)
    for word in ("off", 0):  # "off" is truthy: every run stopped early at its first check
        with pytest.raises(ValueError, match=r"^early_stopping: .* is not True, False or None"):
            simulate(params, data, 0.01, validation_weights=data.weights, early_stopping=word)
    for devices in (jax.devices()[0], ["cpu"]):  # no len(); 'str' has no 'platform'
        with pytest.raises(ValueError, match=r"^devices: a list of JAX devices, such as jax"):
            simulate(params, data, 0.01, devices=devices)
    for stop_on in ([["crossed"]], 3):  # unhashable type: 'list'
        with pytest.raises(ValueError, match=r"^stop_on: a tuple of rule names, such as \('cr"):
            simulate(params, data, 0.01, stop_on=stop_on)
    from gdrelu.engine import arguments, simulation

    for names in ({"crossed"}, frozenset(["crossed"]), np.array(["crossed"]), ["crossed"]):
        assert arguments.rule_names(names) == ("crossed",)  # any collection of names
    assert arguments.rule_names(n for n in ("stuck", "crossed")) == ("stuck", "crossed")
    arguments.check_callers(params, np.array(jax.devices()), None, None)  # a mesh's devices
    arguments.check_arrays(params, data, jax.numpy.bfloat16(0.01), None, None, None)
    assert simulation._early_stopping(np.array(True), data.weights, None) is True
    for value in (True, 0.1 + 0j):  # True trained with h = 1; complex broke on h > 0
        with pytest.raises(ValueError, match=r"^step_size: (bool|complex128) values; give real"):
            simulate(params, data, value)
    with pytest.raises(ValueError, match=r"^validation: give held-out points or validation_w"):
        simulate(params, data, 0.01, validation=data, validation_weights=data.weights)
    with pytest.raises(ValueError, match=r"^step_size: needed for a named optimizer"):
        simulate(params, data, None)


def test_plain_tuples_for_the_named_inputs_are_refused_by_name():
    """`simulate(tuple(params), …)` failed with "'tuple' object has no attribute 'b'", a
    tuple for data with one about 'x'; each is refused naming the input and its type."""
    params, data = _tiny_runs()
    for given, named in (
        (dict(params=tuple(params)), r"^params: a gdrelu.Params\(a, b, w, c\), not tuple"),
        (dict(params=params._asdict()), r"^params: a gdrelu.Params\(a, b, w, c\), not dict"),
        (dict(data=tuple(data)), r"^data: a gdrelu.WeightedData\(x, y, weights\), not tuple"),
        (dict(test=list(data)), r"^test: a gdrelu.WeightedData\(x, y, weights\), not list"),
    ):
        arguments = {"params": params, "data": data, "step_size": 0.01, **given}
        with pytest.raises(ValueError, match=named):
            simulate(**arguments)


def test_networks_and_callers_that_cannot_train_are_named():
    """Before anything compiles: neuron counts that differ between a, b and w (a broadcast
    error in the propagator), a weight that is not finite (the run came back diverged, no
    word), no device, an `on_check` that is no function and a `classify_width` below the
    width (each failed only after training)."""
    params, data = _tiny_runs()
    with pytest.raises(ValueError, match=r"^params: a of shape \(2, 1\), b of \(2, 2\)"):
        simulate(params._replace(a=params.a[:, :1]), data, 0.01)
    with pytest.raises(ValueError, match=r"^params: some weights are not finite"):
        simulate(params._replace(w=np.where(np.eye(2), np.nan, params.w)), data, 0.01)
    with pytest.raises(ValueError, match=r"^devices: an empty list"):
        simulate(params, data, 0.01, devices=[])
    with pytest.raises(ValueError, match=r"^on_check: 5 is not a function"):
        simulate(params, data, 0.01, on_check=5)
    for width in (0, 1, 2.0, True):
        with pytest.raises(ValueError, match=r"^classify_width: .* ≥ the networks' 2 neurons"):
            simulate(params, data, 0.01, classify_width=width)


def test_networks_the_engine_would_misread_are_refused_by_name(monkeypatch):
    """From the API review, each trained or crashed without a word before: c of another run
    count than a, b and w (one run trained, three dropped); a real neuron with a = b = 0
    (its kink 0/0 kept the running largest kink NaN: the crossing rule never fired); a
    step size that rounds to 0 or inf in the params' float32 (the runs stood still or
    diverged); fields of two dtypes (trained in b's); complex targets (their imaginary
    parts dropped); networks on R^2 for 1-D points (refused deep in the placement)."""
    params, data = _tiny_runs()
    with pytest.raises(ValueError, match=r"^params: c of shape \(1,\), b of \(2, 2\)"):
        simulate(params._replace(c=params.c[:1]), data, 0.01)
    dead = params._replace(a=np.array([[1.0, 0.0], [1.0, -1.0]]), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"^params: run 0's neuron 1 has a = 0 and b = 0 but w"):
        simulate(dead, data, 0.01)
    padded = dead._replace(w=np.array([[0.5, 0.0], [0.5, 0.5]]))  # a = b = w = 0: padding
    from gdrelu.engine.arguments import check_arrays

    check_arrays(padded, data, 0.01, None, None, None)
    from gdrelu.engine import simulation

    monkeypatch.setattr(simulation, "_trained", lambda plan, **arguments: plan)  # no training
    simulate(padded, data, 0.01)
    simulate(dead, data, 0.01, stop_on=())  # no crossing rule reads its kink: it trains
    plane = data._replace(x=np.stack([data.x, data.x], -1))  # d = 2: crossing is a pattern
    simulate(params._replace(a=np.zeros((2, 2, 2)), b=np.zeros((2, 2))), plane, 0.01)
    monkeypatch.undo()
    single = type(params)(*(v.astype(np.float32) for v in params))
    for step, rounded in ((1e-50, "0.0"), (1e39, "inf")):
        with pytest.raises(ValueError, match=rf"^step_size: {re.escape(repr(step))}, {rounded} in"):
            simulate(single, data, step)
    with pytest.raises(ValueError, match=r"^params: a float64, b float32, w float64, c float64"):
        simulate(params._replace(b=params.b.astype(np.float32)), data, 0.01)
    with pytest.raises(ValueError, match=r"^data: complex values"):
        simulate(params, data._replace(y=data.y.astype(complex)), 0.01)
    with pytest.raises(ValueError, match=r"^test: complex values"):
        simulate(params, data, 0.01, test=data._replace(x=data.x.astype(complex)))
    plane = params._replace(a=np.ones((2, 2, 2)))
    with pytest.raises(
        ValueError, match=r"^data: points of shape \(\) .* take points of shape \(2,\)"
    ):
        simulate(plane, data, 0.01)


def test_params_of_python_lists_are_taken_as_arrays():
    """`params_dtype` takes array-likes, but the inputs' cast read `params.b.dtype`: a
    Params of lists failed with "'list' object has no attribute 'dtype'" (API review)."""
    from gdrelu.engine import simulation
    from gdrelu.engine.arguments import check_precision, params_dtype

    params, data = _tiny_runs()
    single = type(params)(*(v.astype(np.float32) for v in params))
    assert params_dtype(single._replace(b=single.b.tolist())) == np.float32  # the arrays'
    jax.config.update("jax_enable_x64", False)
    try:  # lists alone are numpy's float64, which needs x64 (they trained as float32)
        with pytest.raises(ValueError, match=r"^params: float64 but jax_enable_x64 is off"):
            check_precision(type(params)(*(v.tolist() for v in params)), data)
    finally:
        jax.config.update("jax_enable_x64", True)
    listed = type(params)(*(v.tolist() for v in params))
    cast = (simulation._as_arrays(p, data, None, None, None) for p in (listed, params))
    for got, want in zip(*cast, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype == np.float64
            np.testing.assert_array_equal(g, w)


def test_points_that_do_not_fit_the_data_are_named():
    """A point set whose x, y and weights disagree on the points per run, held-out points
    with features the data lacks, and validation weights for another number of points are
    refused naming the argument, before anything compiles (XLA's broadcasting error named
    none of them)."""
    from gdrelu.engine.arguments import check_arrays

    params, data = _tiny_runs()
    short = data._replace(weights=data.weights[:, :2])
    with pytest.raises(
        ValueError, match=r"^data: x of shape \(2, 3\), y of \(2, 3\), weights of \(2, 2\)"
    ):
        simulate(params, short, 0.01)
    for name in ("validation", "test"):
        with pytest.raises(ValueError, match=rf"^{name}: x of shape \(2, 4\), y of \(2, 3\)"):
            simulate(params, data, 0.01, **{name: data._replace(x=np.ones((2, 4)))})
        planar = data._replace(x=np.ones((2, 3, 2)))
        with pytest.raises(ValueError, match=rf"^{name}: x of shape \(2, 3, 2\), but the data's"):
            simulate(params, data, 0.01, **{name: planar})
    with pytest.raises(ValueError, match=r"^validation_weights: shape \(2, 4\), not one per"):
        simulate(params, data, 0.01, validation_weights=np.full((2, 4), 0.25))
    fewer = type(data)(*(v[:, :2] for v in data))  # held-out sets may have their own size
    check_arrays(params, data, 0.01, None, fewer, fewer)


def test_validation_defaults():
    """Without test points the test loss is the validation points' (held out or the
    training points with validation weights); early stopping is on by default only with
    validation weights, not with held-out points (`simulate`'s docstring)."""
    from gdrelu.engine.simulation import _as_arrays, _early_stopping

    params, data = _tiny_runs()
    held_out = data._replace(x=2 * data.x)
    weights = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    reweighted = data._replace(weights=weights)
    for given, want in (((None, held_out), held_out), ((weights, None), reweighted)):
        _, _, validation, test = _as_arrays(params, data, *given, None)
        for got in (validation, test):
            for field, value in zip(got, want, strict=True):
                np.testing.assert_array_equal(field, value)
    assert _early_stopping(None, None, held_out) is False
    assert _early_stopping(None, weights, None) is True
    assert _early_stopping(True, None, held_out) is True


def test_the_step_budget_ends_at_the_int32_maximum():
    """A run may take 2^31 - 1 steps, the most its int32 step counters hold; one more is
    refused, naming max_checks."""
    engine.check_step_budget(1, 2**31 - 1)
    engine.check_step_budget(2**31 - 1, 1)
    with pytest.raises(ValueError, match=r"^check_every: 3000000000 steps exceed"):
        engine.check_step_budget(3_000_000_000, 1)  # one check alone: not max_checks' fault
    with pytest.raises(SpecError, match=r"^check_every: 3000000000 steps exceed"):
        ExperimentSpec(check_every=3_000_000_000, max_checks=1)
    with pytest.raises(ValueError, match=r"^max_checks: 2 × 1073741824 steps exceed"):
        engine.check_step_budget(2, 2**30)


def test_points_at_zero_are_looked_for_in_the_training_points_only():
    """The kink rule reads the training points: a validation or test point at x = 0 is no
    reason to warn, a training point at 0 (or within 64 ulp of the largest |x_j|) is."""
    from gdrelu.engine.checks import checked_inputs

    _, data = _tiny_runs()
    x = data.x.copy()
    x[1, 1] = 1e-15  # 1e-15 ≤ 64 · 2.2e-16 · 2 = 2.8e-14: at zero
    with_zero = data._replace(x=x)
    held_out = data._replace(x=np.where(data.x == 0.5, 0.0, data.x))  # run 0's 0.5 at 0
    step = np.full(2, 0.01)
    params, _ = _tiny_runs()
    _, usable, at_zero, among = checked_inputs(with_zero, step, held_out, held_out, params, 1.0)
    assert np.asarray(at_zero).tolist() == [False, True]
    assert np.asarray(usable).all()
    assert not np.asarray(among).any()  # zero biases: every kink at 0, named as at_zero
    exact = data._replace(x=np.where(data.x == 0.5, 0.0, data.x))  # run 0's 0.5 at 0 exactly
    _, _, at_zero, among = checked_inputs(exact, step, held_out, held_out, params, 1.0)
    assert np.asarray(at_zero).tolist() == [True, False]
    assert not np.asarray(among).any()  # its kink 0 ≥ min |x_j| = 0: warned of once, as at 0


def test_no_block_or_redo_trains_a_single_lane():
    """XLA compiles a vmapped batch of one lane to other roundings (momentum moved by
    1e-11, Adam's chaotic runs by O(1)): a redo's share has at least `MIN_BLOCK` lanes
    where the batch has them, however small the redo size asked for."""
    blocking = engine.Blocking(block=64, redo=1, unroll=1, check=64)
    assert engine.MIN_BLOCK == 2
    assert placement.redo_share(blocking, 2, 64) == (2, 1)
    assert placement.redo_share(blocking._replace(block=1), 2, 1) == (1, 1)
    assert placement.redo_share(blocking._replace(redo=40), 2, 64) == (20, 1)
    assert placement.redo_share(blocking._replace(block=4, redo=40), 2, 64) == (20, 5)


def test_a_batch_with_general_blocks_redoes_a_block_per_device_in_small_blocks():
    """The propagator's mixed batches (general blocks trained as redos): on a CPU, blocks
    of `REDO_BLOCK` runs and redos of `BLOCK` runs per device in blocks of the usual redo
    share (32 runs at width 16, where a redo takes 64 runs over two devices; 16 at
    width 128); an accelerator redoes the whole batch in one block; sizes given win."""
    from types import SimpleNamespace

    cpu, gpu = [SimpleNamespace(platform="cpu")] * 2, [SimpleNamespace(platform="gpu")] * 2
    narrow = engine.Blocking(block=64, redo=64, unroll=1, check=512)
    wide = narrow._replace(redo=16)
    assert placement.redone_blocking(narrow, cpu) == narrow._replace(
        block=16, redo=128, redo_block=32
    )
    assert placement.redone_blocking(wide, cpu) == wide._replace(block=16, redo=128, redo_block=16)
    assert placement.redone_blocking(narrow, cpu, block=64) == narrow._replace(
        redo=128, redo_block=32
    )
    assert placement.redone_blocking(narrow, cpu, redo=64) == narrow._replace(block=16)
    accelerator = engine.Blocking(block=4096, redo=256, unroll=8, check=4096)
    assert placement.redone_blocking(accelerator, gpu) == accelerator._replace(redo=8192)
    share = placement.redo_share(narrow._replace(block=16, redo=128, redo_block=32), 2, 192)
    assert share == (64, 2)


def test_a_redo_trains_only_the_blocks_that_hold_its_lanes():
    """A redo batch's num_blocks, per device: the blocks of `redo_block` runs its real
    lanes fill, none on a device without any (`own_lane_batches` pads with -1), then its
    real lanes (first in its share) and no general ones."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()[:2]), (engine.RUNS_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(engine.RUNS_AXIS))
    blocking = engine.Blocking(block=16, redo=128, unroll=1, check=512, redo_block=32)
    layout = placement.Layout(np.zeros(2 * 192, int), None, None, blocking, sharding)
    assert (layout.redo_lanes, layout.redo_block) == (128, 32)
    taken = np.concatenate([np.arange(33), np.full(31, -1), np.full(64, -1)])
    np.testing.assert_array_equal(np.asarray(layout.redo_blocks(taken)), [[2, 2, 33, 0], [0] * 4])


def test_a_redo_takes_its_size_rounded_up_over_the_devices():
    """A redo of 41 lanes over two devices takes ⌈41/2⌉ = 21 lanes on each, at least the
    lanes asked for (not 20); in blocks of 4 that is 6 blocks, 24 lanes."""
    blocking = engine.Blocking(block=64, redo=41, unroll=1, check=64)
    assert placement.redo_share(blocking, 2, 64) == (21, 1)
    assert placement.redo_share(blocking._replace(block=4), 2, 64) == (24, 6)


_FOUR_DEVICES = """
import sys
import jax
import numpy as np
jax.config.update("jax_enable_x64", True)
from gdrelu import ExperimentSpec, simulate, theory
from gdrelu.cells import Cell, initial_runs
assert jax.device_count() == 4, jax.devices()
spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=40, seed=0)
params, data, _ = initial_runs(Cell(8, 0.0, spec), np.arange(40))
step = theory.paper_step_size(params, data)
r = simulate(params, data, step, check_every=200, max_checks=100)
np.savez(sys.argv[1], status=r.status, stop_step=r.stop_step, *r.params)
"""


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_four_devices_in_a_subprocess_give_the_same_runs(width8_result, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "four.npz"
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(out)], check=True, env=env)
    four = np.load(out)
    np.testing.assert_array_equal(four["status"], width8_result.status)
    np.testing.assert_array_equal(four["stop_step"], width8_result.stop_step)
    for i, leaf in enumerate(width8_result.params):
        np.testing.assert_allclose(four[f"arr_{i}"], leaf, rtol=1e-12, atol=1e-15)
