"""How gdrelu compiles its programs: `jax.jit`, on a CPU without XLA's YNNPACK fusions.

XLA's CPU backend hands reductions to YNNPACK. In float32 with a leading axis of one run,
it computes some of them wrongly (jaxlib 0.10.2: `vmap` of the neuron Gram matrices Σ_i
θ_i θ_iᵀ over one run of width ≥ 256 put the (0, 0) entry at (0, 2), so the paper's step
size came out about 30% too small; two runs, float64 or no vmap were right). It is also
slower than XLA's own loops on the checks' sums over 3 and 4 entries and on the general
path's step (docs/performance.md). So every gdrelu program on a CPU compiles with it off;
other platforms ignore the option.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def jit(fn: Callable | None = None, **options) -> Callable:
    """`jax.jit(fn, **options)`, compiled with `CPU_COMPILER_OPTIONS` for a CPU: the
    platform of its first committed array argument, else JAX's default device's. Called
    inside another trace (a jitted caller, `jax.eval_shape`, `vmap`), it is traced into
    that program, which JAX refuses to give options of its own; gdrelu's outer programs
    are compiled by this function too. As a decorator: `@jit` or
    `@functools.partial(jit, static_argnames=...)`."""
    if fn is None:
        return functools.partial(jit, **options)
    plain = jax.jit(fn, **options)
    cpu = jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS, **options)

    def chosen(args, kwargs):
        leaves = jax.tree.leaves((args, kwargs))
        if _tracing(leaves) or _platform(leaves) != "cpu":
            return plain
        return cpu

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return chosen(args, kwargs)(*args, **kwargs)

    call.lower = lambda *args, **kwargs: chosen(args, kwargs).lower(*args, **kwargs)
    call._cache_size = lambda: plain._cache_size() + cpu._cache_size()
    return call


def _tracing(leaves) -> bool:
    """Whether this call is inside another trace: a traced argument, or (where this JAX
    says) a trace under way around arrays the caller closed over."""
    clean = getattr(jax._src.core, "trace_state_clean", None)
    return any(isinstance(v, jax.core.Tracer) for v in leaves) or (
        clean is not None and not clean()
    )


def _platform(leaves) -> str:
    """The platform the call runs on: its first committed array's, else the default
    device's (`jax.default_device`), else the default backend's."""
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and getattr(leaf, "committed", False):
            return next(iter(leaf.devices())).platform
    device = jax.config.jax_default_device
    return getattr(device, "platform", None) or jax.default_backend()
