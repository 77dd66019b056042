"""The propagator's GD steps as one Pallas kernel: each run's state stays on chip for a
whole check interval.

On a GPU, the XLA loop of `propagator.deferred_steps` launches a few small kernels per GD
step, so a chunk is launch-bound whatever the run count (docs/design.md, "Kernel";
measurements in docs/performance.md). Here one kernel does all the steps: each
program loads `lanes` runs' Φ_t, c, tracked neurons, Grams and moments (`lane_step`'s
~80 numbers per run) once, steps them `num_steps` times in registers and writes them back.
Pallas lowers it with Triton, whose blocks are vectors of a power-of-2 length, so every
quantity is its own vector over the runs (`as_lanes`). On a CPU it only runs in Pallas'
interpret mode, which is slow: for tests. jax 0.11 deprecates Pallas' Triton backend in
favour of Mosaic GPU, which refuses float64 blocks (its TMA copies have no f64): with
float64 runs the kernel stays on Triton for as long as JAX keeps it.

`lane_step` is the propagator's step of `propagator._block_steps` in the same arithmetic
order, written per lane (on a CPU, tests/test_kernel.py finds them within 1e-12 after 1000
steps; on a GPU Triton also fuses multiply-adds, and divides approximately in float32).
The XLA path keeps the stacked form, which XLA's CPU loops run faster.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LANES = 32  # runs per program: latency-bound steps want many programs, one warp each
WARPS = 1


def _max(first, second):
    """max(first, second), NaN if either is (as XLA's max; Triton's maxnumf drops NaN)."""
    return jnp.where(jnp.isnan(first) | (second <= first), first, second)


def coupled(alpha, first, second):
    """(first + α second, α first + second): the coupling g[t, s] = 1 if t = s else α."""
    return first + alpha * second, alpha * first + second


def _side_sums(grams, phi):
    """(Σ_{i on t} w_i a_i, Σ_{i on t} w_i b_i) = (Φ Σ Φᵀ)[w, a], [w, b] of one side t,
    from its Σ_t and Φ_t (3×3 nested tuples of lanes)."""
    u = [
        grams[i][0] * phi[2][0] + grams[i][1] * phi[2][1] + grams[i][2] * phi[2][2]
        for i in range(3)
    ]
    wa = phi[0][0] * u[0] + phi[0][1] * u[1] + phi[0][2] * u[2]
    return wa, phi[1][0] * u[0] + phi[1][1] * u[1] + phi[1][2] * u[2]


def lane_step(carry, fixed, alpha):
    """One GD step of the propagator with every value a vector over the runs: carry =
    (Φ[t][i][j], c, tracked[k] = (a, b, w), kink, moved), fixed = (Σ[t][i][j], plus[k],
    real[k], moments (SideMoments of (+, -) pairs), h); returns the new carry."""
    phi, c, tracked, kink, moved = carry
    grams, plus, real, moments, h = fixed
    wa, wb = zip(*(_side_sums(grams[t], phi[t]) for t in range(2)), strict=True)
    slope, level = coupled(alpha, *wa), tuple(c + v for v in coupled(alpha, *wb))
    m = moments
    r0 = [level[s] * m.p[s] + slope[s] * m.px[s] - m.py[s] for s in range(2)]
    r1 = [level[s] * m.px[s] + slope[s] * m.pxx[s] - m.pxy[s] for s in range(2)]
    g1 = [h * v for v in coupled(alpha, *r1)]  # per neuron side t
    g0 = [h * v for v in coupled(alpha, *r0)]
    phi = tuple(
        (
            tuple(phi[t][0][j] - g1[t] * phi[t][2][j] for j in range(3)),
            tuple(phi[t][1][j] - g0[t] * phi[t][2][j] for j in range(3)),
            tuple(phi[t][2][j] - (g1[t] * phi[t][0][j] + g0[t] * phi[t][1][j]) for j in range(3)),
        )
        for t in range(2)
    )
    c = c - h * (r0[0] + r0[1])
    stepped, ratios, flips = [], [], []
    for (a, b, w), on_plus, is_real in zip(tracked, plus, real, strict=True):
        t1 = jnp.where(on_plus, g1[0], g1[1])
        t0 = jnp.where(on_plus, g0[0], g0[1])
        a, b, w = a - w * t1, b - w * t0, w - (a * t1 + b * t0)
        ratios.append(jnp.where(is_real, jnp.abs(b / a), 0.0))
        flips.append(is_real & ((a > 0) != on_plus))
        stepped.append((a, b, w))
    kink = functools.reduce(_max, ratios, kink)
    moved = functools.reduce(jnp.logical_or, flips, moved)
    return phi, c, tuple(stepped), kink, moved


def as_lanes(carry, fixed):
    """The arrays of `propagator._block_steps` (runs axis last: phi (2, 3, 3, runs),
    tracked (3, T, runs), ...) as `lane_step`'s nested tuples of (runs,) vectors."""
    phi, c, tracked, kink, moved = carry
    grams, plus, real, moments, h = fixed

    def square(v):
        return tuple(tuple(tuple(v[t, i]) for i in range(3)) for t in range(2))

    neurons = tuple(zip(*(tuple(tracked[i]) for i in range(3)), strict=True))
    moments = type(moments)(*(tuple(v) for v in moments))
    fixed = (square(grams), tuple(plus), tuple(real), moments, h)
    return (square(phi), c, neurons, kink, moved), fixed


