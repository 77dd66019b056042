"""Widths in one program: networks padded to a bucket width with inert neurons."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu import engine, runner, theory
from gdrelu.buckets import SHARED_LIMIT, shared_width, width_buckets
from gdrelu.init import he_init
from gdrelu.model import (
    Params,
    active_neurons,
    forward,
    loss_gradient,
    max_abs_kink,
    padded,
)
from gdrelu.runner import run_experiment
from gdrelu.spec import ExperimentSpec

EXACT_FIELDS = ("status", "stop_step", "pattern_change_step", "loss_below_step", "escaped",
                "best_step")  # fmt: skip
CLOSE_FIELDS = ("final_loss", "max_kink", "linear_threshold", "best_validation_loss")
# max_kink, the largest |b_i/a_i| along the path, is ill-conditioned where some a_i passes
# near 0: batches in blocks of 16 runs against one in blocks of 64 moved a kink of 3228 by
# 1.6e-11 relative while the final parameters agreed to 6e-13
RTOL = {"max_kink": 1e-10}


def assert_same_runs(first, second):
    """Cell by cell and run by run: statuses and steps equal, values to relative 1e-12
    (`RTOL` for the ill-conditioned ones), parameters to 1e-12 of their run's largest
    (a b_i near 0 sums terms far larger than itself: over 64 runs × 10 000 steps its
    relative difference reached 3.5e-12, at 2.8e-16 absolute)."""
    assert [(c.cell.width, c.cell.delta) for c in first] == [
        (c.cell.width, c.cell.delta) for c in second
    ]
    for x, y in zip(first, second, strict=True):
        for field in EXACT_FIELDS:
            np.testing.assert_array_equal(getattr(x.result, field), getattr(y.result, field))
        for field in CLOSE_FIELDS:
            np.testing.assert_allclose(
                getattr(x.result, field), getattr(y.result, field), RTOL.get(field, 1e-12), 0
            )
        np.testing.assert_allclose(x.step_size, y.step_size, rtol=1e-12, atol=0)
        for u, v in zip(x.result.params, y.result.params, strict=True):
            assert u.shape == v.shape and u.shape[-1 if u.ndim > 1 else 0] > 0
            scale = np.max(np.abs(u.reshape(u.shape[0], -1)), axis=1)  # per run
            scale = scale.reshape(-1, *[1] * (u.ndim - 1))
            assert np.all(np.abs(u - v) <= 1e-12 * scale), np.max(np.abs(u - v) / scale)


def test_padding_neurons_are_inert_and_have_no_kink():
    params = he_init(5, key=jax.random.key(0))
    params = params._replace(b=0.1 * params.a)
    wide = padded(params, 8)
    assert wide.a.shape == (8,) and active_neurons(wide).tolist() == [True] * 5 + [False] * 3
    assert max_abs_kink(wide) == max_abs_kink(params)  # 0/0 is no kink, not NaN
    x = jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(forward(wide, x), forward(params, x))
    g = loss_gradient(wide, x, jnp.ones(3), jnp.ones(3) / 3, alpha=0.1)
    assert not np.any(np.asarray(g.a[5:])) and not np.any(np.asarray(g.w[5:]))
    # one side without a real neuron is degenerate, however the padding is signed
    one_sided = params._replace(a=jnp.abs(params.a))
    assert theory.a_degenerate(padded(one_sided, 8))
    assert not theory.a_degenerate(padded(params._replace(a=params.a.at[0].set(-1.0)), 8))
    d_dim = Params(jnp.ones((2, 3)), jnp.ones(3), jnp.ones(3), jnp.zeros(()))
    assert active_neurons(padded(d_dim, 5)).tolist() == [True] * 3 + [False] * 2


@pytest.mark.parametrize("dim", [1, 2])
def test_padded_networks_classify_alike(dim):
    """`simulate(classify_width=...)`: padding neurons change no activation group, so L_lin
    and escaped are those of the unpadded networks (with groups that move, and not)."""
    from gdrelu.data import WeightedData
    from gdrelu.detectors import classify

    keys = jax.random.split(jax.random.key(5), 3)
    initial = jax.vmap(lambda k: he_init(5, dim, key=k))(jax.random.split(keys[0], 8))
    noise = 0.7 * jax.random.normal(keys[1], initial.b.shape)
    final = initial._replace(b=initial.b + noise * (jnp.arange(8) % 2)[:, None])
    x = jax.random.normal(keys[2], (8, 7) if dim == 1 else (8, 7, dim))
    data = WeightedData(x, jnp.sin(x.reshape(8, 7, -1).sum(-1)), jnp.full((8, 7), 1 / 7))
    loss = jnp.linspace(0.0, 0.2, 8)
    host = jax.device_get((initial, final))
    want = classify(initial, final, data, loss)
    got = classify(*(padded(p, 12, xp=np) for p in host), data, loss)
    assert 0 < np.sum(want[1]) < 8
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)


WIDE = (16, 32, 64, 128, 256, 512, 1024, 2048)


@pytest.mark.parametrize(
    ("settings", "buckets"),
    [
        (dict(widths=(16, 24, 40, 128, 100), buckets="pow2"),
         [(16, (16,)), (32, (24,)), (64, (40,)), (128, (128, 100))]),
        (dict(widths=(16, 40), buckets="one"), [(40, (16, 40))]),
        # in order of first width, each bucket with its widths in the spec's order
        (dict(widths=(40, 16, 24, 20), buckets="pow2"), [(64, (40,)), (16, (16,)), (32, (24, 20))]),
        # "one" pads to the largest width, not the last
        (dict(widths=(40, 16, 24), buckets="one"), [(40, (40, 16, 24))]),
        (dict(widths=(16, 40), buckets="none"), [(16, (16,)), (40, (40,))]),
        # auto, GD on the propagator: the widths up to 128 share the program of the widest
        (dict(), [(128, (w,)) for w in (16, 32, 64, 128)]),
        (dict(widths=(16, 24, 40)), [(64, (16,)), (64, (24,)), (64, (40,))]),
        (dict(widths=(16,)), [(16, (16,))]),
        (dict(widths=(300, 20, 129)), [(512, (300,)), (32, (20,)), (256, (129,))]),
        (dict(widths=WIDE), [(128 if w <= 128 else w, (w,)) for w in WIDE]),
        (dict(init="swapped", alpha=0.1), [(128, (w,)) for w in (16, 32, 64, 128)]),
        # auto, the general path (O(n·m) a step): pow2
        (dict(optimizer="adam"), [(w, (w,)) for w in (16, 32, 64, 128)]),
        (dict(bias_init="unif"), [(w, (w,)) for w in (16, 32, 64, 128)]),
        (dict(data="p-ex", step_size="ntk", widths=(16, 24)), [(16, (16,)), (32, (24,))]),
        (dict(init="ntk", step_size="ntk", widths=(16, 24)), [(16, (16,)), (32, (24,))]),
    ],
)  # fmt: skip
def test_buckets(settings, buckets):
    assert width_buckets(ExperimentSpec(**settings)) == buckets


@pytest.mark.parametrize(
    ("widths", "shared"),
    [
        ((16, 128), {16: 128, 128: 128}),
        ((8, 1024), {8: 1024, 1024: 1024}),
        ((8, 2048), {8: 8, 2048: 2048}),
        # a bucket past the limit keeps its own width and pads no narrower network to it
        ((8, 300, 2 * SHARED_LIMIT), {8: 512, 300: 512, 2 * SHARED_LIMIT: 2 * SHARED_LIMIT}),
    ],
)
def test_the_once_per_batch_programs_pad_no_network_to_a_huge_width(widths, shared):
    spec = ExperimentSpec(widths=widths, optimizer="adam")  # pow2 buckets
    assert {w: shared_width(spec, w) for w in widths} == shared


def test_a_narrow_width_draws_the_same_bits_beside_a_wide_one():
    """Width 8's networks and paper step sizes, alone and in a spec with width 2048 (whose
    once-per-batch calls take fewer runs): the same bits."""
    from gdrelu.cells import Cell
    from gdrelu.runner import batch_inputs

    got = []
    for widths in ((8,), (8, 2048)):
        spec = ExperimentSpec(widths=widths, deltas=(0.0,), runs=70)
        work = [(Cell(8, 0.0, spec), np.arange(70))]
        params, _, step, _ = batch_inputs(work, bucket=8, classify_width=shared_width(spec, 8))
        got.append(jax.device_get((params, step)))
    for alone, beside in zip(*map(jax.tree.leaves, got), strict=True):
        np.testing.assert_array_equal(alone.view(np.uint8), beside.view(np.uint8))
    with pytest.raises(ValueError, match="width: 16"):
        shared_width(ExperimentSpec(widths=(8,)), 16)


def test_bad_buckets_are_named():
    with pytest.raises(ValueError, match="buckets"):
        ExperimentSpec(buckets="some")


@pytest.mark.parametrize(("optimizer", "path"), [("gd", "propagator"), ("adam", "general")])
def test_spec_path_is_the_path_simulate_takes(optimizer, path, monkeypatch):
    """`ExperimentSpec.path`, which the auto buckets read, is the path the runs train on."""
    from gdrelu.engine import chunk

    # tests/test_engine.py's `width8` runs and checks (40 runs of width 8, every 200 steps),
    # as test_cli's and test_store's: their programs are shared with those tests
    spec = ExperimentSpec(
        widths=(8,), deltas=(0.0,), runs=40, check_every=200, max_checks=1, optimizer=optimizer
    )
    assert spec.path == path
    taken = []
    run_chunk = chunk.run_chunk

    def spy(*args, settings, **kwargs):
        taken.append(settings.path)
        return run_chunk(*args, settings=settings, **kwargs)

    monkeypatch.setattr(chunk, "run_chunk", spy)
    run_experiment(spec)
    assert path in taken and (path == "propagator" or "propagator" not in taken)


def test_the_widths_of_a_bucket_trace_one_chunk_program():
    """Adam trains on the general path, whose state grows with the width: widths 5 and 7
    share the bucket of 8, one trace of its chunk program for both and every Δ."""
    spec = ExperimentSpec(widths=(5, 7), deltas=(0.0, 0.1), runs=2, optimizer="adam",
                          step_size=0.01, check_every=37, max_checks=2)  # fmt: skip
    jax.clear_caches()  # count the traces of this run alone
    before = dict(engine.TRACE_COUNT)
    run_experiment(spec)
    assert engine.TRACE_COUNT["general"] - before["general"] == 1


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_widths_in_one_program_equal_each_width_alone():
    """--widths 16,24,40 in one compiled program (the default buckets of GD: one trace of
    each path) gives, run by run, what each width gives alone and unpadded."""
    base = dict(deltas=(0.0, 0.1), runs=6, check_every=200, max_checks=30)
    jax.clear_caches()  # count the traces of this run alone
    before = dict(engine.TRACE_COUNT)
    together = run_experiment(ExperimentSpec(widths=(16, 24, 40), **base))
    assert engine.TRACE_COUNT["propagator"] - before["propagator"] == 1
    assert engine.TRACE_COUNT["general"] - before["general"] <= 1
    statuses = np.concatenate([c.result.status for c in together])
    assert len(set(statuses.tolist())) >= 2  # crossed and stuck runs alike
    alone = [
        cr
        for width in (16, 24, 40)
        for cr in run_experiment(ExperimentSpec(widths=(width,), buckets="none", **base))
    ]
    assert_same_runs(together, alone)


@pytest.mark.parametrize(
    "settings",
    [
        # NTK scaling reads the true width; Adam and nonzero biases train on the general path
        dict(init="ntk", bias_init="kink-unif", optimizer="adam", step_size=0.01),
        # d-dim input, the NTK step size of the true network
        pytest.param(dict(data="star", step_size="ntk", widths=(3, 6)), marks=pytest.mark.slow),
    ],
    ids=["ntk-adam-biases", "star"],
)
def test_a_padded_run_equals_the_unpadded_run(settings, monkeypatch):
    base = dict(widths=(5, 9), deltas=(0.0,), runs=3, check_every=40, max_checks=3)
    spec = {**base, **settings}
    buckets = []

    def train_cells(work, *, bucket, **kwargs):
        buckets.append((sorted({cell.width for cell, _ in work}), bucket))
        return train(work, bucket=bucket, **kwargs)

    train = runner.train_cells
    monkeypatch.setattr(runner, "train_cells", train_cells)
    padded = run_experiment(ExperimentSpec(**spec, buckets="one"))
    small, large = spec["widths"]
    assert buckets == [([small, large], large)]  # the narrow width padded to the wide one
    for cr in padded:  # copies, not views: those kept the whole padded batch alive
        assert all(leaf.base is None for leaf in cr.result.params[:3]), cr.cell.width
    buckets.clear()
    alone = run_experiment(ExperimentSpec(**spec, buckets="none"))
    assert buckets == [([small], small), ([large], large)]
    assert_same_runs(padded, alone)


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_a_small_memory_budget_splits_the_runs_without_changing_them():
    """Batches sized from the per-run byte estimate: a budget of one block of 16 runs per
    device splits a bucket of 3 × 32 runs into batches of 16 per device, and every run
    equals the one-batch result."""
    from gdrelu import memory
    from gdrelu.runner import run_bytes

    spec = ExperimentSpec(
        widths=(3, 4, 5), deltas=(0.0,), runs=32, check_every=100, max_checks=5, buckets="one"
    )
    per_run, per_block_run = run_bytes(spec, 5, spec.cells()[0])
    assert 8 * (3 * 4 + 1) < per_run < 100_000
    devices = jax.local_device_count()
    budget = 16 * devices * (memory.COPIES * per_run + per_block_run)
    batching = memory.batching(per_run, per_block_run, budget, 96, False)
    assert batching == (16 * devices, 16, min(engine.REDO_BLOCK, 16 * devices))
    seen = []
    split = run_experiment(
        spec,
        memory_budget=budget + memory.results_bytes(spec),
        on_check=lambda widths, k, status: seen.append((status.size, int((status != 0).sum()))),
    )
    sizes, finished = zip(*seen, strict=True)
    assert set(sizes) == set(range(16 * devices, 97, 16 * devices))  # each reports the earlier
    assert finished[-1] == 96 and np.all(np.diff(finished) >= 0)
    assert_same_runs(split, run_experiment(spec, memory_budget=1 << 40))


def _compared(optimizer: str) -> dict:
    from gdrelu.cli.options import compared

    return {k: v for k, v in compared({}, optimizer).items() if k != "optimizer"} | {
        "optimizer": optimizer}  # fmt: skip


@pytest.mark.slow  # three optimizers, three experiments each
@pytest.mark.parametrize("settings", ["sgd", "adam", "momentum"])
def test_other_optimizers_runs_depend_on_no_batch_nor_other_cell(settings):
    """The paper code's SGD and Adam (minibatches, early stopping, the crossing rule) and
    heavy ball as `compare` trains it: batches of 8 runs per device that span cells, one
    cell run alone, and one device instead of two give every run as the whole experiment
    does (only GD's were tested; an invariance review found these hold)."""
    from gdrelu import memory
    from gdrelu.protocols import protocol
    from gdrelu.runner import run_bytes

    fields = protocol(settings) if settings != "momentum" else _compared("momentum")
    spec = ExperimentSpec(widths=(16, 32), deltas=(0.0, 0.1), runs=24, check_every=100,
                          max_checks=10, **fields)  # fmt: skip
    whole = run_experiment(spec, memory_budget=1 << 40)
    per_run, per_block_run = run_bytes(spec, 16, spec.cells()[0])  # the narrower bucket's
    devices = jax.local_device_count()
    budget = 8 * devices * (memory.COPIES * per_run + per_block_run) + memory.results_bytes(spec)
    seen = []
    split = run_experiment(spec, memory_budget=budget, on_check=lambda w, k, s: seen.append(s.size))
    assert seen[0] <= 8 * devices < 2 * 24  # the first batch (each reports the earlier)
    assert_same_runs(whole, split)
    alone = run_experiment(dataclasses.replace(spec, widths=(32,), deltas=(0.1,)))
    assert_same_runs([c for c in whole if (c.cell.width, c.cell.delta) == (32, 0.1)], alone)
    from gdrelu.runner import batch_inputs

    params, data, step, arguments = batch_inputs([(spec.cells()[0], np.arange(24))], bucket=16,
                                                 classify_width=16)  # fmt: skip
    one, two = (engine.simulate(params, data, step, **arguments, devices=jax.devices()[:k])
                for k in (1, 2))  # fmt: skip
    np.testing.assert_array_equal(one.status, two.status)  # one device or two
    np.testing.assert_array_equal(one.stop_step, two.stop_step)
    for u, v in zip(one.params, two.params, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15)


# How runs are placed and checked (`gdrelu.engine.placement`, `arguments`, `state`, `checks`):
# claims of docs/design.md ("Blocks, devices and checks") and docs/theory.md ("Outcome of a
# run") checked on the functions themselves, without training.


def test_an_accelerator_takes_its_whole_share_in_one_block():
    """docs/design.md's table: a GPU or TPU trains a device's whole share in one block of
    whole `BLOCK`s (at most 2¹⁵ runs), checks it all at once, redoes 256 runs at a time
    and unrolls 8 GD steps per loop iteration; `block` and `redo` given win."""
    from types import SimpleNamespace

    from gdrelu.engine import placement

    gpus = [SimpleNamespace(platform="gpu")] * 2
    # 129 runs over two devices: 65 on one of them, two blocks of 64 (not 64 in one)
    assert placement.blocking_for(gpus, 129, kernel="xla") == (128, 256, 8, 128, "xla", None, "xla")
    assert placement.blocking_for(gpus, 3, kernel="xla")[:4] == (64, 256, 8, 64)
    assert placement.blocking_for(gpus, 10**6, kernel="xla").block == 2**15
    given = placement.blocking_for(gpus, 129, block=32, kernel="xla", redo=7)
    assert given[:4] == (32, 7, 8, 32)
    with pytest.raises(ValueError, match=r"'pallas' compiles with Triton for GPUs, not tpu"):
        placement.propagator_kernel("tpu", "pallas")


def test_a_kernel_given_by_name_wins_over_the_environment(monkeypatch):
    """The kernel asked for is `kernel`, else $GDRELU_PROPAGATOR_KERNEL, else "auto"; the
    general path takes its C loop only where "native" is asked for and the loop trains
    the optimizer."""
    from gdrelu.engine import placement
    from gdrelu.optim import get_optimizer

    monkeypatch.setenv(placement.KERNEL_VARIABLE, "interpret")
    assert placement.requested_kernel("xla") == "xla"
    assert placement.propagator_kernel("cpu", "xla") == "xla"
    assert placement.requested_kernel() == "interpret"
    monkeypatch.delenv(placement.KERNEL_VARIABLE)
    assert placement.requested_kernel() == "auto"
    epochs = get_optimizer("sgd", sampler="epoch")  # the C loop does not train it
    assert placement.general_kernel("native", epochs) == "xla"


def test_a_run_is_ready_for_the_fixed_pattern_path_only_with_every_kink_off_the_data():
    """A run may train its next chunk on the fixed-pattern path while every kink lies
    strictly inside the data-free zone (-min_j |x_j|, min_j |x_j|) and its groups refine
    the sides: a kink that reached min_j |x_j| has crossed a point (docs/theory.md)."""
    from gdrelu.engine.placement import fixed_pattern_ready

    x = np.array([[1.0, -2.0], [-1.0, 3.0], [-1.0, 3.0], [0.5, 2.0]])
    kinks = np.array([1.0, np.nextafter(1.0, 0.0), 0.5, 0.25])
    sides = np.array([True, True, False, True])
    got = fixed_pattern_ready(kinks, x, sides, xp=np)
    assert got.tolist() == [False, True, False, True]


def _small_runs():
    """Three 1-D runs of width 2 with biases (kinks |b_i/a_i| of 0.3, 0.25 and 0.5 at
    most), on four points each, two on either side of 0, written out."""
    from gdrelu import Params, WeightedData

    a = np.array([[1.0, -2.0], [0.5, 4.0], [-1.0, 1.0]])
    b = np.array([[0.3, 0.5], [0.125, -1.0], [0.5, 0.0]])
    w = np.array([[1.0, -0.5], [2.0, 0.25], [-1.0, 1.5]])
    params = Params(a, b, w, np.array([0.1, -0.2, 0.0]))
    x = np.array([[-1.0, -0.75, 0.5, 2.0], [-2.0, -0.5, 1.0, 1.5], [-1.5, -1.25, 0.75, 1.25]])
    data = WeightedData(x, np.sin(x), np.full((3, 4), 1 / 4))
    return params, data


def test_a_run_starts_with_its_initial_kinks_and_no_event():
    """Before its first step a run reports max_i |b_i/a_i| of its initial network (the
    max over steps so far), no pattern change and no loss below L_lin (-1), step 0, no
    validation loss yet (∞) and no stale check; without data its L_lin is NaN."""
    from gdrelu.engine.state import initial_state

    params, _ = _small_runs()
    runs = jax.device_get(initial_state(params))
    np.testing.assert_array_equal(runs.info.max_kink, [0.3, 0.25, 0.5])
    assert runs.info.pattern_change.tolist() == runs.info.loss_below.tolist() == [-1] * 3
    assert runs.state.step.tolist() == runs.info.stale_checks.tolist() == [0] * 3
    assert np.all(runs.info.best_val == np.inf) and np.all(runs.info.test_at_best == np.inf)
    assert np.all(np.isnan(runs.state.linear_threshold))
    assert not runs.state.within_sides.any()  # nothing is known to be fixed-pattern ready


def test_the_checks_of_a_run_follow_the_stop_rules(monkeypatch):
    """`check_one` on three runs: crossed once max_i |b_i/a_i| reached min_j |x_j| (not
    before); with early stopping, patience 0 stops at the first check and patience 1 does
    not; the training loss is ½ Σ p r², the validation loss ½ Σ v r² under the validation
    weights, taken at the run's step (each by numpy); a-degenerate where every a_i has one
    sign (run 1), from the per-side lines too; diverged where the loss overflows though
    every weight is finite; the certificate reads eigenvector rows only where asked."""
    import functools

    from gdrelu import theory
    from gdrelu.engine.checks import CheckInputs, ChunkScalars, check_one, chunk_end
    from gdrelu.engine.state import initial_state
    from gdrelu.outcome import Status

    params, data = _small_runs()
    v = np.array([[0.4, 0.1, 0.25, 0.25], [0.0, 0.5, 0.25, 0.25], [0.2, 0.2, 0.3, 0.3]])
    validation = data._replace(weights=v)
    step = np.full(3, 0.01)
    runs = initial_state(params, step)  # no L_lin: the checks do not read it
    nearest = np.min(np.abs(data.x), axis=1)  # 0.5, 0.5, 0.75
    kinks = np.array([nearest[0], np.nextafter(nearest[1], 0.0), 0.25])
    runs = runs._replace(
        state=runs.state._replace(step=jnp.full(3, 7, jnp.int32)),
        info=runs.info._replace(max_kink=jnp.asarray(kinks)),
    )
    roots = (jnp.zeros((3, 4, 4)),) * 2  # the certificate's alone (stubbed below)
    inputs = CheckInputs(data, step, validation, validation, roots)
    eigenvectors = []  # the certificate itself is theory's (tests/test_theory.py)
    monkeypatch.setattr(
        theory,
        "certificate",
        lambda *args, **kwargs: eigenvectors.append(kwargs["eigenvectors"]) or jnp.bool_(False),
    )

    def checked(rules, patience=10, lines=False, network=params):
        scalars = ChunkScalars(*map(jnp.asarray, (0.0, 1e-8, patience, 10)))
        check = functools.partial(check_one, rules=rules, lines=lines)
        start = runs._replace(state=runs.state._replace(params=network))
        end = jax.vmap(chunk_end)(network)
        checks = jax.jit(jax.vmap(check, in_axes=(0, 0, 0, None)))  # one program per call
        return jax.device_get(checks(start, inputs, end, scalars))

    code, loss, info = checked(("crossed",))
    assert code.tolist() == [Status.CROSSED, Status.RUNNING, Status.RUNNING]
    r = np.maximum(data.x[:, :, None] * params.a[:, None] + params.b[:, None], 0.0)
    r = np.einsum("jmn,jn->jm", r, params.w) + params.c[:, None] - data.y
    np.testing.assert_allclose(loss, 0.5 * np.sum(data.weights * r * r, 1), rtol=1e-13)
    np.testing.assert_allclose(info.best_val, 0.5 * np.sum(v * r * r, 1), rtol=1e-13)
    assert info.best_step.tolist() == [7] * 3 and info.stale_checks.tolist() == [0] * 3
    assert checked(("early_stopping",), 0)[0].tolist() == [Status.EARLY_STOPPED] * 3
    assert checked(("early_stopping",), 1)[0].tolist() == [Status.RUNNING] * 3
    one_signed = [Status.RUNNING, Status.A_DEGENERATE, Status.RUNNING]
    for lines in (False, True):
        assert checked(("degenerate",), lines=lines)[0].tolist() == one_signed
    huge = params._replace(a=1e200 * params.a, w=1e200 * params.w)  # finite, (1e200)² is not
    assert checked(("crossed",), network=huge)[0].tolist() == [Status.DIVERGED] * 3
    checked(("stuck",))
    checked(("stuck", "reference_rows"))
    assert eigenvectors == ["columns", "rows"]


def test_an_equal_validation_loss_is_no_improvement():
    """Without min_delta a check whose validation loss equals the best so far does not
    improve it: the check is stale and the best check stays where it was."""
    from gdrelu.engine.checks import _validated
    from gdrelu.engine.state import RunInfo

    info = RunInfo(*(jnp.zeros(()),) * 3, jnp.float64(0.5), jnp.int32(3), jnp.float64(1.0),
                   jnp.int32(20))  # fmt: skip
    kept = lambda i: (int(i.stale_checks), int(i.best_step), float(i.test_at_best))  # noqa: E731
    assert kept(_validated(info, 30, 0.5, 2.0, 0.0)) == (4, 20, 1.0)
    assert kept(_validated(info, 30, np.nextafter(0.5, 0.0), 2.0, 0.0)) == (0, 30, 2.0)


def _over_two_devices():
    """The runs axis split over the first two devices (the suite's two CPU devices)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from gdrelu.engine import placement

    mesh = Mesh(np.asarray(jax.devices()[:2]), (placement.RUNS_AXIS,))
    return NamedSharding(mesh, PartitionSpec(placement.RUNS_AXIS))


def test_finished_runs_are_copied_at_least_a_redo_at_a_time():
    """A redo of 41 lanes in blocks of 4 over two devices of 22 lanes takes 24 lanes on
    each (whole blocks), more than the batch holds: finished runs still cross to the host
    at least a redo's lanes at a time, never fewer."""
    from gdrelu.engine import placement

    sharding = _over_two_devices()
    blocking = placement.Blocking(block=4, redo=41, unroll=1, check=4)
    layout = placement.Layout(np.zeros(2 * 22, int), None, None, blocking, sharding)
    assert (layout.redo_lanes, layout.redo_block) == (48, 4)
    assert layout.finished_lanes == 48


def test_general_runs_go_after_the_others_from_a_new_block():
    """`arrange`: the runs spread evenly over two devices, on each the runs flagged general
    after the others from a new block of 4, the rest padding (slot -1) that copies an
    active run; num_blocks counts each device's blocks of the others, then of all its
    runs, a partial block of general runs included, then its runs of each kind (worked
    out by hand)."""
    from gdrelu.engine import placement

    sharding = _over_two_devices()
    blocking = placement.Blocking(block=4, redo=4, unroll=1, check=4)
    lanes, slots = np.arange(10), 100 + np.arange(10)
    general = np.isin(lanes, [1, 4, 7, 8, 9])
    positions, layout = placement.arrange(lanes, slots, 12, blocking, sharding, general)
    pad = [-1] * 5
    assert layout.slots.tolist() == [100, 102, 103, -1, 101, 104, 107, *pad,
                                     105, 106, -1, -1, 108, 109, *pad, -1]  # fmt: skip
    on, off = [True] * 3, [False] * 5
    assert layout.general.tolist() == [False] * 4 + on + off + [False] * 4 + on[:2] + off + [False]
    np.testing.assert_array_equal(np.asarray(layout.num_blocks), [[1, 2, 3, 3], [1, 2, 2, 2]])
    real = layout.slots >= 0
    np.testing.assert_array_equal(slots[positions[real]], layout.slots[real])
    assert np.isin(positions[~real], lanes).all() and positions.size == 24


def test_argument_checks_accept_the_documented_forms_and_name_the_rest():
    """`simulate`'s argument checks directly (nothing compiles): a step size is a
    scalar, one value or one per run, each positive; w needs one weight per neuron as b;
    a run needs two points; every input leads with the runs axis; a `classify_width` equal
    to the networks' width is theirs; every count may be 1 and patience 0; d-dim data take
    validation weights one per point; float64 networks are refused while jax_enable_x64 is
    off, float64 data beside float32 networks are not."""
    from gdrelu import Params, WeightedData
    from gdrelu.engine.arguments import (
        check_arrays,
        check_callers,
        check_precision,
        check_settings,
    )

    params = Params(*(np.full((2, 2), v) for v in (1.0, 0.0, 0.5)), np.zeros(2))
    x = np.array([[-1.0, 0.5, 2.0], [-2.0, -0.5, 1.0]])
    data = WeightedData(x, np.sin(x), np.full((2, 3), 1 / 3))
    for step in (0.01, np.array([0.01]), np.array([0.01, 0.02])):
        check_arrays(params, data, step, None, None, None)
    for step in (np.array([0.01, 0.0]), np.full(3, 0.01), np.full((2, 1), 0.01)):
        with pytest.raises(ValueError, match=r"^step_size: "):
            check_arrays(params, data, step, None, None, None)
    with pytest.raises(ValueError, match=r"^params: a of shape \(2, 2\), b of .* w of \(2, 3\)"):
        check_arrays(params._replace(w=np.ones((2, 3))), data, 0.01, None, None, None)
    one = WeightedData(*(v[:, :1] for v in data))
    with pytest.raises(ValueError, match=r"^data: 1 point per run; a run needs at least 2"):
        check_arrays(params, one, 0.01, None, None, None)
    scalar = WeightedData(1.0, 0.0, 1.0)  # no runs axis at all
    with pytest.raises(ValueError, match=r"^validation: shape \(\) does not lead with the 2 runs"):
        check_arrays(params, data, 0.01, None, scalar, None)
    check_callers(params, None, None, 2)
    check_callers(params, jax.devices()[:1], print, 5)
    check_settings(1, 1, 1, 1, 0, 0.0, 0.0)  # each count may be 1
    # d-dim points: validation weights are one per point, as the data's y and weights
    planar = Params(np.ones((2, 2, 2)), *params[1:])
    flat = WeightedData(np.ones((2, 3, 2)), data.y, data.weights)
    check_arrays(planar, flat, 0.01, data.weights, None, None)
    # float64 networks while jax_enable_x64 is off: JAX would train them float32; float64
    # data (numpy's default) beside float32 networks are cast, as simulate's docstring says
    as32 = lambda t: type(t)(*(np.asarray(f, np.float32) for f in t))  # noqa: E731
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match=r"^params: float64 but jax_enable_x64 is off"):
            check_precision(params, as32(data))
        check_precision(as32(params), data)
        check_precision(as32(params), as32(data))
    finally:
        jax.config.update("jax_enable_x64", True)
