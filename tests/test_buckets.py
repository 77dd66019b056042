"""Widths in one program: networks padded to a bucket width with inert neurons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu import engine, theory
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
    (`RTOL` for the ill-conditioned ones)."""
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
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-300)


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
def test_a_padded_run_equals_the_unpadded_run(settings):
    base = dict(widths=(5, 9), deltas=(0.0,), runs=3, check_every=40, max_checks=3)
    spec = {**base, **settings}
    assert_same_runs(
        run_experiment(ExperimentSpec(**spec, buckets="one")),
        run_experiment(ExperimentSpec(**spec, buckets="none")),
    )


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
