"""The star experiment at the paper's scale fits one 80 GB accelerator (docs/star-at-scale.md).

The spec is `gdrelu reproduce --scale paper --only star`'s. Its memory is read from the
shapes alone (`memory.run_bytes`, nothing is compiled) and set against the sizes the
paper gives (../shared/PAPER.md): widths 128-8192, 1000 runs each (width 8192 as 2 × 500),
33 points (11 rays × 3), float32, up to 10⁶ epochs. The expected figures below are derived
from those sizes and the byte model of docs/wide-networks.md, not read back from memory.py.
"""

import itertools
from types import SimpleNamespace

import pytest

from gdrelu import memory
from gdrelu.buckets import width_buckets
from gdrelu.cells import Cell
from gdrelu.reproduce import experiment_specs

GB80 = 80e9
WIDTHS = (128, 256, 512, 1024, 2048, 4096, 8192)
RUNS = 1000
POINTS, DIM, ITEMSIZE = 11 * 3, 2, 4  # star data, float32
TEMPORARY_ARRAYS = 8  # (m, n) arrays per run of a block on the general path
COPIES = 4  # of each lane's state and inputs while a chunk runs
ONE_GPU = [SimpleNamespace(platform="gpu")]  # blocking_for reads only the platform


@pytest.fixture(scope="module")
def spec():
    (star,) = experiment_specs("star", "paper")
    return star


@pytest.fixture(scope="module")
def sizes(spec):
    """{width: (bytes of one run's state and inputs, of its temporaries in a block)}."""
    return {w: memory.run_bytes(spec, w, Cell(w, 0.0, spec)) for w in spec.widths}


def test_the_paper_scale_star_spec(spec):
    assert spec.data == "star" and spec.num_points == POINTS and spec.input_dim == DIM
    assert spec.widths == WIDTHS and spec.deltas == (0.0,) and spec.runs == RUNS
    assert (spec.step_size, spec.step_factor, spec.dtype) == ("param-norm", 2.0, "float32")
    assert spec.check_every * spec.max_checks == 10**6 and spec.stop_on == ()
    assert spec.path == "general"
    assert [bucket for bucket, _ in width_buckets(spec)] == list(WIDTHS)  # no padding


def test_per_run_bytes_follow_the_shapes(sizes):
    """Temporaries: 8 float32 (m, n) arrays. State and inputs: the parameters a (2, n),
    b, w (n,) at least, and at most 32 bytes per neuron besides a few kB of data."""
    for width, (per_run, temporaries) in sizes.items():
        assert temporaries == TEMPORARY_ARRAYS * POINTS * width * ITEMSIZE
        assert (DIM + 2) * width * ITEMSIZE < per_run < 32 * width + 16_384
    for width, wider in itertools.pairwise(WIDTHS):  # doubling the width
        per_neuron = (sizes[wider][0] - sizes[width][0]) / (wider - width)
        assert (DIM + 2) * ITEMSIZE <= per_neuron <= 32


def test_every_width_fits_one_80_gb_gpu_in_one_batch(spec, sizes):
    """On one GPU the engine takes its whole share of the 1000 runs as one block, rounded
    up to 64 runs (1024 lanes); a batch of all 1000 runs then needs 4 copies of 1024 lanes'
    state plus one block's temporaries: under 10 GB even at width 8192."""
    budget = memory.memory_budget(budget=GB80)
    assert budget == 80_000_000_000
    memory.check_fits(spec, budget, devices=1)
    lanes = 64 * -(-RUNS // 64)
    for width, (per_run, temporaries) in sizes.items():
        plan = memory.batching(per_run, temporaries, budget, RUNS, False, ONE_GPU)
        assert plan.block is None and plan.redo is None  # the engine's own blocks fit
        assert plan.runs >= RUNS  # the width's 1000 runs in one batch
        need = COPIES * per_run * lanes + lanes * temporaries
        assert need <= budget
        upper = lanes * (
            COPIES * (32 * width + 16_384) + TEMPORARY_ARRAYS * POINTS * width * ITEMSIZE
        )
        assert need <= upper and (width < 8192 or upper < 10e9)


def test_a_budget_too_small_is_refused_naming_the_width(spec):
    """8 MB on one device: one run of width 8192 has 8.65 MB of temporaries alone
    (8 × 33 × 8192 × 4 bytes), one of width 4096 at most 4.33 MB + 4 × 147 kB; so width
    8192, and only it, is refused, with the budget in the message. On two devices one run
    occupies a lane on each, and width 4096 (over 8.65 MB then) is refused first."""
    assert TEMPORARY_ARRAYS * POINTS * 8192 * ITEMSIZE > 8e6
    assert TEMPORARY_ARRAYS * POINTS * 4096 * ITEMSIZE + COPIES * (32 * 4096 + 16_384) < 8e6
    assert 2 * TEMPORARY_ARRAYS * POINTS * 4096 * ITEMSIZE > 8e6
    assert 2 * (TEMPORARY_ARRAYS * POINTS * 2048 * ITEMSIZE + COPIES * (32 * 2048 + 16_384)) < 8e6
    with pytest.raises(memory.BudgetError) as refused:
        memory.check_fits(spec, memory.memory_budget(budget=8e6), devices=1)
    message = str(refused.value)
    assert message.startswith("width 8192:") and "memory budget of 0.008 GB" in message
    assert isinstance(refused.value, ValueError)
    with pytest.raises(memory.BudgetError, match=r"^width 4096:"):
        memory.check_fits(spec, 8e6, devices=2)
    with pytest.raises(ValueError, match="positive"):
        memory.memory_budget(budget=0)
