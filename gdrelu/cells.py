"""A spec's cells and the keys that make every run reproducible (docs/design.md, "Runner").

A spec expands into cells (one per width × Δ); a run is (seed, cell, index in cell) and
its key is fold_in(fold_in(key(seed), cell_hash), index), where cell_hash is a stable
hash of the settings that define the cell's data and initialization. A run's result
thus depends neither on batching nor on which other cells run, and two optimizers given
the same seed see the same data and initial networks.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import theory
from gdrelu.batched import in_draw_batches
from gdrelu.buckets import shared_width
from gdrelu.compiled import jit
from gdrelu.data import CONTINUOUS, WeightedData, draw_continuous, draw_finite, draw_split
from gdrelu.engine import SimulationResult
from gdrelu.init import draw_biases, draw_padded_params, draw_params, points_per_neuron
from gdrelu.model import Params, padded
from gdrelu.spec import ExperimentSpec

NOISE_STREAM = 0x5EED  # fold_in(run key, NOISE_STREAM): the run's minibatch noise
BIAS_STREAM = 0xB1A5  # fold_in(parameter key, BIAS_STREAM): the run's layer-1 biases


class Cell(NamedTuple):
    """One (width, Δ) cell of a spec."""

    width: int
    delta: float
    spec: ExperimentSpec

    @property
    def num_samples(self) -> int:
        """N for a finite support, the number of training points for continuous data."""
        if self.spec.data in CONTINUOUS:
            return self.spec.num_points
        return self.spec.num_samples or self.width**2

    def settings(self) -> dict[str, Any]:
        """What defines the cell's data and initialization (not the optimizer or dtype)."""
        spec = self.spec
        return {
            "width": int(self.width),
            "delta": float(self.delta) + 0.0,  # -0.0 is 0.0: the same data, the same runs
            "init": spec.init,
            "num_samples": int(self.num_samples),
            # only when set, so that the paper's cells keep their hash and their runs
            **({"bias_init": spec.bias_init} if spec.bias_init != "zero" else {}),
            **({"data": spec.data} if spec.data != "six-points" else {}),
            **({"data_sha256": spec.data_sha256} if spec.data_file else {}),
            **({"split": list(spec.split)} if spec.split else {}),
            **({"dim": spec.input_dim} if spec.input_dim != 1 else {}),
        }

    @property
    def cell_hash(self) -> int:
        """A stable 31-bit hash of `settings()`."""
        text = json.dumps(self.settings(), sort_keys=True)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1

    @property
    def cell_id(self) -> str:
        return f"{self.cell_hash:08x}"


class CellResult(NamedTuple):
    """A cell's runs: step sizes (runs,) and what `simulate` returned for them."""

    cell: Cell
    step_size: np.ndarray
    result: SimulationResult

    def __repr__(self) -> str:
        """The cell by its id, width, Δ and optimizer, and its result's counts (not the
        whole spec and every run's arrays)."""
        c = self.cell
        return (
            f"CellResult({c.cell_id}: width={c.width}, delta={c.delta:g}, "
            f"optimizer={c.spec.optimizer!r}, {self.result!r})"
        )


def joined_cell(first: CellResult, second: CellResult) -> CellResult:
    """One cell's results of two batches of consecutive run indices, in index order."""
    return joined_cells([first, second])


def joined_cells(batches: list[CellResult]) -> CellResult:
    """One cell's results of `batches` (the first's cell) of consecutive run indices, in
    index order: the step sizes and every array of the results concatenated once along
    the runs axis (joined pair by pair, the runs were copied again for each batch, and
    the last join held them twice). One batch is returned as it is. `batches` is emptied:
    each array of the batches is freed once joined where nothing else holds it, so the
    join holds the results once and one field of them again, not twice over."""
    if len(batches) == 1:
        return batches.pop()
    cell, structure = batches[0].cell, jax.tree.structure(batches[0].result)
    for other in batches:
        if (differs := jax.tree.structure(other.result)) != structure:
            raise ValueError(f"batches of one cell differ: {structure} and {differs}")
    columns = [list(c) for c in zip(*(_arrays(b) for b in batches), strict=True)]
    batches.clear()
    joined = []
    for i, column in enumerate(columns):
        columns[i] = None  # the batches' arrays of this field: freed once joined
        joined.append(np.concatenate(column))
        column.clear()
        if joined[-1].nbytes >= TRIMMED_BYTES:  # a trim walks the heap: 2-20 ms
            _heap_trimmed()
    return CellResult(cell, joined[0], jax.tree.unflatten(structure, joined[1:]))


