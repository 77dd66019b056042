"""GD on a 1-D network in O(1) work per step: the neurons of a side share one 3×3 propagator.

While the activation pattern is fixed (see `fastpath`), the GD step of neuron i is linear
in θ_i = (a_i, b_i, w_i) with a matrix that only depends on its side t = sign a_i:

    θ_i ← P_t θ_i,   P_t = I - h [[0, 0, G1_t], [0, 0, G0_t], [G1_t, G0_t, 0]].

Over a chunk, θ_i = Φ_t θ_i(start) with Φ_t = P_t(k)…P_t(1), and the per-side lines need
only the Grams Σ_t = Σ_{i on t} θ_iθ_iᵀ at the chunk's start: Σ_i w_i a_i over side t is
(Φ_t Σ_t Φ_tᵀ)[w, a]. Φ_t is carried from chunk to chunk and applied to the neurons only
when the engine needs them (`materialize`), so a chunk costs O(1) per step and run.

The kinks. He init has b = 0, so every neuron of side t starts in the plane b = 0 and
stays in its image under the propagators: b_i/a_i = (Φ10 + Φ12 q_i)/(Φ00 + Φ02 q_i) with
q_i = w_i/a_i at the start (`slope0`). This Möbius function of q_i is monotone while no
a_i changes sign, and a_i/a_i(0) = Φ00 + Φ02 q_i is linear in q_i: the largest |b_i/a_i|
and the first sign change of any a_i both occur at the neurons of least and greatest q_i.
These two per side are tracked after every step, together with up to `IRREGULAR_CAPACITY`
"irregular" neurons (b ≠ 0 at the start, or a changed sign once and left the plane).
A run is not exact here, and the engine redoes its chunk on the general path, when a
tracked a_i changes sign or it has more irregular neurons than that.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdrelu.fastpath import SideMoments, residual_moments
from gdrelu.kernel import coupled, kernel_steps
from gdrelu.model import Params, active_neurons
from gdrelu.theory import neuron_grams

IRREGULAR_CAPACITY = 2


class ChunkEnd(NamedTuple):
    """What the checks need of a run after a chunk, leading runs axis on every field."""

    grams: jax.Array  # (2, 3, 3): Σ_t = Σ_{i on side t} θ_iθ_iᵀ
    witnesses: jax.Array  # (k, 3): the θ_i whose kink margins bound all others'
    real: jax.Array  # (k,): which witnesses are neurons (the rest is padding)


def regular_neurons(params: Params) -> tuple[jax.Array, jax.Array]:
    """(slope0, regular) of one 1-D run: q_i = w_i/a_i, and whether neuron i is in b = 0
    (padding neurons, `model.active_neurons`, are neither regular nor irregular)."""
    slope = params.w / params.a
    regular = (params.b == 0) & (params.a != 0) & jnp.isfinite(slope)
    return jnp.where(regular, slope, 0.0), regular


def tracked_neurons(params: Params, slope0, regular) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The neurons whose kinks bound all others: (indices (T,), real (T,), fits ()).

    Per side, the regular neurons of least and greatest q_i, then the irregular ones;
    `fits` is False when there are more irregular neurons than `IRREGULAR_CAPACITY`.
    """
    plus = params.a > 0
    picks, real = [], []
    for side in (plus, ~plus):
        members = regular & side
        picks += [
            jnp.argmax(jnp.where(members, slope0, -jnp.inf)),
            jnp.argmin(jnp.where(members, slope0, jnp.inf)),
        ]
        real += [jnp.any(members)] * 2
    irregular = ~regular & active_neurons(params)
    count = jnp.sum(irregular)
    (others,) = jnp.nonzero(irregular, size=IRREGULAR_CAPACITY, fill_value=0)
    indices = jnp.concatenate([jnp.stack(picks), others])
    real = jnp.concatenate([jnp.stack(real), jnp.arange(IRREGULAR_CAPACITY) < count])
    return indices, real, count <= IRREGULAR_CAPACITY


class Deferred(NamedTuple):
    """A run whose neurons are θ_i = Φ_t θ_i^ref (t = side of neuron i), kept unapplied so
    that a chunk costs O(1): leading runs axis on every field."""

    phi: jax.Array  # (2, 3, 3): Φ_t since the parameters were last materialized
    grams: jax.Array  # (2, 3, 3): the current Σ_t
    tracked: jax.Array  # (T,) int: `tracked_neurons` indices
    tracked_real: jax.Array  # (T,) bool
    fits: jax.Array  # () bool


