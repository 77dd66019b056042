"""Where the runs are: blocks per device, the lanes of a sharded batch, and moving them.

The runs are sharded over the devices' runs axis; each device's share goes through a chunk
in blocks (`blocking_for`), its active runs first (`arrange`), so that the next chunk only
visits their blocks while every array keeps its shape (docs/design.md, "Blocking",
"Compaction"). The runs a chunk left to redo, and those that finished, are taken lane by
lane, each device its own (`own_lanes_at`, `put_own_lanes`): only they move, not the batch.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdrelu.compiled import jit
from gdrelu.engine.checks import CheckInputs
from gdrelu.engine.state import initial_state
from gdrelu.model import per_run_scaling

RUNS_AXIS = "runs"
BLOCK = 64  # runs per block on a CPU: the propagator's per-step state stays in L1 cache
MIN_BLOCK = 2  # fewest lanes a block or redo trains at once where two fit: XLA compiles a
# batch of one to other roundings (docs/design.md, "Blocks, devices and checks")
CHECK_BLOCK = 512  # runs per check batch on a CPU: fewer kernel launches per run
REDO_BLOCK = 16  # runs per redo on a CPU: few runs leave a chunk, a redo costs O(n) or O(nm)
REDO_NEURONS = 1024  # up to 4 × REDO_BLOCK runs per redo on a CPU while runs × width fit this
ACCELERATOR_BLOCK = 1 << 15  # most runs per block on a GPU or TPU
ACCELERATOR_REDO = 256
ACCELERATOR_UNROLL = 8  # GD steps per loop iteration on a GPU or TPU
KERNEL_VARIABLE = "GDRELU_PROPAGATOR_KERNEL"


class Blocking(NamedTuple):
    """How a device's runs go through a chunk: `block` runs at a time (one after the
    other), redos of `redo` runs, `unroll` GD steps per iteration of the compiled loop,
    the checks `check` runs at a time, the propagator's steps on `kernel` ("xla": XLA's
    loop; "pallas": one Pallas kernel, `gdrelu.kernel`; "interpret": that kernel in
    Pallas' interpret mode, on a CPU; "native": one C loop on a CPU, `gdrelu.native`;
    `propagator_kernel` resolves "auto"); a redo's share of a device in blocks of
    `redo_block` runs (None: one block, or blocks of `block` where the share is larger);
    the general path's steps on `general` ("xla", or "native": its C loop,
    `gdrelu.native_general`, where "native" is asked for by name, `general_kernel`)."""

    block: int
    redo: int
    unroll: int
    check: int
    kernel: str = "xla"
    redo_block: int | None = None
    general: str = "xla"


KERNELS = ("auto", "xla", "pallas", "interpret", "native")
STATIC_STEP_KERNELS = ("pallas", "interpret")  # a kernel cannot close over a traced loop count


def requested_kernel(kernel: str | None = None) -> str:
    """The kernel asked for: `kernel`, else $GDRELU_PROPAGATOR_KERNEL, else "auto"."""
    return kernel or os.environ.get(KERNEL_VARIABLE) or "auto"


def propagator_kernel(platform: str, kernel: str | None = None, optimizer=None, dtype=None) -> str:
    """`kernel` (default: $GDRELU_PROPAGATOR_KERNEL, else "auto"), checked for `platform`.
    "auto" is "native" on a CPU with a C compiler, unless `optimizer` (an `Optimizer`;
    None: GD) is one the C loop does not train (`propagator.kernel_trains`) or `dtype`
    (None: float64) is not float64, and "xla" otherwise; without a compiler it says so
    once, as a warning."""
    name = "kernel" if kernel else f"kernel (${KERNEL_VARIABLE})"  # where it was asked for
    kernel = requested_kernel(kernel)
    if kernel not in KERNELS:
        raise ValueError(
            f"{name} must be 'auto', 'xla', 'pallas', 'interpret' or 'native', not {kernel!r}"
        )
    if kernel == "auto":
        return _automatic_kernel(platform, optimizer, dtype)
    if kernel == "native":
        if platform != "cpu":
            raise ValueError(f"{name} 'native' is a C loop for CPUs, not {platform}")
        from gdrelu.native import library

        library()  # NativeUnavailable, with the reason, before anything runs
    if kernel == "pallas" and platform != "gpu":
        raise ValueError(
            f"{name} 'pallas' compiles with Triton for GPUs, not {platform}; 'interpret' "
            "runs it in Pallas' interpret mode"
        )
    return kernel


def general_kernel(kernel: str | None = None, optimizer=None) -> str:
    """The general path's kernel for `optimizer` (None: GD): "native" (its C loop,
    `native_general`) where `kernel` (`requested_kernel`) is "native" by name and the loop
    trains the optimizer, else "xla". Never chosen by "auto": its bits are not XLA's."""
    from gdrelu import native_general
    from gdrelu.propagator import GD

    trains = native_general.trains(GD if optimizer is None else optimizer)
    return "native" if requested_kernel(kernel) == "native" and trains else "xla"