TRIMMED_BYTES = 2**26  # a joined field this large hands its batches' memory back at once


def _heap_trimmed() -> None:
    """Hand the heap's free memory back to the system where the C library is glibc
    (`malloc_trim`; elsewhere nothing): a batch's arrays (under glibc's 32 MB mmap
    threshold) come from the heap, and once joined and freed they stayed in the process's
    resident memory, as much again as the results, until it ended."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (macOS, musl; Windows: TypeError)
        return None


def _arrays(cell_result: CellResult) -> list:
    """A cell result's step sizes and then its result's leaves, in pytree order."""
    return [cell_result.step_size, *jax.tree.leaves(cell_result.result)]


class RunKeys(NamedTuple):
    """Per run (runs,): the keys of its initial weights, training data, validation (or
    held-out points) and layer-1 biases."""

    params: jax.Array
    data: jax.Array
    validation: jax.Array
    biases: jax.Array


def run_key(seed: int, cell_hash: int, index) -> jax.Array:
    """The key of run `index` of a cell: fold_in(fold_in(key(seed), cell_hash), index)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), cell_hash), index)


def check_threefry() -> None:
    """Refuse a default generator other than threefry2x32 (the keys, their data's shape
    and the documented derivation are threefry's; the rbg ones hung a run) and JAX's
    non-partitionable threefry: a network drawn at a wider padded width keeps its first
    neurons' bits only with the partitionable one (JAX's default), and results would
    change with the other widths of a spec. (A JAX without the flag has only the
    partitionable one.)"""
    impl = getattr(jax.config, "jax_default_prng_impl", "threefry2x32")
    if impl != "threefry2x32":
        raise ValueError(
            f"jax_default_prng_impl is {impl!r} (JAX_DEFAULT_PRNG_IMPL): gdrelu's draws "
            "need 'threefry2x32', JAX's default"
        )
    if not getattr(jax.config, "jax_threefry_partitionable", True):
        raise ValueError(
            "jax_threefry_partitionable is off (JAX_THREEFRY_PARTITIONABLE): gdrelu's draws "
            "need it on, JAX's default"
        )