def deferred(params: Params, slope0, regular) -> Deferred:
    """A batch of materialized runs as `Deferred` ones (Φ = I); O(n) per run."""
    runs, dtype = params.c.shape[0], params.c.dtype
    indices, real, fits = jax.vmap(tracked_neurons)(params, slope0, regular)
    eye = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (runs, 2, 3, 3))
    return Deferred(eye, jax.vmap(neuron_grams)(params), indices, real, fits)


def materialize(params: Params, phi: jax.Array) -> Params:
    """θ_i ← Φ_t θ_i for a batch (phi: (runs, 2, 3, 3)); written out, as a batched 3×3
    product per run is slow on CPUs."""
    theta = (params.a, params.b, params.w)
    plus = (params.a > 0)[:, None, None]
    phi_n = jnp.where(plus, phi[:, 0, :, :, None], phi[:, 1, :, :, None])  # (runs, 3, 3, n)
    a, b, w = (sum(phi_n[:, i, j] * theta[j] for j in range(3)) for i in range(3))
    return Params(a, b, w, params.c)


def deferred_steps(
    params: Params,
    state: Deferred,
    moments: SideMoments,
    step_size,
    alpha,
    num_steps: int,
    *,
    block: int = 64,
    unroll: int = 1,
    num_blocks=None,
    kernel: str = "xla",
) -> tuple[jax.Array, Deferred, jax.Array, jax.Array, ChunkEnd]:
    """`num_steps` GD steps of a batch of 1-D runs under fixed activation patterns, in
    O(1) per run and step: `params` are the reference parameters of `state` (only their c
    and the tracked neurons are read), every argument has a leading runs axis. Returns
    (new c, new state, per run the max over the steps of max_i |b_i/a_i|, exact, ChunkEnd);
    the reference parameters stay as they are. A run is not exact when some tracked a_i
    changed sign (the sides moved) or it has too many irregular neurons: the engine then
    trains that chunk again on an exact path. The tracked neurons' kink margins in the
    certificate bound all others' (the margin of a_i(0)·v(q) is |a_i(0)| times a concave
    function of q while sign a_i holds).

    The steps go through the runs in blocks of `block` (they must divide the batch): O(1)
    per step makes the per-step state tiny, and on a CPU it should stay in cache; only the
    first `num_blocks` blocks (a traced count; default all) take steps, the others keep
    Φ = I. The work once per chunk (the tracked neurons in, the Grams and Φ_t out) is done
    for the whole batch at once, outside the loop over blocks. `unroll` steps go in one
    iteration of the compiled loop (an accelerator launches each iteration's kernels,
    whatever the block). `kernel="pallas"` does the steps of all the blocks in one Pallas
    kernel instead (`gdrelu.kernel`; "interpret": the same in Pallas' interpret mode).
    """
    runs = params.c.shape[0]
    block = min(block, runs)
    if runs % block:
        raise ValueError(f"{runs} runs do not split into blocks of {block}")
    carry, fixed = _chunk_start(params, state, moments, step_size)

    def lanes(tree, start):
        return jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, start, block, -1), tree)

    def one_block(i, carry):
        start = i * block
        done = _block_steps(*lanes((*carry, *fixed), start), alpha, num_steps, unroll)
        put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=-1)
        return jax.tree.map(put, carry, done)

    count = runs // block if num_blocks is None else num_blocks
    if kernel == "xla":
        phi, c, tracked, kink, moved = jax.lax.fori_loop(0, count, one_block, carry)
    else:
        interpret = kernel == "interpret"
        stepped = kernel_steps(carry, fixed, alpha, num_steps, count * block, interpret=interpret)
        phi, c, tracked, kink, moved = stepped
    new, end = _chunk_end(state, fixed[0], phi, tracked)
    return c, new, kink, state.fits & ~moved, end


