"""How many runs fit in memory at once: a per-run byte estimate against a budget.

A batch of runs holds, per run, its training state (`engine.state.RunState`) and its check
inputs (data, validation and test points); while a chunk runs, the chunk's start state is
kept for redos, a new state is built, and finished runs are copied to the host, so a
batch needs about `COPIES` times that, for every lane: each device's share is padded to
whole blocks. A block of runs in flight adds its temporaries, (m, n) arrays per run of the
block on the general path, and the minibatch words drawn ahead (`optim.scan_steps`). The
budget is the devices' free memory (`free_device_bytes`) or, on a CPU, a share of the
host's available memory; the `--memory-budget` flag sets it. A width whose single run
cannot fit is refused before anything runs (`check_fits`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import engine
from gdrelu.buckets import width_buckets
from gdrelu.cells import Cell, initial_runs, noise_keys
from gdrelu.data import CONTINUOUS
from gdrelu.numbers import is_real
from gdrelu.optim import NOISE_BLOCK
from gdrelu.spec import ExperimentSpec, SpecError

COPIES = 4  # state and inputs alive at once: start, new state, taken copy, host results
TEMPORARIES = 8  # (m, n) arrays per run of a block on the general path
HOST_SHARE = 0.5  # of the available host memory, when the devices are CPUs
DEVICE_SHARE = 0.7  # of each accelerator's free memory


class BudgetError(ValueError):
    """One run of some width needs more memory than the budget."""


def tree_bytes(tree) -> int:
    """Bytes of a pytree of arrays or shape-dtype structs."""
    leaves = jax.tree.leaves(tree)
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves)


def available_host_bytes() -> int | None:
    """The host's available memory (MemAvailable on Linux, free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_device_bytes() -> int | None:
    """Free memory summed over the local devices where JAX reports it (accelerators);
    None on CPUs."""
    total = 0
    for device in jax.local_devices():
        stats = device.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        total += stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return total


def memory_budget(budget: int | None = None) -> int:
    """Bytes a batch of runs may use: `budget` if given, else a share of the devices'
    free memory, else a share of the host's available memory (CPU)."""
    if budget is not None:
        if not is_real(budget) or not 0 < budget < math.inf:  # NaN and inf too
            raise ValueError(f"memory_budget: {budget!r} is not a positive number of bytes")
        return int(budget)
    free = free_device_bytes()
    if free is not None:
        return int(DEVICE_SHARE * free)
    host = available_host_bytes()
    return int(HOST_SHARE * host) if host else 8 << 30


@functools.lru_cache(maxsize=256)
def run_bytes(spec: ExperimentSpec, bucket: int, cell: Cell) -> tuple[int, int]:
    """(bytes of one run's state and check inputs, bytes of its temporaries while its
    block trains), its network padded to `bucket` neurons: shapes only, nothing is
    computed (traced once per argument: the budget check and the runner ask alike)."""
    optimizer = spec.trained_by

    def one(indices):
        params, data, valid = initial_runs(cell, indices, bucket)
        step = jnp.zeros((1,), params.c.dtype)
        state = engine.initial_state(params, step, noise_keys(cell, indices), optimizer=optimizer)
        if isinstance(valid, tuple):
            validation, test = valid
        else:  # no validation weights: simulate validates on the training weights
            validation = test = data if valid is None else data._replace(weights=valid)
        return state, engine.check_inputs(data, step, validation, test)

    shapes = jax.eval_shape(one, jax.ShapeDtypeStruct((1,), jnp.uint32))
    points = max(leaf.shape[1] for leaf in (shapes[1].data.y, shapes[1].validation.y))
    itemsize = jnp.dtype(spec.dtype).itemsize
    temporaries = TEMPORARIES * points * bucket * itemsize
    temporaries += drawn_words_bytes(spec)  # the words of `NOISE_BLOCK` steps drawn ahead
    return tree_bytes(shapes), temporaries