def _key_arguments(cell: Cell, indices: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    check_threefry()
    return (
        jnp.asarray(cell.spec.seed, jnp.uint32),
        jnp.asarray(cell.cell_hash, jnp.uint32),
        jnp.asarray(indices, jnp.uint32),
    )


def noise_keys(cell: Cell, indices: np.ndarray) -> jax.Array:
    """Key data (runs, 2) of the minibatch noise of runs `indices` of a cell: the same for
    every optimizer (common random numbers), independent of the data and initialization."""
    return in_draw_batches(lambda part: _noise_key_data(*_key_arguments(cell, part)), indices)


@jit
def _noise_key_data(seed, cell_hash, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(run_key(seed, cell_hash, i), NOISE_STREAM))
    return jax.random.key_data(keys(indices))


def run_keys(cell: Cell, indices: np.ndarray) -> RunKeys:
    """The keys of runs `indices` of a cell."""
    return _split_run_keys(*_key_arguments(cell, indices))


@jit
def _split_run_keys(seed, cell_hash, indices) -> RunKeys:
    split = jax.vmap(lambda index: jax.random.split(run_key(seed, cell_hash, index), 3))(indices)
    biases = jax.vmap(lambda k: jax.random.fold_in(k, BIAS_STREAM))(split[:, 0])
    return RunKeys(split[:, 0], split[:, 1], split[:, 2], biases)


def initial_runs(
    cell: Cell, indices: np.ndarray, size: int | None = None
) -> tuple[Params, WeightedData, Any]:
    """Initial parameters, training data and validation of runs `indices` of a cell: the
    validation weights (runs, m) on the training points (finite supports; None unless the
    runs stop early), or held-out (validation, test) points (continuous data, split
    files). The networks are padded to `size` neurons (`model.padded`; default: the
    cell's width, no padding). Drawn `draw_batch` runs at a time (`in_draw_batches`)."""
    drawn = shared_width(cell.spec, cell.width) if cell.spec.input_dim == 1 else cell.width
    drawn *= points_per_neuron(cell.spec.bias_init)  # he+k's (n, k) draws count as neurons
    return in_draw_batches(lambda part: _drawn_runs(cell, part, size), indices, drawn)


def _drawn_runs(cell: Cell, indices, size: int | None) -> tuple[Params, WeightedData, Any]:
    spec = cell.spec
    size = cell.width if size is None else size
    dtype = jnp.dtype(spec.dtype)
    keys = run_keys(cell, indices)
    biased = spec.bias_init != "zero"  # biases are drawn for the true width, then padded
    if spec.input_dim == 1:  # one program draws every width of the spec
        width, like = jnp.asarray(cell.width), jnp.zeros((), dtype)
        size_drawn = shared_width(spec, cell.width)
        params = draw_padded_params(keys.params, width, like, size=size_drawn, init=spec.init)
        params = _first_neurons(params, cell.width if biased else size)
    else:
        params = draw_params(
            keys.params, jnp.zeros((), dtype), width=cell.width, dim=spec.input_dim, init=spec.init
        )
    data, valid = _initial_data(cell, keys, dtype)
    if biased:
        params = draw_biases(
            keys.biases, params, data.x, data.weights, bias_init=spec.bias_init, init=spec.init
        )
    return padded(params, size), data, valid


def _initial_data(cell: Cell, keys: RunKeys, dtype) -> tuple[WeightedData, Any]:
    """The runs' training data and validation (`initial_runs`)."""
    spec = cell.spec
    delta = jnp.asarray(cell.delta, dtype)
    if spec.split is not None:
        x, y = spec.support(dtype)
        return draw_split(keys.data, x, y, delta, fractions=tuple(spec.split))
    if spec.data in CONTINUOUS:
        return draw_continuous(
            keys.data,
            keys.validation,
            delta,
            count=cell.num_samples,
            heldout=spec.num_heldout,
            dataset=spec.data,
            dim=spec.input_dim,
        )
    x, y = spec.support(dtype)
    return draw_finite(
        keys.data, keys.validation, x, y, delta, cell.num_samples, validation=spec.early_stopping
    )


def points_at_zero(spec: ExperimentSpec, x) -> np.ndarray | None:
    """Which runs (rows of their training inputs x) have a point at x = 0 where every
    initial kink of zero biases is (1-D data): a split that puts a training point at the
    training mean, which standardizes to 0. Such a run counts as crossed at its first check
    (the theory needs x_j ≠ 0); integer inputs do this often. None where it cannot happen
    (no split, d-dim data, other biases)."""
    if spec.split is None or spec.input_dim != 1 or spec.bias_init != "zero":
        return None
    return theory.point_at_zero(np.asarray(x), xp=np)


def _first_neurons(params: Params, width: int) -> Params:
    """The first `width` neurons of a batch of 1-D networks."""
    return Params(params.a[:, :width], params.b[:, :width], params.w[:, :width], params.c)


def training_arguments(spec: ExperimentSpec) -> dict[str, Any]:
    """`simulate`'s training arguments of a spec's runs."""
    return {
        "optimizer": spec.optimizer,
        "sampler": spec.sampler,
        "batch_size": None if spec.full_batch else spec.batch_size,
        "stop_on": spec.simulate_stop_on,
        "parameterization": spec.parameterization,
        "check_every": spec.check_every,
        "max_checks": spec.max_checks,
        "alpha": spec.alpha,
    }


def validation_arguments(spec: ExperimentSpec, valid) -> dict[str, Any]:
    """`simulate`'s validation arguments: held-out sets, or weights when early stopping."""
    if spec.held_out:
        validation, test = valid
        return {"validation": validation, "test": test, "early_stopping": spec.early_stopping}
    return {"validation_weights": valid if spec.early_stopping else None}


def batch_settings(spec: ExperimentSpec) -> dict[str, Any]:
    """What every cell of one batch must share: one `simulate` call trains them."""
    rule = spec.step_size if isinstance(spec.step_size, str) else "number"
    return {
        **training_arguments(spec),
        "dtype": spec.dtype,
        "held_out": spec.held_out,
        "early_stopping": spec.early_stopping,
        "step_rule": rule,
        "step_factor": spec.step_factor,
    }


def warn_of_cells_at_zero(work, at_zero: dict[Cell, list[int]]) -> None:
    """One warning per cell of `work` ((cell, run indices)) whose runs had a training point
    at x = 0 (`points_at_zero`): at_zero[cell] = [such runs, runs trained here]."""
    for cell, _ in work:
        flagged, trained = at_zero.get(cell, (0, 0))
        if flagged:
            warnings.warn(
                f"{flagged} of {trained} runs of width {cell.width}, Δ = "
                f"{cell.delta:g}: the split puts a training point at the training mean, x = 0 "
                "after standardizing, where every initial kink is; they count as crossed at "
                "once (docs/theory.md)",
                stacklevel=2,
            )
