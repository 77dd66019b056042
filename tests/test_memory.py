"""The memory budget: a width whose single run cannot fit is refused before anything runs,
and blocks shrink with the width so that the others fit."""

import dataclasses
import types
import warnings

import pytest

from gdrelu import ExperimentSpec, engine, memory
from gdrelu.cells import Cell
from gdrelu.memory import run_bytes
from gdrelu.runner import run_experiment

WIDE = ExperimentSpec(widths=(8, 4096), deltas=(0.0,), runs=2, check_every=10, max_checks=2)


def one_run_bytes(spec: ExperimentSpec, width: int) -> int:
    per_run, per_block_run = memory.run_bytes(spec, width, spec.cells()[0])
    devices = memory.jax.local_device_count()
    return memory.batch_bytes(per_run, per_block_run, 1, 1, devices, spec.mixed_layout)


def _block_of_one_bytes(per_run, per_block_run, devices, mixed):
    """A block of one run on each of `devices` devices (docs/design.md, "Memory and
    batches"): `COPIES` of its lane's state and inputs (two lanes on the mixed
    fixed-pattern path) and one block's temporaries, on every device."""
    return devices * (memory.COPIES * per_run * (1 + mixed) + per_block_run)


def _sgd_temporaries_over_gd(**sgd):
    """How many bytes more a run of a block holds in temporaries with SGD (`sgd`: its
    settings) than with GD: two runs of width 16 on the paper's six points."""
    specs = [ExperimentSpec(widths=(16,), deltas=(0.0,), runs=2, optimizer="sgd", **sgd),
             ExperimentSpec(widths=(16,), deltas=(0.0,), runs=2)]  # fmt: skip
    temporaries = [memory.run_bytes(s, 16, s.cells()[0])[1] for s in specs]
    return temporaries[0] - temporaries[1]


def test_a_width_whose_run_cannot_fit_is_refused_before_anything_compiles(monkeypatch):
    from gdrelu import runner

    one, kept = one_run_bytes(WIDE, 4096), memory.results_bytes(WIDE)
    assert one_run_bytes(WIDE, 8) < one // 100
    memory.check_fits(WIDE, one + kept)  # exactly enough
    # one run of width 4096 alone fits a budget of exactly its bytes: what is refused then
    # is the finished runs beside it
    with pytest.raises(memory.BudgetError, match=r"^runs: "):
        memory.check_fits(WIDE, one)
    monkeypatch.setattr(runner, "_train_batch", None)  # nothing may train
    for budget, names in ((one - 1, "width 4096"), (one + kept - 1, "runs: ")):
        with pytest.raises(memory.BudgetError) as refused:
            run_experiment(WIDE, memory_budget=budget)
        message = str(refused.value)
        assert names in message and "memory budget" in message
        assert f"{one / 1e9:.3g} GB" in message and f"{budget / 1e9:.3g} GB" in message
        assert isinstance(refused.value, ValueError)


@pytest.mark.slow  # trains a spec (11 s) to measure it; the refusal: the test below
def test_results_bytes_bounds_what_the_finished_runs_hold():
    """`results_bytes` bounds what a spec's finished runs hold (measured on a run)."""
    spec = ExperimentSpec(widths=(8, 16), deltas=(0.0, 0.1), runs=3, check_every=10, max_checks=2)
    held = sum(memory.tree_bytes((cr.step_size, cr.result)) for cr in run_experiment(spec))
    assert held <= memory.results_bytes(spec) <= 2 * held