def from_lanes(carry):
    """`lane_step`'s carry as the arrays of `propagator._block_steps`."""
    phi, c, tracked, kink, moved = carry
    phi = jnp.stack([jnp.stack([jnp.stack(row) for row in side]) for side in phi])
    tracked = jnp.stack([jnp.stack(column) for column in zip(*tracked, strict=True)])
    return phi, c, tracked, kink, moved


def _as_int(v):
    return v.astype(jnp.int32) if v.dtype == jnp.bool_ else v


def kernel_steps(carry, fixed, alpha, num_steps: int, active, *, interpret=False):
    """`propagator._block_steps` for a whole batch in one Pallas kernel: carry = (phi, c,
    tracked, kink, moved), fixed = (grams, tracked_plus, real, moments, h), runs axis
    last; only the first `active` runs (a traced count) step, the others keep their carry.
    The runs must split into programs of `LANES` runs (or one program of a power of 2)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    runs = carry[1].shape[-1]
    lanes = min(LANES, runs)
    if runs % lanes or lanes & (lanes - 1):
        raise ValueError(f"kernel_steps: {runs} runs do not split into programs of {lanes}")
    carry, fixed = as_lanes(carry, fixed)
    steps = (fixed, jnp.broadcast_to(alpha, (runs,)), jnp.arange(runs) < active)
    carry_leaves, carry_tree = jax.tree.flatten(carry)
    fixed_leaves, fixed_tree = jax.tree.flatten(steps)
    flags = [v.dtype == jnp.bool_ for v in carry_leaves + fixed_leaves]
    inputs = len(flags)

    def kernel(*refs):  # flags cross the kernel's boundary as int32, not as i1 pointers
        values = [
            ref[...] != 0 if flag else ref[...] for ref, flag in zip(refs, flags, strict=False)
        ]
        start = jax.tree.unflatten(carry_tree, values[: len(carry_leaves)])
        fixed, alpha, stepping = jax.tree.unflatten(fixed_tree, values[len(carry_leaves) :])
        end = jax.lax.fori_loop(0, num_steps, lambda _, c: lane_step(c, fixed, alpha), start)
        for ref, new, old in zip(refs[inputs:], jax.tree.leaves(end), values, strict=False):
            ref[...] = jnp.where(stepping, new, old).astype(ref.dtype)

    spec = pl.BlockSpec((lanes,), lambda i: (i,))
    out = pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct(v.shape, _as_int(v).dtype) for v in carry_leaves],
        grid=(runs // lanes,),
        in_specs=[spec] * inputs,
        out_specs=[spec] * len(carry_leaves),
        interpret=interpret,
        compiler_params=None if interpret else plt.CompilerParams(num_warps=WARPS),
    )(*map(_as_int, carry_leaves + fixed_leaves))
    out = [
        v != 0 if start.dtype == jnp.bool_ else v
        for v, start in zip(out, carry_leaves, strict=True)
    ]
    return from_lanes(jax.tree.unflatten(carry_tree, out))
