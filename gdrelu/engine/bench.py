"""A chunk loop for benchmarks: the work of `simulate`'s chunks without its bookkeeping."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from gdrelu.data import WeightedData
from gdrelu.engine.checks import ChunkScalars, check_inputs
from gdrelu.engine.chunk import chunk_settings, run_chunk
from gdrelu.engine.placement import placed
from gdrelu.engine.state import GD
from gdrelu.model import Params
from gdrelu.outcome import STOP_RULES


def chunk_runner(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    path: str,
    check_every: int,
    unroll: int | None = None,
    rules: tuple[str, ...] = STOP_RULES,
) -> Callable[[int], None]:
    """For benchmarks: `run(chunks)` trains every run with GD for `chunks` chunks of
    `check_every` steps with the checks after each, as `simulate` does, but drops no run
    and redoes nothing (the work stays the same from chunk to chunk), α = 0, on every
    local device. `unroll` overrides the devices' `blocking_for`; `rules` are the
    stopping checks."""
    dtype = params.c.dtype
    steps = jnp.broadcast_to(jnp.asarray(step_size, dtype), params.c.shape)
    inputs = check_inputs(data, steps, data, data)
    runs, inputs, layout = placed(params, inputs, None, None, GD, None, None, False)
    scalars = ChunkScalars(
        jnp.asarray(0.0, dtype), jnp.asarray(1e-8, dtype), jnp.asarray(10), jnp.int32(check_every)
    )
    blocking = layout.blocking if unroll is None else layout.blocking._replace(unroll=unroll)
    settings = chunk_settings(check_every, rules, path, GD, blocking)
    mesh = layout.sharding.mesh

    def run(chunks: int) -> None:
        current = runs
        for _ in range(chunks):
            current, code, *_ = run_chunk(
                current, inputs, layout.num_blocks, scalars, settings=settings, mesh=mesh
            )
            np.asarray(code)  # the host reads the codes after every chunk, as simulate does

    return run
