"""Programs that run once per batch of runs (draws, step sizes, the final classification)
called on fixed-size batches of runs, so that each compiles once per width whatever the
run count, and its arrays stay bounded however wide the networks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu.compiled import jit

DRAW_BATCH = 64  # runs per call of a compiled draw
DRAW_NEURONS = 2**16  # at most this many neurons (runs × width) per call
DRAW_ENTRIES = 2**22  # at most this many entries of a run's largest array per call


def draw_batch(width: int | None, entries: int | None = None) -> int:
    """Runs per call of a once-per-batch program (draws, step sizes, classification) on
    networks of `width` neurons whose largest array holds `entries` numbers per run (the
    (m, n) patterns on m points, an (m, m) Gram; None: the neurons alone): `DRAW_BATCH`,
    fewer where runs × width would pass `DRAW_NEURONS` or runs × entries `DRAW_ENTRIES`,
    so that a call's arrays stay bounded (one run at least)."""
    if width is None:
        return DRAW_BATCH
    size = min(DRAW_BATCH, DRAW_NEURONS // width)
    if entries is not None:
        size = min(size, DRAW_ENTRIES // entries)
    return max(1, size)


def in_draw_batches(
    draw, indices, width: int | None = None, on_host: bool = False, entries: int | None = None
):
    """draw(indices) as draws of `draw_batch(width, entries)` runs joined (the last batch
    padded with its last index): one compiled program per draw and shape whatever the run
    count. A run's draws depend on its own key only, so the batches change no value.
    Traced indices (shapes only: `memory.run_bytes`) are drawn at once. `on_host`: the
    batches are joined by numpy on the host (no compiled join per run count)."""
    try:
        indices = np.asarray(indices)
    except jax.errors.TracerArrayConversionError:
        return draw(indices)
    count, size = indices.size, draw_batch(width, entries)
    if count == 0:
        return draw(indices)
    batches = -(-count // size)
    padded_indices = np.concatenate(
        [indices, np.full(batches * size - count, indices[-1], indices.dtype)]
    )
    parts = [draw(part) for part in np.split(padded_indices, batches)]
    if on_host:
        return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:count], *jax.device_get(parts))
    return joined(parts, count=count)


@functools.partial(jit, static_argnames="count")
def joined(parts, *, count: int):
    """The first `count` runs of the batches `parts` (pytrees alike, leading runs axis),
    joined along the runs axis in one compiled program."""
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves)[:count], *parts)
