"""Each run's step size at initialization, by the spec's rule (docs/theory.md, "Step size")."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import theory
from gdrelu.batched import in_draw_batches
from gdrelu.compiled import jit
from gdrelu.data import WeightedData
from gdrelu.model import Params, Scaling, padded, scaling_of


@jit
def paper_step_sizes(params: Params, data: WeightedData, alpha) -> jax.Array:
    """`theory.paper_step_size` of every run (runs,), as one compiled program (eagerly it
    is dozens of them)."""
    return theory.paper_step_size(params, data, alpha=alpha)


@functools.partial(jit, static_argnames=("parameterization",))
def ntk_step_sizes(params, data, alpha, widths, parameterization: str) -> jax.Array:
    """1/λ_max of each run's weighted neural-tangent Gram at initialization (runs,), with
    the true `widths` (runs,) of padded networks."""
    dim = 1 if params.a.ndim == 2 else params.a.shape[1]
    scaling = scaling_of(parameterization, widths, dim)

    def one(p, d, s):
        return theory.ntk_step_size(p, d, alpha=alpha, scaling=Scaling(*s))

    return jax.vmap(one)(params, data, tuple(jnp.broadcast_to(v, widths.shape) for v in scaling))


@jit
def param_norm_step_sizes(params: Params, data: WeightedData) -> jax.Array:
    """`theory.param_norm_step_size` of every run (runs,); padding neurons are zeros."""
    return theory.param_norm_step_size(params, data)


def initial_step_sizes(specs_runs, params, data, widths, classify_width: int) -> jax.Array:
    """Step sizes (runs,) of a batch: `specs_runs` lists (spec, run count) in batch order;
    they share the rule and factor, numbers may differ. params, data: a leading runs axis;
    widths (runs,) the true widths; "paper" pads the networks to `classify_width`."""
    spec = specs_runs[0][0]
    dtype = params.c.dtype
    alpha = jnp.asarray(spec.alpha, dtype)
    width = params.b.shape[-1]
    if spec.step_size == "paper":

        def paper(p, d):  # padded a batch at a time: never every run at `classify_width`
            return paper_step_sizes(padded(p, classify_width, xp=np), d, alpha)

        patterns = data.x.shape[1] * classify_width  # a run's (m, n) activations
        step = _in_batches(paper, classify_width, params, data, entries=patterns)
    elif spec.step_size == "ntk":
        rule = spec.parameterization
        points = data.x.shape[1]  # a run's (m, m) Gram and (m, n) activations
        step = _in_batches(
            lambda p, d, w: ntk_step_sizes(p, d, alpha, w, rule),
            width,
            params,
            data,
            widths,
            entries=points * max(points, width),
        )
    elif spec.step_size == "small":
        step = 0.01 / widths.astype(dtype)
    elif spec.step_size == "param-norm":
        step = _in_batches(param_norm_step_sizes, width, params, data)
    else:
        step = jnp.concatenate([jnp.full((runs,), s.step_size, dtype) for s, runs in specs_runs])
    if spec.step_factor != 1.0:
        step = step * spec.step_factor
    return step


def _in_batches(step_sizes, width: int, *trees, entries: int | None = None) -> jax.Array:
    """step_sizes(*trees) (runs,) computed `batched.draw_batch(width, entries)` runs at a
    time, for networks of `width` neurons: every run's step size comes from the same compiled
    program, whatever the batch's run count (batches of 1-8 runs were compiled to other
    roundings than batches of 64 and more, and Adam's runs amplified the last bit of h)."""
    trees = jax.device_get(trees)  # on the host, each batch is a numpy slice, not a gather
    runs = np.shape(jax.tree.leaves(trees[0])[0])[0]

    def part(indices):
        return step_sizes(*jax.tree.map(lambda v: np.asarray(v)[indices], trees))

    return in_draw_batches(part, np.arange(runs), width, entries=entries)
