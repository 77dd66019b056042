"""How many runs fit in memory at once: a per-run byte estimate against a budget.

A batch of runs holds, per run, its training state (`engine.RunState`) and its check
inputs (data, validation and test points); while a chunk runs, the chunk's start state is
kept for redos, a new state is built, and finished runs are copied to the host, so a
batch needs about `COPIES` times that. A block of runs in flight adds its temporaries,
(m, n) arrays per run of the block on the general path. The budget is the devices' free
memory (`free_device_bytes`) or, on a CPU, a share of the host's available memory; the
`--memory-budget` flag sets it.
"""

from __future__ import annotations

import os

import jax
import numpy as np

COPIES = 4  # state and inputs alive at once: start, new state, taken copy, host results
TEMPORARIES = 8  # (m, n) arrays per run of a block on the general path
HOST_SHARE = 0.5  # of the available host memory, when the devices are CPUs
DEVICE_SHARE = 0.7  # of each accelerator's free memory


def tree_bytes(tree) -> int:
    """Bytes of a pytree of arrays or shape-dtype structs."""
    leaves = jax.tree.leaves(tree)
    return int(sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves))


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


def free_device_bytes(devices=None) -> int | None:
    """Free memory summed over `devices` (default: the local ones) where JAX reports it
    (accelerators); None on CPUs."""
    total = 0
    for device in devices or jax.local_devices():
        stats = device.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        total += stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return total


def memory_budget(budget: int | None = None, devices=None) -> int:
    """Bytes a batch of runs may use: `budget` if given, else a share of the devices'
    free memory, else a share of the host's available memory (CPU)."""
    if budget is not None:
        if budget <= 0:
            raise ValueError(f"memory_budget: {budget} is not a positive number of bytes")
        return int(budget)
    free = free_device_bytes(devices)
    if free is not None:
        return int(DEVICE_SHARE * free)
    host = available_host_bytes()
    return int(HOST_SHARE * host) if host else 8 << 30


def batch_runs(per_run: int, per_block_run: int, budget: int, block: int) -> int:
    """The most runs of `per_run` bytes each (`COPIES` times) that fit in `budget` next to
    one block in flight per device (`per_block_run` bytes of temporaries per run of it);
    at least one block."""
    devices = jax.local_device_count()
    room = budget - devices * block * per_block_run
    return max(block, room // (COPIES * per_run))