def test_a_run_too_large_for_its_data_names_the_data_sizes():
    """RBF data in d = 10⁹: 256·d training points make one run need about 8·10¹² GB; the
    refusal names the flags that size the data too, and counts without an int64 overflow
    (numpy warned and counted wrong)."""
    spec = ExperimentSpec(data="rbf", dim=10**9, widths=(4,), runs=2, step_size=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(memory.BudgetError, match=r"--dim, --num-train or --num-heldout, or"):
            memory.check_fits(spec, 4 * 10**9, as_flags=True)
        with pytest.raises(memory.BudgetError, match=r"dim, num_train or num_heldout, or raise m"):
            memory.check_fits(spec, 4 * 10**9)  # from Python: the spec's fields


def test_the_finished_runs_count_against_the_budget():
    """A spec whose final networks alone exceed the budget is refused for its run count
    (--max-runs where it grows to it)."""
    huge = ExperimentSpec(widths=(8, 2**18), deltas=(0.0,), runs=1000)
    assert memory.results_bytes(huge) > 6e9  # 1000 final networks of 2¹⁸ neurons: 6.3 GB
    with pytest.raises(memory.BudgetError, match=r"^--runs: .* lower --runs or") as alone:
        memory.check_fits(huge, 4 * 10**9, as_flags=True)
    assert "specs before it" not in str(alone.value)  # there are none
    with pytest.raises(memory.BudgetError, match=r"widths up to 262144 \(and of the specs before"):
        memory.check_fits(huge, 7 * 10**9, held=10**9, as_flags=True)  # a compare's later spec
    said = r"^runs: .* lower runs or widths, or raise memory_budget$"  # run_experiment's
    with pytest.raises(memory.BudgetError, match=said):
        memory.check_fits(huge, 4 * 10**9)
    # every Δ's cell holds its runs: three Δs hold three times one Δ's final networks
    assert memory.results_bytes(dataclasses.replace(huge, deltas=(0.0, 0.1, 0.2))) == 3 * (
        memory.results_bytes(huge)
    )
    grown = dataclasses.replace(huge, runs=10, target_halfwidth=0.1, max_runs=1000)
    with pytest.raises(memory.BudgetError, match=r"^--max-runs: .* lower --max-runs or"):
        memory.check_fits(grown, 4 * 10**9, as_flags=True)


def test_blocks_shrink_to_fit_down_to_one_run():
    """One block per device fits at each size the budget allows; a batch is whole blocks
    on every device and fits too; the engine's blocks stay when they fit."""
    devices = memory.jax.local_devices()
    count = len(devices)
    per_run, per_block_run = 1_000, 10_000
    roomy = memory.batching(per_run, per_block_run, 1 << 40, 500, False, devices)
    assert roomy.block is None and roomy.redo is None and roomy.runs >= 500
    for mixed in (False, True):
        one_block = _block_of_one_bytes(per_run, per_block_run, count, mixed)
        for block in (1, 3, 17):
            got = memory.batching(per_run, per_block_run, block * one_block, 500, mixed, devices)
            assert got.block == block and got.redo <= count * block
            assert got.runs % (count * block) == 0
            need = memory.batch_bytes(
                per_run, per_block_run, got.runs, block, count, mixed, got.redo
            )
            assert need <= block * one_block
        tiny = memory.batching(per_run, per_block_run, 1, 500, mixed, devices)
        assert (tiny.runs, tiny.block) == (count, 1)  # nothing fits: one run per block
        # one run per device, room for two: a padding lane, not a block of one, whose
        # compiled step rounds otherwise (engine.MIN_BLOCK)
        few = memory.batching(per_run, per_block_run, 2 * one_block, count, mixed, devices)
        assert few.block == engine.MIN_BLOCK == 2


def test_few_runs_of_a_wide_network_train_in_blocks_of_their_share():
    """Two runs of width 65 536 trained in the default blocks of 64 lanes per device: 2.6
    GB and 11 s for what blocks of two do in 0.5 GB and 6 s (`gdrelu run --widths 65536
    --runs 2`, the same runs.csv). From `FEW_RUNS_WIDTH` neurons, fewer runs than a block
    per CPU device take their share rounded up to a power of two, at least two lanes; a
    narrower network, enough runs or an accelerator keeps the engine's blocks."""
    devices = memory.jax.local_devices()
    count, wide = len(devices), memory.FEW_RUNS_WIDTH
    budget = 1 << 40
    for runs, block in ((1, 2), (2, 2), (3 * count, 4), (5 * count, 8), (33 * count, 64)):
        got = memory.batching(1_000, 10_000, budget, runs, False, devices, width=wide)
        assert got.block == block and got.redo <= count * block, (runs, got)
        assert got.runs % (count * block) == 0 and got.runs >= runs
    for runs, width in ((2, wide // 2), (64 * count, wide), (2, None)):
        got = memory.batching(1_000, 10_000, budget, runs, False, devices, width=width)
        assert got.block is None and got.redo is None
    tight = _block_of_one_bytes(1_000, 10_000, count, False)  # the budget still rules
    got = memory.batching(1_000, 10_000, tight, 6 * count, False, devices, width=wide)
    assert got.block == 1
    # an accelerator's blocks are its share already (rounded up to 64: a power of two
    # made 300 runs' block 512)
    gpu = [types.SimpleNamespace(platform="gpu")]
    for runs in (2, 300):
        got = memory.batching(1_000, 10_000, budget, runs, False, gpu, width=wide)
        assert got.block is None and got.redo is None, runs
    # the mixed layout's blocks (`redone_blocking`'s) are REDO_BLOCK runs and its redos a
    # general block per device: fewer runs take their share there too (two momentum runs
    # of width 65 536 took 3.3 GB in them, 0.68 GB in blocks of two, the same runs.csv),
    # never in blocks larger than REDO_BLOCK
    for runs, block in ((2, 2), (3 * count, 4), (9 * count, 16)):
        got = memory.batching(1_000, 10_000, budget, runs, True, devices, width=wide)
        assert got.block == block and got.redo <= count * block, (runs, got)
    for runs, width in ((16 * count, wide), (2, wide // 2)):
        got = memory.batching(1_000, 10_000, budget, runs, True, devices, width=width)
        assert got.block is None and got.redo is None, (runs, width)


def test_narrow_networks_redo_more_runs_at_a_time():
    """A CPU redoes `REDO_BLOCK` runs at a time, up to four times as many while runs ×
    width stay within `REDO_NEURONS`. (The runs do not depend on it: the propagator case
    of test_results_do_not_depend_on_the_block_size redoes 40 runs at a time at width 8,
    the engine's default 64.)"""
    cpu = memory.jax.devices("cpu")
    redo = {w: engine.blocking_for(cpu, 100, width=w).redo for w in (1, 8, 16, 32, 64, 128, 2048)}
    assert redo[128] == redo[2048] == engine.blocking_for(cpu, 100).redo == engine.REDO_BLOCK
    assert redo[1] == redo[8] == 4 * engine.REDO_BLOCK > redo[32] > redo[64]
    assert all(r * w <= engine.REDO_NEURONS for w, r in redo.items() if r > engine.REDO_BLOCK)


def _blocks_seen(monkeypatch) -> list[tuple[int | None, int | None]]:
    from gdrelu import runner

    seen, simulate = [], runner.simulate

    def spy(*args, block=None, redo=None, **kwargs):
        seen.append((block, redo))
        return simulate(*args, block=block, redo=redo, **kwargs)

    monkeypatch.setattr(runner, "simulate", spy)
    return seen


@pytest.mark.parametrize(
    ("settings", "block"),
    [
        # the propagator, and its redos on the general path: blocks of 20 runs; 40 runs
        # checked every 200 steps, as tests/test_engine.py's (the same default programs)
        (dict(runs=20, deltas=(0.0, 0.3), check_every=200), 20),
        # the general path: blocks of 1 run (the propagator's redos cover general blocks
        # in the suite; this one runs with -m slow)
        pytest.param(
            dict(
                runs=2,
                deltas=(0.0,),
                optimizer="adam",
                step_size=0.01,
                bias_init="kink-unif",
                check_every=50,
            ),
            1,
            marks=pytest.mark.slow,
        ),
    ],
    ids=["propagator", "general"],
)
def test_results_do_not_depend_on_the_block_size(monkeypatch, settings, block):
    """A budget of blocks of 20 runs (propagator) or 1 run (general path) gives the runs
    of the engine's default blocks of 64: statuses and stop steps equal, values to
    rounding (docs/design.md, "Runs and keys"). The budget fits one block per device, so
    that the small blocks take the runs in one batch, as the default blocks do: only the
    programs that see the blocks compile again, not those of the batch's runs."""
    from test_buckets import assert_same_runs

    spec = ExperimentSpec(widths=(8,), max_checks=4, **settings)
    per_run, per_block_run = memory.run_bytes(spec, 8, spec.cells()[0])
    devices = memory.jax.local_device_count()
    mixed = spec.path == "fixed_pattern"
    one_block = _block_of_one_bytes(per_run, per_block_run, devices, mixed)
    seen = _blocks_seen(monkeypatch)
    default = run_experiment(spec, memory_budget=1 << 40)
    assert seen == [(None, None)]
    seen.clear()
    shrunk = run_experiment(spec, memory_budget=block * one_block + memory.results_bytes(spec))
    assert {b for b, _ in seen} == {block}
    assert_same_runs(shrunk, default)


def test_a_blocks_temporaries_count_the_minibatch_words_drawn_ahead():
    """The multinomial sampler's words for `NOISE_BLOCK` steps (`optim.scan_steps`) are
    in the temporaries of a run of a block: at least their array's bytes more than GD's."""
    import jax

    from gdrelu.optim import NOISE_BLOCK, multinomial_words

    words = jax.eval_shape(
        lambda key: multinomial_words(key, 16, 0, NOISE_BLOCK), jax.ShapeDtypeStruct((2,), "uint32")
    )
    assert _sgd_temporaries_over_gd() >= words.size * words.dtype.itemsize > 0


def test_the_results_of_every_compared_optimizer_count():
    """`gdrelu compare` holds every optimizer's finished runs until the end: four specs
    whose results fit one by one, but not together, are refused together."""
    from gdrelu.cli import options

    specs = [
        ExperimentSpec(widths=(8, 2**16), deltas=(0.0,), runs=1000, optimizer=optimizer)
        for optimizer in ("gd", "sgd", "momentum", "adam")
    ]
    budget = 2 * memory.results_bytes(specs[0])
    for spec in specs:
        memory.check_fits(spec, budget)
    with pytest.raises(memory.BudgetError, match="--runs"):
        options.check_fits(specs, budget)


def test_batch_bytes_pad_each_devices_share_to_whole_blocks():
    """docs/design.md ("Memory and batches"): `COPIES` of every lane's state and inputs,
    each device's share of the runs padded to whole blocks (one block more on the mixed
    fixed-pattern path), plus the temporaries of one block per device or of one redo, the
    larger. 5 runs on 2 devices in blocks of 4 take one block each (8 lanes); 9 runs two
    each (16 lanes)."""
    per_run, per_block_run, copies = 1_000, 10, memory.COPIES
    assert copies == 4  # start, new state, taken copy, host results: "times 4" in the docs
    assert memory.batch_bytes(per_run, per_block_run, 1, 1, 1, False) == copies * 1_000 + 10
    assert memory.batch_bytes(per_run, per_block_run, 5, 4, 2, False) == copies * 8_000 + 80
    assert memory.batch_bytes(per_run, per_block_run, 9, 4, 2, False) == copies * 16_000 + 80
    assert memory.batch_bytes(per_run, per_block_run, 5, 4, 2, True) == copies * 16_000 + 80
    assert memory.batch_bytes(per_run, per_block_run, 5, 4, 2, False, 20) == copies * 8_000 + 200
    assert memory.batch_bytes(per_run, per_block_run, 5, 4, 2, False, 3) == copies * 8_000 + 80


class _Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


def test_the_default_budget_is_a_share_of_the_free_memory(monkeypatch):
    """docs/design.md: 70% of the accelerators' free memory (their limits less what is in
    use, summed), or on a CPU (no memory stats) half the host's available memory; a given
    budget is taken as it is."""
    gpus = [_Device({"bytes_limit": 10e9, "bytes_in_use": 4e9}), _Device({"bytes_limit": 10e9})]
    monkeypatch.setattr(memory.jax, "local_devices", lambda: gpus)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 10e9)
    assert memory.memory_budget() == pytest.approx(0.7 * 16e9, rel=1e-9)
    assert memory.memory_budget(3e9) == 3e9
    monkeypatch.setattr(memory.jax, "local_devices", lambda: [_Device(None), _Device({})])
    assert memory.memory_budget() == pytest.approx(0.5 * 10e9, rel=1e-9)


def test_a_refusal_names_the_width_not_its_bucket():
    """The refusal names the width that cannot fit (docs/wide-networks.md), here 3000,
    whose run is padded to the bucket of 4096 neurons."""
    spec = dataclasses.replace(WIDE, widths=(8, 3000))
    assert [bucket for bucket, _ in memory.width_buckets(spec)] == [8, 4096]
    with pytest.raises(memory.BudgetError, match=r"^width 3000: "):
        memory.check_fits(spec, one_run_bytes(WIDE, 4096) - 1)


def test_a_refusal_by_the_padding_alone_names_buckets_none():
    """Width 1 048 577 is padded to 2²¹ neurons and was refused at --memory-budget 2,
    where --buckets none ran it in 1.1 GB. Here width 3000 (padded to 4096) at a budget
    its own width fits: the refusal says so and how much the unpadded run needs; where
    even that does not fit, or the command has its own sizes to lower (`lower`:
    reproduce, which has no --buckets), it does not. As CLI flags or as the field."""
    spec = dataclasses.replace(WIDE, widths=(3000,))
    own = dataclasses.replace(WIDE, widths=(3000,), buckets="none")
    padded, unpadded = one_run_bytes(spec, 4096), one_run_bytes(own, 3000)
    assert unpadded < padded
    hint = (r"\(it is padded to 4096 neurons: --buckets none trains it at its own width, "
            rf"in about {unpadded / 1e9:.3g} GB\)$")  # fmt: skip
    with pytest.raises(memory.BudgetError, match=r"^width 3000: .*" + hint):
        memory.check_fits(spec, padded - 1, as_flags=True)
    with pytest.raises(memory.BudgetError, match=r"buckets='none' trains it"):
        memory.check_fits(spec, padded - 1)
    with pytest.raises(memory.BudgetError) as refused:
        memory.check_fits(spec, unpadded - 1, as_flags=True)
    assert "buckets" not in str(refused.value)
    with pytest.raises(memory.BudgetError) as refused:
        memory.check_fits(spec, padded - 1, lower="--scale (or --only)", as_flags=True)
    assert "buckets" not in str(refused.value)
    memory.check_fits(own, unpadded + memory.results_bytes(own))


def test_the_temporaries_cover_the_larger_of_the_training_and_held_out_points():
    """A block's `TEMPORARIES` (m, n) arrays per run: the checks evaluate the held-out
    points as the steps do the training points, so m is the larger of the two counts."""
    for train, heldout in ((8, 64), (64, 8)):
        spec = ExperimentSpec(data="rbf", dim=2, num_train=train, num_heldout=heldout,
                              widths=(16,), deltas=(0.0,), runs=2, step_size=0.1)  # fmt: skip
        itemsize = memory.jnp.dtype(spec.dtype).itemsize
        _, temporaries = memory.run_bytes(spec, 16, spec.cells()[0])
        assert temporaries == memory.TEMPORARIES * 64 * 16 * itemsize


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf")])
def test_a_budget_that_is_no_positive_number_of_bytes_is_refused(budget):
    """A given budget must be a positive, finite number of bytes: 0 (or below, or NaN)
    would refuse every width with a misleading message, and infinity was an
    OverflowError; each is refused as what it is (ValueError)."""
    with pytest.raises(ValueError, match="is not a positive number of bytes"):
        memory.memory_budget(budget)


def test_an_odd_minibatch_draws_its_words_in_pairs():
    """threefry2x32 draws the multinomial words in pairs (`optim.multinomial_words`): a
    minibatch of 15 draws as many words ahead as one of 16, and its temporaries count them
    all, not 15 a step."""
    extra = {size: _sgd_temporaries_over_gd(batch_size=size) for size in (14, 15, 16)}
    assert extra[15] == extra[16] > extra[14] > 0


def test_a_shrunk_block_holds_at_most_a_devices_share_of_the_runs():
    """`memory.batching`: blocks shrink to the largest of which one per device fits, but
    at most a device's share of the runs: 3 runs on each device with room for 10 runs a block take
    blocks of 3, not 10 (padding lanes would cost memory and time for nothing)."""
    devices = memory.jax.local_devices()
    count = len(devices)
    per_run, per_block_run = 1_000, 10_000
    for mixed in (False, True):
        one_block = _block_of_one_bytes(per_run, per_block_run, count, mixed)
        got = memory.batching(per_run, per_block_run, 10 * one_block, 3 * count, mixed, devices)
        assert got.block == 3 and got.runs % (count * 3) == 0


@pytest.mark.parametrize(
    ("optimizer", "dtype", "per_neuron"),
    [
        ("gd", "float64", 3 * 8 + 8 + 1),  # a, b, w; slope0 = w/a; the `regular` flag (bool)
        ("gd", "float32", 3 * 4 + 4 + 1),
        ("momentum", "float64", 3 * 8 + 8 + 1 + 3 * 8),  # and the velocity of a, b, w
        ("adam", "float64", 3 * 8 + 8 + 1 + 6 * 8),  # and the two moments of a, b, w
        ("adam", "float32", 3 * 4 + 4 + 1 + 6 * 4),
    ],
)
def test_a_runs_bytes_grow_by_its_per_neuron_fields_counted_by_hand(optimizer, dtype, per_neuron):
    """`run_bytes` against the run state's fields (`engine.RunState`) counted by hand: one
    run padded to 128 neurons instead of 64 holds 64 × the bytes of one neuron's fields
    more, and its temporaries double (they are per bucket neuron). SGD's temporaries hold
    the words of 64 steps drawn ahead, 16 words of 4 bytes each, more than GD's."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=2, optimizer=optimizer, dtype=dtype)
    cell = Cell(8, 0.0, spec)
    (small, small_temporaries), (large, large_temporaries) = (
        run_bytes(spec, size, cell) for size in (64, 128)
    )
    assert large - small == 64 * per_neuron
    assert large_temporaries == 2 * small_temporaries
    if (optimizer, dtype) == ("gd", "float64"):
        sgd = dataclasses.replace(spec, optimizer="sgd")
        words = run_bytes(sgd, 64, Cell(8, 0.0, sgd))[1] - small_temporaries
        assert words == 64 * 16 * 4


def test_the_buckets_none_hint_counts_the_finished_runs():
    """Width 1 048 577 at --memory-budget 1.1 was told that --buckets none trains it in
    1.08 GB, and --buckets none was then refused for its finished runs beside it: the hint
    is given only where the unpadded run, the finished runs and `held` fit together."""
    spec = dataclasses.replace(WIDE, widths=(3000,))
    own = dataclasses.replace(spec, buckets="none")
    padded, unpadded = one_run_bytes(spec, 4096), one_run_bytes(own, 3000)
    kept, held = memory.results_bytes(spec), 10**5
    assert unpadded + kept + held < padded  # the padding alone breaks these budgets
    for budget, others, hinted in ((unpadded + kept - 1, 0, False), (unpadded + kept, 0, True),
                                   (unpadded + kept, held, False),
                                   (unpadded + kept + held, held, True)):  # fmt: skip
        with pytest.raises(memory.BudgetError, match=r"^width 3000: ") as refused:
            memory.check_fits(spec, budget, held=others, as_flags=True)
        assert ("--buckets none" in str(refused.value)) is hinted, (budget, others)
        if hinted:  # taking the advice passes
            memory.check_fits(own, budget, held=others, as_flags=True)


def test_a_resumed_runs_refusal_says_only_to_raise_the_budget():
    """`lower=""` (a resumed run, a preset's smallest scale): neither refusal names a size
    to lower, the finished runs' one said "lower --runs or --widths" even so, and it is
    headed by the budget, the one setting that can change."""
    one, kept = one_run_bytes(WIDE, 4096), memory.results_bytes(WIDE)
    for budget, start in ((one - 1, "width 4096: "), (one + kept - 1, "--memory-budget: ")):
        with pytest.raises(memory.BudgetError, match="^" + start) as refused:
            memory.check_fits(WIDE, budget, lower="", as_flags=True)
        assert str(refused.value).endswith("; raise --memory-budget"), str(refused.value)


def test_a_single_run_is_not_told_to_lower_its_runs():
    """--runs 1 (width 1 048 576 at --memory-budget 1.1) was told "lower --runs or
    --widths": one run's final network beside it in training names the widths alone."""
    spec = dataclasses.replace(WIDE, runs=1)
    one, kept = one_run_bytes(spec, 4096), memory.results_bytes(spec)
    for as_flags, said, budget in ((True, "--widths", "--memory-budget"),
                                   (False, "widths", "memory_budget")):  # fmt: skip
        with pytest.raises(memory.BudgetError) as refused:
            memory.check_fits(spec, one + kept - 1, as_flags=as_flags)
        message = str(refused.value)
        assert message.startswith(f"{said}: the final networks of 1 run per cell"), message
        assert message.endswith(f"; lower {said}, or raise {budget}"), message


def test_a_run_sized_by_its_minibatch_words_names_the_batch_size():
    """SGD with B = 2²⁴ draws 64 steps of words ahead, 8.6 GB of a run of width 16: the
    refusal said "lower --widths". It names --batch-size where those words are most of
    the bytes (`drawn_words_bytes`, as `run_bytes` counts them), and only there."""
    sgd = dataclasses.replace(WIDE, widths=(16,), optimizer="sgd", batch_size=1 << 24)
    devices = memory.jax.local_device_count()
    words = memory.drawn_words_bytes(sgd)
    assert words == 64 * (1 << 24) * 4 and memory.drawn_words_bytes(WIDE) == 0
    for size in (15, 16):  # as `run_bytes` counts them, in pairs
        words_of = memory.drawn_words_bytes(dataclasses.replace(sgd, batch_size=size))
        assert words_of == _sgd_temporaries_over_gd(batch_size=size)
    one = one_run_bytes(sgd, 16)
    assert 2 * devices * words > one
    with pytest.raises(
        memory.BudgetError, match=r"^width 16: .*; lower --batch-size or --widths, or"
    ):
        memory.check_fits(sgd, one - 1, as_flags=True)
    said = r"^runs: .*; lower batch_size, runs or widths, or raise memory_budget$"
    with pytest.raises(memory.BudgetError, match=said):
        memory.check_fits(sgd, one + memory.results_bytes(sgd) - 1)
    small = dataclasses.replace(sgd, batch_size=16)  # its words are no part to speak of
    with pytest.raises(memory.BudgetError) as refused:
        memory.check_fits(small, one_run_bytes(small, 16) - 1, as_flags=True)
    assert "batch" not in str(refused.value)