def batch_bytes(
    per_run: int,
    per_block_run: int,
    runs: int,
    block: int,
    devices: int,
    mixed: bool,
    redo: int = 0,
) -> int:
    """Bytes of a batch of `runs` runs trained in blocks of `block` on `devices` devices:
    `COPIES` of every lane's state and inputs (each device's share padded to whole blocks,
    one block more when `mixed`, the fixed-pattern path's general blocks) and the
    temporaries of one block per device or of one redo of `redo` runs, the larger."""
    lanes = devices * (-(-runs // (devices * block)) + int(mixed)) * block
    return COPIES * per_run * lanes + max(devices * block, redo) * per_block_run


class Batching(NamedTuple):
    """Runs per batch, and the engine's block and redo sizes (None: its defaults)."""

    runs: int
    block: int | None
    redo: int | None


FEW_RUNS_WIDTH = 1 << 14  # from here a block's padding lanes cost more than a compile


def batching(
    per_run: int,
    per_block_run: int,
    budget: int,
    runs: int,
    mixed: bool,
    devices=None,
    width: int | None = None,
) -> Batching:
    """How `runs` runs go through `devices` (default: the local ones) within `budget`
    bytes (`batch_bytes`): in the engine's blocks and redos (`engine.blocking_for`, for
    networks of `width` neurons) if one block of them per device fits, else in the
    largest blocks of which one per device fits (at most a device's share, but at least
    `engine.MIN_BLOCK` runs, padding included, where those fit, else one) and redos of at
    most a block per device. A batch holds as many whole blocks per device as fit, at
    least one. On a CPU, networks of `FEW_RUNS_WIDTH` neurons or more whose runs are
    fewer than a block per device take blocks of their share, rounded up to a power of two
    (at least `engine.MIN_BLOCK`): the padding lanes would do most of the work. On the
    mixed layout, whose blocks `engine.redone_blocking` makes `engine.REDO_BLOCK` runs and
    whose redos a general block per device, the same holds below `REDO_BLOCK` runs per
    device (two momentum runs of width 65 536: 3.3 GB in the engine's blocks)."""
    devices = jax.local_devices() if devices is None else list(devices)
    count = len(devices)
    default = engine.blocking_for(devices, runs, width=width)
    block, redo = default.block, default.redo
    share = -(-runs // count)
    cpu = devices[0].platform == "cpu"  # an accelerator's blocks are its share already
    most = engine.REDO_BLOCK if mixed else block  # the mixed layout's, `redone_blocking`'s
    few = cpu and width is not None and width >= FEW_RUNS_WIDTH and share < most
    if few:
        block = min(most, max(engine.MIN_BLOCK, 1 << (share - 1).bit_length()))
        redo = min(redo, count * block)
    shrunk = batch_bytes(per_run, per_block_run, 1, block, count, mixed, redo) > budget
    if shrunk:
        one_block = count * (COPIES * per_run * (1 + int(mixed)) + per_block_run)
        fit = budget // one_block
        block = max(1, min(fit, block, -(-runs // count)))
        if block < engine.MIN_BLOCK <= fit:  # a block of one rounds otherwise
            block = engine.MIN_BLOCK
        redo = min(redo, count * block)
    room = budget - max(count * block, redo) * per_block_run
    blocks = max(1, room // (COPIES * per_run * count * block) - int(mixed))
    chosen = shrunk or few
    return Batching(blocks * count * block, block if chosen else None, redo if chosen else None)


RESULT_SCALARS = 16  # a finished run's reported numbers besides its parameters, at most


def results_bytes(spec: ExperimentSpec) -> int:
    """Bytes of every finished run of `spec` held on the host until the end: its final
    parameters (a: d·n numbers, b and w: n each, c) and its reported numbers."""
    runs = (spec.max_runs or spec.runs) * len(spec.deltas)
    numbers = sum((spec.input_dim + 2) * w + 1 + RESULT_SCALARS for w in spec.widths)
    return runs * numbers * jnp.dtype(spec.dtype).itemsize


def check_fits(
    spec: ExperimentSpec,
    budget: int,
    devices: int | None = None,
    held: int = 0,
    lower: str | None = None,
    as_flags: bool = False,
    cells: int = 1,
) -> None:
    """Raise `BudgetError` naming the width if one run of some bucket of `spec`, alone in
    blocks of one on each of `devices` devices (default: the local ones), needs more than
    `budget` bytes, or naming --runs (--max-runs if set) if the largest such run and the
    finished runs (`results_bytes`, plus `held` bytes of other specs' results) together
    do; shapes only, nothing is compiled. `lower`: the flags the message says to lower
    (default: those that set the spec's sizes; "": none, a preset's smallest scale or a
    resumed run); it names the spec's fields, or with `as_flags` the CLI's flags. The
    advice names only what can help: --batch-size where the minibatch words drawn ahead
    are most of the bytes, not a count of runs already 1, and --buckets none only where
    the spec would then pass this check. `cells`: how many cells of `spec`'s shape keep
    their results together (a Section 10 group's configurations; `spec` holds one)."""
    named = _flag if as_flags else str
    devices = jax.local_device_count() if devices is None else devices
    _check_gram_fits(spec, budget - held, named, lower)
    drawn = devices * drawn_words_bytes(spec)  # a block of one per device draws them
    largest = 0
    for bucket, widths in width_buckets(spec):
        need = _alone(spec, bucket, max(widths), devices)
        if need > budget:
            lowered = _sizes(spec, named, 2 * drawn > need) if lower is None else lower
            unpadded = ""
            if lower is None:  # the spec's own sizes: its padded bucket may be why
                unpadded = _unpadded(spec, max(widths), bucket, budget, named, devices, held)
            raise BudgetError(
                f"width {max(widths)}: one run needs about {_gigabytes(need)} (state, inputs "
                f"and a block's temporaries), more than the memory budget of "
                f"{_gigabytes(budget)}; {_advice(lowered, named)}{unpadded}"
            )
        largest = max(largest, need)
    kept = results_bytes(spec) * cells + held
    if largest + kept > budget:
        count = spec.max_runs or spec.runs
        counted = named("max_runs" if spec.max_runs else "runs")
        fields = ["batch_size"] if 2 * drawn > largest + kept else []
        names = [*map(named, fields), *([counted] if count > 1 else []), named("widths")]
        others = " (and of the specs before it)" if held else ""
        others += f" in each of {cells} cells kept together" if cells > 1 else ""
        head = counted if count > 1 else named("widths")
        raise BudgetError(
            f"{head if lower is None else named('memory_budget')}: the final networks of {count} "
            f"run{'s' if count > 1 else ''} per cell, widths up to {max(spec.widths)}{others}, "
            f"need about {_gigabytes(kept)}, and one run in training {_gigabytes(largest)}: "
            f"more than the memory budget of {_gigabytes(budget)}; "
            f"{_advice(_either(names) if lower is None else lower, named)}"
        )


GRAM_COPIES = 6  # (m, m) arrays alive in `theory.ntk_step_size`: products, Gram, eigvalsh's


def gram_bytes(spec: ExperimentSpec) -> int:
    """Bytes of one run's neural-tangent step size (`step_size` "ntk"): its (m, m) Gram on
    the m training points, a few times over; 0 for the other rules."""
    if spec.step_size != "ntk":
        return 0
    return GRAM_COPIES * spec.training_points**2 * jnp.dtype(spec.dtype).itemsize


def _check_gram_fits(spec: ExperimentSpec, budget: int, named, lower: str | None) -> None:
    """`BudgetError` naming the step size if one run's Gram (`gram_bytes`) passes `budget`
    (what other specs' held results leave); `lower` as in `check_fits`."""
    need = gram_bytes(spec)
    if need <= budget:
        return
    points, step_size = spec.training_points, named("step_size")
    if lower is not None:
        advice = _advice(lower, named)
    else:
        fewer = f"lower {named('num_train')}, " if spec.data in CONTINUOUS else ""
        advice = f"{fewer}set another {step_size}, or raise {named('memory_budget')}"
    raise BudgetError(
        f"{step_size} ntk: one run's {points}×{points} neural-tangent Gram on its training "
        f"points needs about {_gigabytes(need)}, more than the memory budget of "
        f"{_gigabytes(budget)}; {advice}"
    )


def drawn_words_bytes(spec: ExperimentSpec) -> int:
    """Bytes of the multinomial minibatch words one run of a block draws ahead, the part
    of `run_bytes`'s temporaries that `batch_size` sizes (0 for other samplers)."""
    optimizer = spec.trained_by
    if optimizer.sampler != "multinomial":
        return 0
    return NOISE_BLOCK * (optimizer.batch_size + optimizer.batch_size % 2) * 4


def _advice(lowered: str, named) -> str:
    """What a refusal says to do: lower `lowered` (if any), or raise the budget."""
    budget = named("memory_budget")
    return f"lower {lowered}, or raise {budget}" if lowered else f"raise {budget}"


def _alone(spec: ExperimentSpec, size: int, width: int, devices: int) -> int:
    """Bytes of one run of `width` neurons padded to `size`, alone in blocks of one on
    each of `devices` devices."""
    per_run, per_block_run = run_bytes(spec, size, Cell(width, spec.deltas[0], spec))
    return batch_bytes(per_run, per_block_run, 1, 1, devices, spec.mixed_layout)


def _unpadded(
    spec: ExperimentSpec, width: int, bucket: int, budget: int, named, devices, held: int
) -> str:
    """The refusal's last words where the bucket's padding alone breaks the budget: that
    `buckets` "none" trains the run at its own width, and in how much memory; said only
    where the spec with it passes `check_fits` (every width unpadded, with the finished
    runs and the `held` bytes), so that taking the advice is not refused in turn."""
    if bucket == width:
        return ""
    try:
        check_fits(dataclasses.replace(spec, buckets="none"), budget, devices, held)
    except (BudgetError, SpecError):
        return ""
    setting = "--buckets none" if named is _flag else "buckets='none'"
    return (
        f" (it is padded to {bucket} neurons: {setting} trains it at its own width, "
        f"in about {_gigabytes(_alone(spec, width, width, devices))})"
    )


def _flag(field: str) -> str:
    """The CLI flag of a spec field (or of `run_experiment`'s memory_budget)."""
    return "--" + field.replace("_", "-")


def _sizes(spec: ExperimentSpec, named, drawn: bool = False) -> str:
    """The fields or flags (`named`) that size one run: the batch size where its words
    drawn ahead are most of it (`drawn`), the width, and the points of sampled data."""
    fields = ["batch_size"] if drawn else []
    fields.append("widths")
    if spec.data in CONTINUOUS:
        fields += ["dim", "num_train", "num_heldout"]
    return _either([named(field) for field in fields])


def _either(names: list[str]) -> str:
    """The names in words: a; a or b; a, b or c."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


def _gigabytes(count: int) -> str:
    return f"{count / 1e9:.3g} GB"