def _chunk_start(params: Params, state: Deferred, moments: SideMoments, step_size):
    """The loop's carry (Φ = I, c, the tracked neurons at the chunk's start, max kink,
    moved) and fixed inputs (Σ_t, sides and realness of the tracked neurons, moments, h),
    the runs axis last (vector lanes). Tiny batched products are written as sums: as dots
    they are slow on CPUs."""
    runs, dtype = params.c.shape[0], params.c.dtype
    picked = (jnp.take_along_axis(v, state.tracked, 1) for v in params[:3])
    tracked = jnp.stack(list(picked), -1)  # (runs, T, 3): O(1), not O(n)
    tracked_plus = tracked[..., 0] > 0
    phi_t = jnp.where(tracked_plus[..., None, None], state.phi[:, :1], state.phi[:, 1:])
    tracked = jnp.sum(phi_t * tracked[..., None, :], -1)
    fixed = (
        state.grams.transpose(1, 2, 3, 0),  # Σ_t, (2, 3, 3, runs)
        tracked_plus.T,
        state.tracked_real.T,
        SideMoments(*(v.T for v in moments)),  # (2, runs): data side s = +, -
        jnp.broadcast_to(step_size, (runs,)),
    )
    eye = jnp.broadcast_to(jnp.eye(3, dtype=dtype)[None, :, :, None], (2, 3, 3, runs))
    zeros = jnp.zeros((runs,), dtype)
    carry = (eye, params.c, tracked.transpose(2, 1, 0), zeros, jnp.zeros((runs,), bool))
    return carry, fixed


def _chunk_end(state: Deferred, grams, phi, tracked) -> tuple[Deferred, ChunkEnd]:
    """The state after a chunk of propagators `phi` (2, 3, 3, runs): Σ_t ← Φ_t Σ_t Φ_tᵀ,
    Φ_t accumulated, and what the checks read."""
    left = jnp.sum(phi[:, :, :, None] * grams[:, None], 2)  # ΦΣ, (2, 3, 3, runs)
    new_grams = jnp.sum(left[:, :, None] * phi[:, None], 3).transpose(3, 0, 1, 2)
    old_phi = state.phi.transpose(1, 2, 3, 0)
    new_phi = jnp.sum(phi[:, :, :, None] * old_phi[:, None], 2).transpose(3, 0, 1, 2)
    end = ChunkEnd(grams=new_grams, witnesses=tracked.transpose(2, 1, 0), real=state.tracked_real)
    return state._replace(phi=new_phi, grams=new_grams), end


def _pair(alpha, first, second):
    """`kernel.coupled`, stacked: the coupling's two sides along a new first axis."""
    return jnp.stack(coupled(alpha, first, second))


def _sum3(term):
    """term(0) + term(1) + term(2): a sum over a 3-axis written out, so that a GD step is
    elementwise over the runs (reductions would split it into several kernels on a GPU)."""
    return term(0) + term(1) + term(2)


def _block_steps(
    phi, c, tracked, kink, moved, grams, tracked_plus, real, moments, h, alpha, num_steps, unroll=1
):
    """`num_steps` steps of one block from (Φ_t, c, tracked, kink, moved), runs axis last:
    the same, after the steps."""

    def body(carry, _):
        phi, c, tracked, kink, moved = carry  # phi: Φ_t, (2, 3, 3, runs)
        u = _sum3(lambda j: grams[:, :, j] * phi[:, 2, j][:, None])  # Σ_t Φ_t[w]ᵀ
        wa = _sum3(lambda j: phi[:, 0, j] * u[:, j])  # Σ_{i on t} w_i a_i
        wb = _sum3(lambda j: phi[:, 1, j] * u[:, j])
        slope, level = _pair(alpha, wa[0], wa[1]), c + _pair(alpha, wb[0], wb[1])
        r0, r1 = residual_moments(level, slope, moments)
        g1 = h * _pair(alpha, r1[0], r1[1])[:, None]  # per neuron side t
        g0 = h * _pair(alpha, r0[0], r0[1])[:, None]
        phi = jnp.stack(
            [
                phi[:, 0] - g1 * phi[:, 2],
                phi[:, 1] - g0 * phi[:, 2],
                phi[:, 2] - (g1 * phi[:, 0] + g0 * phi[:, 1]),
            ],
            1,
        )
        c = c - h * (r0[0] + r0[1])
        a, b, w = tracked
        t1 = jnp.where(tracked_plus, g1[0], g1[1])
        t0 = jnp.where(tracked_plus, g0[0], g0[1])
        tracked = jnp.stack([a - w * t1, b - w * t0, w - (a * t1 + b * t0)])
        ratio = jnp.where(real, jnp.abs(tracked[1] / tracked[0]), 0.0)
        flipped = real & ((tracked[0] > 0) != tracked_plus)
        kink = functools.reduce(jnp.maximum, ratio, kink)
        moved = functools.reduce(jnp.logical_or, flipped, moved)
        return (phi, c, tracked, kink, moved), None

    carry = (phi, c, tracked, kink, moved)
    return jax.lax.scan(body, carry, length=num_steps, unroll=unroll)[0]