def _automatic_kernel(platform: str, optimizer, dtype) -> str:
    """`propagator_kernel`'s "auto"."""
    from gdrelu.propagator import kernel_trains

    trains = optimizer is None or kernel_trains("native", optimizer)
    if platform != "cpu" or not trains or (dtype is not None and dtype != np.float64):
        return "xla"
    from gdrelu.native import NativeUnavailable, library

    try:
        library()
    except NativeUnavailable as error:
        warnings.warn(  # once per process: Python's default filter
            f"{error}. The propagator's steps take XLA's loop, 1.5-2x slower; "
            f"kernel 'xla' (--kernel xla, ${KERNEL_VARIABLE}=xla) chooses it and silences this",
            stacklevel=2,
        )
        return "xla"
    return "native"


def blocking_for(
    devices,
    runs: int,
    block: int | None = None,
    kernel=None,
    redo: int | None = None,
    width: int | None = None,
    optimizer=None,
    dtype=None,
) -> Blocking:
    """`Blocking` of `runs` runs spread over `devices`. A CPU takes blocks of `BLOCK` runs
    that stay in cache, and checks `CHECK_BLOCK` runs at a time. An accelerator takes its
    whole share in one block (rounded up to `BLOCK`, at most `ACCELERATOR_BLOCK`): a
    block's steps are a loop of small kernels whose launch cost does not grow with the
    runs, so small blocks would leave it idle; for the same reason it checks them all at
    once, redoes `ACCELERATOR_REDO` runs at a time and unrolls its loops. A CPU redoes
    `REDO_BLOCK` runs at a time, more (at most four times as many) for networks of
    `width` below `REDO_NEURONS` / `REDO_BLOCK` neurons: a narrow redo costs its gathers
    and puts more than its steps. `block` overrides the block size; `kernel` is the
    propagator's (`Blocking`, `propagator_kernel` for `optimizer` and `dtype`); `redo`
    overrides the redo size; the general path's kernel is `general_kernel`'s."""
    general = general_kernel(kernel, optimizer)
    kernel = propagator_kernel(devices[0].platform, kernel, optimizer, dtype)
    if devices[0].platform == "cpu":
        block = block or BLOCK
        narrow = REDO_NEURONS // (width or REDO_NEURONS)
        redo = redo or min(4 * REDO_BLOCK, max(REDO_BLOCK, narrow))
        check = block * max(1, CHECK_BLOCK // block)
        return Blocking(block, redo, 1, check, kernel, general=general)
    share = -(-runs // len(devices))
    if block is None:
        block = min(ACCELERATOR_BLOCK, BLOCK * -(-share // BLOCK))
    redo = redo or ACCELERATOR_REDO
    return Blocking(block, redo, ACCELERATOR_UNROLL, block, kernel, general=general)


def redone_blocking(blocking: Blocking, devices, block=None, redo=None) -> Blocking:
    """`blocking` for a propagator batch whose general blocks train as redos
    (`paths.mixes_paths`). On a CPU its blocks hold `REDO_BLOCK` runs, not `BLOCK`, so
    that the propagator's last block and the general lanes' first one train few padding
    lanes, and a redo takes up to `BLOCK` runs per device (a general block, not a few
    runs) in blocks of a redo's usual share, at least `REDO_BLOCK`. An accelerator's redo
    takes every lane of the batch in one block. `block` and `redo`, where given,
    override the sizes as in `blocking_for`."""
    if devices[0].platform != "cpu":
        return (
            blocking if redo is not None else blocking._replace(redo=len(devices) * blocking.block)
        )
    if block is None:
        blocking = blocking._replace(block=min(blocking.block, REDO_BLOCK))
    if redo is not None:
        return blocking
    share = redo_share(blocking, len(devices), BLOCK)[0]
    redo_block = min(BLOCK, max(share, REDO_BLOCK))
    return blocking._replace(redo=len(devices) * max(blocking.block, BLOCK), redo_block=redo_block)


def shard_map(fn, *, mesh, in_specs, out_specs):
    """`jax.shard_map` without the replication checks (scan carries start unvarying)."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


class Layout(NamedTuple):
    """Where the runs are: lane j of the state holds run slots[j] (-1: padding). Each
    device's share of the lanes starts with its active runs, num_blocks[d, 1] blocks of
    them, of which the first num_blocks[d, 0] train on the chunk's path and the rest,
    the lanes flagged `general`, on the general path (`paths.mixes_paths`); the first
    num_blocks[d, 2] lanes of the former and num_blocks[d, 3] of the latter are runs, the
    others padding (which the general path's C loop skips)."""

    slots: np.ndarray
    general: np.ndarray
    num_blocks: jax.Array
    blocking: Blocking
    sharding: NamedSharding

    @property
    def redo_lanes(self) -> int:
        return self.sharding.mesh.size * self._redo_share[0]

    @property
    def redo_block(self) -> int:
        """Runs per block of a redo."""
        share, blocks = self._redo_share
        return share // blocks

    @property
    def _redo_share(self) -> tuple[int, int]:
        devices = self.sharding.mesh.size
        return redo_share(self.blocking, devices, self.slots.size // devices)

    def redo_blocks(self, taken: np.ndarray) -> jax.Array:
        """num_blocks of a redo batch (`own_batches`' `taken`): on each device the blocks
        that hold its lanes, none where it has none, and its lanes (first in its share)."""
        real = np.sum(taken.reshape(self.sharding.mesh.size, -1) >= 0, axis=1)
        blocks = -(-real // self.redo_block)
        counts = np.stack([blocks, blocks, real, np.zeros_like(real)], 1)
        return jax.device_put(counts.astype(np.int32), self.sharding)

    @property
    def finished_lanes(self) -> int:
        """Lanes per copy of finished runs to the host: they only move, so more at a time
        than a redo trains, up to the batch's lanes (the memory budget counts one copy of
        those, `memory.COPIES`), and never fewer than a redo's."""
        return max(self.redo_lanes, min(4 * self.redo_lanes, self.slots.size))

    def own_batches(self, lanes: np.ndarray, size: int):
        """`own_lane_batches` of `lanes` (positions in this layout) in batches of `size`."""
        devices = self.sharding.mesh.size
        return own_lane_batches(lanes, self.slots.size // devices, devices, size)


def redo_share(blocking: Blocking, devices: int, per_device: int) -> tuple[int, int]:
    """(lanes per device, blocks) of a redo of `blocking.redo` lanes in a batch of
    `per_device` lanes per device: a device's share, at most its lanes and at least
    `MIN_BLOCK` of them, in one block, or rounded up to whole blocks (`redo_block`, else
    `block`) where it is larger than a block, so that the redo can train every lane it
    takes."""
    share = max(min(MIN_BLOCK, per_device), min(-(-blocking.redo // devices), per_device))
    block = blocking.redo_block or blocking.block
    blocks = -(-share // block)
    return (share if blocks == 1 else blocks * block), blocks


def arrange(lanes, slots, per_device, blocking: Blocking, sharding, general=None):
    """Spread the runs at `lanes` evenly over the devices, on each the runs flagged
    `general` (bool per entry of `lanes`) after the others, from a new block, each share
    padded to `per_device` lanes with copies of an active run: (positions to take, new
    layout)."""
    devices, block = sharding.mesh.size, blocking.block
    general = np.zeros(lanes.size, bool) if general is None else np.asarray(general, bool)
    positions, new_slots, new_general, counts = [], [], [], []
    parts = zip(
        np.array_split(lanes[~general], devices),
        np.array_split(lanes[general], devices),
        strict=True,
    )
    for fixed, other in parts:
        fixed_blocks = -(-fixed.size // block)
        gap = fixed_blocks * block - fixed.size if other.size else 0
        filler = np.concatenate([fixed, other, lanes])[:1]
        own = np.concatenate([fixed, np.repeat(filler, gap), other])
        flags = np.arange(own.size) >= fixed.size + gap  # the general lanes
        real = flags | (np.arange(own.size) < fixed.size)
        extra = per_device - own.size
        positions.append(np.concatenate([own, np.repeat(filler, extra)]))
        new_slots.append(np.concatenate([np.where(real, slots[own], -1), np.full(extra, -1)]))
        new_general.append(np.concatenate([flags, np.zeros(extra, bool)]))
        counts.append(
            (fixed_blocks, fixed_blocks + -(-other.size // block), fixed.size, other.size)
        )
    layout = Layout(
        slots=np.concatenate(new_slots),
        general=np.concatenate(new_general),
        num_blocks=jax.device_put(np.asarray(counts, np.int32), sharding),
        blocking=blocking,
        sharding=sharding,
    )
    return np.concatenate(positions), layout


@functools.partial(jit, static_argnames=("sharding",))
def reordered(tree, positions, sharding):
    """The lanes of a runs-sharded `tree` in the order `positions` (every lane moves);
    `sharding` None: on one device."""
    taken = jax.tree.map(lambda leaf: jnp.take(leaf, positions, axis=0, mode="clip"), tree)
    return taken if sharding is None else jax.lax.with_sharding_constraint(taken, sharding)


def own_lane_batches(lanes: np.ndarray, per_device: int, devices: int, size: int):
    """`lanes` (positions in a runs-sharded batch of `per_device` lanes per device) in
    batches of `size` (a multiple of `devices`) in which each device takes only lanes it
    holds, size // devices at most. Per batch: (positions within each device's share,
    (size,), padding = per_device; which entry of `lanes` each is, -1 for padding)."""
    share = size // devices
    owner = lanes // per_device
    mine = [np.flatnonzero(owner == d) for d in range(devices)]
    for first in range(0, max(m.size for m in mine), share):
        positions, taken = [], []
        for device, entries in enumerate(mine):
            part = entries[first : first + share]
            pad = share - part.size
            positions += [lanes[part] - device * per_device, np.full(pad, per_device)]
            taken += [part, np.full(pad, -1)]
        yield np.concatenate(positions).astype(np.int32), np.concatenate(taken)


def _local_lanes(tree, positions, mesh, fn, *rest):
    """fn(leaf, positions, *leaves of rest) on every device's own share of `tree`."""
    runs = PartitionSpec(RUNS_AXIS)

    def local(tree, positions, *rest):
        return jax.tree.map(lambda leaf, *more: fn(leaf, positions, *more), tree, *rest)

    specs = (runs,) * (2 + len(rest))
    return shard_map(local, mesh=mesh, in_specs=specs, out_specs=runs)(tree, positions, *rest)


@functools.partial(jit, static_argnames=("mesh",))
def own_lanes_at(tree, positions, mesh):
    """The lanes of a runs-sharded `tree` at `positions` (`own_lane_batches`: each device
    its own lanes, so no lane crosses devices; padding takes the share's last lane)."""
    return _local_lanes(tree, positions, mesh, lambda leaf, at: jnp.take(leaf, at, 0, mode="clip"))


@functools.partial(jit, static_argnames=("mesh",), donate_argnums=(0,))
def put_own_lanes(tree, positions, parts, mesh):
    """`tree` with its lanes at `positions` (`own_lane_batches`) set to `parts` (sharded like
    `own_lanes_at`'s result); padding is dropped. `tree` is donated: updated in place, not
    copied whole for each batch of lanes, so every array sharing a buffer with it (a
    chunk's outputs share those of the fields it leaves unchanged with its inputs) is
    deleted: read them before."""

    def put(leaf, at, part):
        return leaf.at[at].set(part, mode="drop")

    return _local_lanes(tree, positions, mesh, put, parts)


def fixed_pattern_ready(kinks, x, within_sides, xp=jnp) -> jax.Array:
    """Which runs of a batch may train their next chunk on the fixed-pattern path: every
    kink (max_i |b_i/a_i|, (runs,)) inside the data-free zone of x (runs, m), and initial
    groups that refine the sides, so that such a chunk cannot go below L_lin
    (`paths.fixed_pattern`)."""
    return (kinks < xp.min(xp.abs(x), axis=-1)) & within_sides


def placed(
    params,
    inputs: CheckInputs,
    noise_key,
    scaling,
    optimizer,
    block,
    devices,
    mixed,
    kernel=None,
    redo=None,
    redone_blocks=False,
):
    """The runs' initial state and check inputs spread evenly over `devices` (default: all
    local ones), each device's share padded to whole blocks (`blocking_for`, `block`
    and `redo` override its sizes): (runs, inputs, layout). `mixed`: the runs whose kinks start
    outside the data-free zone go in general blocks (one block more per device leaves
    room to start them on a new block). `redone_blocks`: the general blocks train as redos
    (the propagator's, `chunk.exact_chunk`; `redone_blocking`)."""
    count = params.c.shape[0]
    devices = jax.local_devices() if devices is None else list(devices)
    mesh = Mesh(np.asarray(devices), (RUNS_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(RUNS_AXIS))
    width = params.b.shape[-1]
    dtype = params.c.dtype
    blocking = blocking_for(devices, count, block, kernel, redo, width, optimizer, dtype)
    if redone_blocks:
        blocking = redone_blocking(blocking, devices, block, redo)
    per_device = (-(-count // (mesh.size * blocking.block)) + mixed) * blocking.block
    lanes = np.arange(count)
    positions, layout = arrange(lanes, lanes, per_device, blocking, sharding)
    per_run = per_run_scaling(scaling, count, params.c.dtype, xp=np)
    # initial_state on the lanes, so that its program depends on the lanes, not on the run
    # count; on one device: L_lin's pinv calls LAPACK's batched eigh, which deadlocks XLA's
    # CPU thread pool inside a sharded program (docs/design.md, "Blocks, devices and checks")
    params, inputs, noise_key, scaling = reordered(
        (params, inputs, noise_key, per_run), positions, None
    )
    runs = initial_state(
        params, inputs.step_size, noise_key, scaling, optimizer=optimizer, data=inputs.data
    )
    if mixed:  # the runs whose kinks start outside the data-free zone to general blocks
        ready = jax.device_get((runs.info.max_kink, inputs.data.x, runs.state.within_sides))
        keep = np.flatnonzero(layout.slots >= 0)
        general = ~fixed_pattern_ready(*ready, xp=np)[keep]
        return rearranged(runs, inputs, layout, keep, general)
    runs, inputs = reordered((runs, inputs), np.arange(layout.slots.size), sharding)
    return runs, inputs, layout


def rearranged(runs, inputs, layout: Layout, keep, general=None):
    """The runs at lanes `keep` first on each device (`arrange`; `general`: which of them
    go in general blocks), every array keeping its shape: (runs, inputs, layout)."""
    per_device = layout.slots.size // layout.sharding.mesh.size
    args = (per_device, layout.blocking, layout.sharding, general)
    positions, layout = arrange(keep, layout.slots, *args)
    runs, inputs = reordered((runs, inputs), positions, layout.sharding)
    return runs, inputs, layout
