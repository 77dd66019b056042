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

SGD and heavy ball. An SGD step is the same linear map with the moments of that step's
minibatch weights instead of the data's (drawn as `optim.batch_weights` draws them), so
only the per-step moments change: O(B·m) for the draw, O(1) for the neurons. Heavy ball
(v ← μv + ∇L, θ ← θ - h v) is linear in z_i = (θ_i, v_i): a 6×6 Φ_t per side, whose
neurons start in the plane b = 0, v = 0 and stay in its image, so the same two neurons per
side bound the kinks (docs/design.md, "The propagator").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdrelu import native_general
from gdrelu.data import WeightedData
from gdrelu.fastpath import SideMoments, point_moments, residual_moments, side_moments
from gdrelu.kernel import coupled, kernel_steps
from gdrelu.model import Params, active_neurons
from gdrelu.optim import (
    MOMENTUM,
    Optimizer,
    batch_weights,
    get_optimizer,
    is_named,
    multinomial_thresholds,
    scan_steps,
    tail_counts,
    words_ahead,
)

IRREGULAR_CAPACITY = 2
HEAVY_BALL = {"gd": None, "sgd": None, "momentum": MOMENTUM}  # optimizer -> μ, on this path
GD = get_optimizer("gd")


def propagates(optimizer: Optimizer) -> bool:
    """Whether the propagator can train `optimizer`: the named GD, SGD or heavy ball."""
    return optimizer.name in HEAVY_BALL and is_named(optimizer)


def kernel_trains(kernel: str, optimizer: Optimizer) -> bool:
    """Whether `kernel` can take `optimizer`'s steps on this path: XLA's loop all of them,
    the C loop those with full batches or multinomial minibatches of a power-of-two size
    B (drawn as XLA's loop draws them; for other B its moments round differently), the
    Pallas kernel full-batch GD's."""
    if kernel == "xla":
        return True
    if not propagates(optimizer):
        return False
    if kernel == "native":  # B a power of two: B·first and 1/B exact, so the bits match
        batch = optimizer.batch_size
        exact = batch > 0 and batch & (batch - 1) == 0
        return not optimizer.stochastic or (optimizer.sampler == "multinomial" and exact)
    return optimizer.name == "gd"


def state_size(optimizer: Optimizer) -> int:
    """D, the length of a neuron's z_i: 3 for θ_i = (a_i, b_i, w_i), 6 with a velocity."""
    return 6 if propagates(optimizer) and HEAVY_BALL[optimizer.name] is not None else 3


def neuron_vectors(params: Params, velocity: Params | None = None) -> jax.Array:
    """z_i = (a_i, b_i, w_i[, v_a, v_b, v_w]) of a 1-D run: (..., n, D)."""
    fields = [params.a, params.b, params.w]
    if velocity is not None:
        fields += [velocity.a, velocity.b, velocity.w]
    return jnp.stack(fields, -1)


def side_grams(params: Params, velocity: Params | None = None) -> jax.Array:
    """Σ_t = Σ_{i: sign a_i = t} z_i z_iᵀ of one 1-D run, sides (+, -); (2, D, D). Padding
    neurons are 0 and add nothing."""
    z = neuron_vectors(params, velocity).T  # (D, n)
    sides = jnp.stack([params.a > 0, params.a <= 0]).astype(z.dtype)
    return jnp.sum(sides[:, None, None] * z[:, None] * z[None, :], -1)


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

    phi: jax.Array  # (2, D, D): Φ_t since the parameters were last materialized
    grams: jax.Array  # (2, D, D): the current Σ_t of the z_i (`side_grams`)
    tracked: jax.Array  # (T,) int: `tracked_neurons` indices
    tracked_real: jax.Array  # (T,) bool
    fits: jax.Array  # () bool


def deferred(params: Params, slope0, regular, velocity: Params | None = None) -> Deferred:
    """A batch of materialized runs as `Deferred` ones (Φ = I); O(n) per run. With the
    heavy ball's `velocity` (Params, leading runs axis), z_i holds v_i too (D = 6)."""
    runs, dtype = params.c.shape[0], params.c.dtype
    size = 3 if velocity is None else 6
    indices, real, fits = jax.vmap(tracked_neurons)(params, slope0, regular)
    eye = jnp.broadcast_to(jnp.eye(size, dtype=dtype), (runs, 2, size, size))
    return Deferred(eye, jax.vmap(side_grams)(params, velocity), indices, real, fits)


def materialized_neurons(
    params: Params, phi: jax.Array, velocity: Params | None = None
) -> tuple[Params, Params | None]:
    """z_i ← Φ_t z_i for a batch (phi: (runs, 2, D, D)): the parameters and, with D = 6,
    the velocity (c and its velocity are never deferred). Written out, as a batched small
    product per run is slow on CPUs."""
    z = tuple(jnp.moveaxis(neuron_vectors(params, velocity), -1, 0))
    plus = (params.a > 0)[:, None, None]
    phi_n = jnp.where(plus, phi[:, 0, :, :, None], phi[:, 1, :, :, None])  # (runs, D, D, n)
    new = [sum(phi_n[:, i, j] * z[j] for j in range(len(z))) for i in range(len(z))]
    if velocity is None:
        return Params(*new, params.c), None
    return Params(*new[:3], params.c), Params(*new[3:], velocity.c)


def materialize(params: Params, phi: jax.Array) -> Params:
    """θ_i ← Φ_t θ_i for a batch (phi: (runs, 2, 3, 3))."""
    return materialized_neurons(params, phi)[0]


class Noise(NamedTuple):
    """What a stochastic run's per-step minibatch is drawn from (`optim.batch_weights`),
    leading runs axis on every field."""

    data: WeightedData  # (runs, m) each
    key: jax.Array  # (runs, 2) uint32 key data of the run's minibatch noise
    step: jax.Array  # (runs,) steps the run had taken before the chunk


class DrawTable(NamedTuple):
    """What the side moments of a lane's multinomial minibatches are read from, fixed for
    the chunk, runs axis last: with C_j draws of a category ≥ j (`optim.tail_counts`), a
    step's moments are (B·first + Σ_j C_j steps_j) / B, the five `SideMoments` stacked."""

    thresholds: jax.Array  # (m - 1, lanes): `optim.multinomial_thresholds`
    first: jax.Array  # (2, 5, lanes): the moments of point 0 alone (`point_moments`)
    steps: jax.Array  # (m - 1, 2, 5, lanes): point j's alone minus point j - 1's


def draw_table(data: WeightedData) -> DrawTable:
    """`DrawTable` of one run's data (no lanes axis)."""
    alone = jnp.stack(point_moments(data), -1)  # (m, 2, 5)
    return DrawTable(multinomial_thresholds(data.weights), alone[0], alone[1:] - alone[:-1])


class Stepped(NamedTuple):
    """`deferred_steps`' result; leading runs axis on every field."""

    c: jax.Array  # (runs,) the output bias after the steps
    c_velocity: jax.Array  # (runs,) its heavy-ball velocity (0 without momentum)
    state: Deferred  # Φ_t and Σ_t after the steps
    kink: jax.Array  # (runs,) max over the steps of max_i |b_i/a_i|
    exact: jax.Array  # (runs,) no tracked a_i changed sign and the irregular ones fit
    end: ChunkEnd


def deferred_steps(
    params: Params,
    state: Deferred,
    moments: SideMoments,
    step_size,
    alpha,
    num_steps,
    *,
    optimizer: Optimizer = GD,
    velocity: Params | None = None,
    noise: Noise | None = None,
    block: int = 64,
    unroll: int = 1,
    num_blocks=None,
    kernel: str = "xla",
) -> Stepped:
    """`num_steps` steps (an int or a traced int32; an int for the Pallas kernel) of GD,
    SGD or heavy ball (`HEAVY_BALL`) of a batch of 1-D runs under fixed activation
    patterns, in O(1) per run and step (plus the minibatch draw):
    `params` (and the heavy ball's `velocity`) are the reference z_i of `state` (only c,
    its velocity and the tracked neurons are read), every argument has a leading runs
    axis. `moments` are the data's (full batch); a stochastic `optimizer` draws each
    step's minibatch from `noise` instead, as the general path does. The reference
    parameters stay as they are. A run is not exact when some tracked a_i changed sign
    (the sides moved) or it has too many irregular neurons: the engine then trains that
    chunk again on an exact path. The tracked neurons' kink margins in the certificate
    bound all others' (the margin of a_i(0)·v(q) is |a_i(0)| times a concave function of
    q while sign a_i holds).

    The steps go through the runs in blocks of `block` (they must divide the batch): O(1)
    per step makes the per-step state tiny, and on a CPU it should stay in cache; only the
    first `num_blocks` blocks (a traced count; default all) take steps, the others keep
    Φ = I. The work once per chunk (the tracked neurons in, the Grams and Φ_t out) is done
    for the whole batch at once, outside the loop over blocks. `unroll` steps go in one
    iteration of the compiled loop (an accelerator launches each iteration's kernels,
    whatever the block). `kernel="pallas"` does the steps of all the blocks in one Pallas
    kernel instead (`gdrelu.kernel`, full-batch GD only; "interpret": the same in Pallas'
    interpret mode), and `kernel="native"` in one C loop on a CPU (`gdrelu.native`,
    `kernel_trains`).
    """
    runs = params.c.shape[0]
    block = _checked_block(runs, block, optimizer, noise, kernel)
    carry, fixed = _chunk_start(params, state, moments, step_size, velocity, noise, optimizer)
    count = runs // block if num_blocks is None else num_blocks
    steps = (alpha, num_steps, optimizer, unroll)
    phi, c, tracked, kink, moved, c_velocity = _stepped_blocks(
        carry, fixed, steps, block, count, kernel
    )
    new, end = _chunk_end(state, fixed[0], phi, tracked)
    return Stepped(c, c_velocity, new, kink, state.fits & ~moved, end)


def _stepped_blocks(carry, fixed, steps, block: int, count, kernel: str):
    """The carry after the steps of the first `count` blocks of `block` runs: XLA's loop
    over the blocks, one Pallas kernel or the C loop (`kernel`); steps = (alpha, num_steps,
    optimizer, unroll)."""
    alpha, num_steps, optimizer, unroll = steps
    if kernel == "native":
        from gdrelu.native import native_steps

        momentum = HEAVY_BALL[optimizer.name]
        start = carry if momentum is not None else carry[:5]
        noise, draws = None, None
        if optimizer.stochastic:
            key, step = fixed[5].key, fixed[5].step
            noise, draws = (key, step, *fixed[6]), optimizer.batch_size
        active = count * block
        stepped = native_steps(start, fixed[:5], alpha, num_steps, active, momentum, noise, draws)
        return stepped if momentum is not None else (*stepped, carry[5])
    if kernel != "xla":
        interpret = kernel == "interpret"
        stepped = kernel_steps(
            carry[:5], fixed[:5], alpha, num_steps, count * block, interpret=interpret
        )
        return (*stepped, carry[5])

    def lanes(tree, start):
        return jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, start, block, -1), tree)

    def one_block(i, carry):
        start = i * block
        done = _block_steps(*lanes((carry, fixed), start), alpha, num_steps, optimizer, unroll)
        put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=-1)
        return jax.tree.map(put, carry, done)

    return jax.lax.fori_loop(0, count, one_block, carry)


def _checked_block(runs: int, block: int, optimizer: Optimizer, noise, kernel: str) -> int:
    """The block size of `deferred_steps`, its arguments checked."""
    block = min(block, runs)
    if runs % block:
        raise ValueError(f"{runs} runs do not split into blocks of {block}")
    if not propagates(optimizer):
        raise ValueError(f"the propagator trains {sorted(HEAVY_BALL)}, not {optimizer.name!r}")
    if optimizer.stochastic and noise is None:
        raise ValueError(f"sampler {optimizer.sampler!r} needs the minibatch noise")
    check_kernel_trains(kernel, optimizer)
    return block


def check_kernel_trains(kernel: str, optimizer: Optimizer, dtype=None) -> None:
    """ValueError unless `kernel` can take `optimizer`'s steps (`kernel_trains`) on runs
    of `dtype` (None: not checked; the C loop steps float64 runs only)."""
    adam = (
        kernel == "native"
        and native_general.is_adam(optimizer)
        and native_general.trains(optimizer)
    )
    if not (kernel_trains(kernel, optimizer) or adam):
        what = (
            "full batches or multinomial minibatches of 2^k draws on the propagator (Adam, on "
            "the general path: of any size)"
            if kernel == "native"
            else "full-batch GD"
        )
        batches = f" with {optimizer.sampler} minibatches" if optimizer.stochastic else ""
        raise ValueError(f"kernel {kernel!r} trains {what} only, not {optimizer.name!r}{batches}")
    if kernel == "native" and dtype is not None and jnp.dtype(dtype) != jnp.float64:
        raise ValueError(f"kernel 'native' steps float64 runs, not {jnp.dtype(dtype)}")


def _chunk_start(params: Params, state: Deferred, moments, step_size, velocity, noise, optimizer):
    """The loop's carry (Φ = I, c, the tracked z_i at the chunk's start, max kink, moved,
    c's velocity) and fixed inputs (Σ_t, sides and realness of the tracked neurons,
    moments, h, noise, the multinomial sampler's `DrawTable` or None), the runs axis last
    (vector lanes). Tiny batched products are written as sums: as dots they are slow on
    CPUs."""
    runs, dtype = params.c.shape[0], params.c.dtype
    size = state.phi.shape[-1]
    reference = neuron_vectors(params, velocity)  # (runs, n, D)
    tracked = jnp.take_along_axis(reference, state.tracked[..., None], 1)  # (runs, T, D)
    tracked_plus = tracked[..., 0] > 0
    phi_t = jnp.where(tracked_plus[..., None, None], state.phi[:, :1], state.phi[:, 1:])
    tracked = jnp.sum(phi_t * tracked[..., None, :], -1)
    table = None
    if noise is not None:
        if optimizer.sampler == "multinomial":  # the table replaces the data
            table = jax.vmap(draw_table, out_axes=-1)(noise.data)
            noise = noise._replace(data=None)
        noise = jax.tree.map(lambda v: jnp.moveaxis(v, 0, -1), noise)
    fixed = (
        state.grams.transpose(1, 2, 3, 0),  # Σ_t, (2, D, D, runs)
        tracked_plus.T,
        state.tracked_real.T,
        SideMoments(*(v.T for v in moments)),  # (2, runs): data side s = +, -
        jnp.broadcast_to(step_size, (runs,)),
        noise,
        table,
    )
    eye = jnp.broadcast_to(jnp.eye(size, dtype=dtype)[None, :, :, None], (2, size, size, runs))
    zeros = jnp.zeros((runs,), dtype)
    c_velocity = zeros if velocity is None else velocity.c
    carry = (eye, params.c, tracked.transpose(2, 1, 0), zeros, jnp.zeros((runs,), bool), c_velocity)
    return carry, fixed


def _chunk_end(state: Deferred, grams, phi, tracked) -> tuple[Deferred, ChunkEnd]:
    """The state after a chunk of propagators `phi` (2, D, D, runs): Σ_t ← Φ_t Σ_t Φ_tᵀ,
    Φ_t accumulated, and what the checks read (the θ parts: Σ_t[:3, :3], tracked θ_i)."""
    left = jnp.sum(phi[:, :, :, None] * grams[:, None], 2)  # ΦΣ, (2, D, D, runs)
    new_grams = jnp.sum(left[:, :, None] * phi[:, None], 3).transpose(3, 0, 1, 2)
    old_phi = state.phi.transpose(1, 2, 3, 0)
    new_phi = jnp.sum(phi[:, :, :, None] * old_phi[:, None], 2).transpose(3, 0, 1, 2)
    end = ChunkEnd(
        grams=new_grams[:, :, :3, :3],
        witnesses=tracked[:3].transpose(2, 1, 0),
        real=state.tracked_real,
    )
    return state._replace(phi=new_phi, grams=new_grams), end


def _pair(alpha, first, second):
    """`kernel.coupled`, stacked: the coupling's two sides along a new first axis."""
    return jnp.stack(coupled(alpha, first, second))


def _sum_over(size, term):
    """term(0) + … + term(size - 1): a sum over a small axis written out, so that a step is
    elementwise over the runs (reductions would split it into several kernels on a GPU)."""
    return functools.reduce(lambda total, j: total + term(j), range(1, size), term(0))


def _minibatch_moments(optimizer: Optimizer, noise: Noise, table, t, words=None) -> SideMoments:
    """The side moments of step t's minibatch of every lane, runs axis last: (2, lanes)
    each. The multinomial sampler's from the step's `words` (draws, lanes) and the lanes'
    `DrawTable`, O(B·m) with no counts; the epoch sampler's from its batch weights
    (`optim.batch_weights`, the general path's draw)."""
    if table is not None:
        tails = tail_counts(words, table.thresholds)  # (m - 1, lanes)
        draws = jnp.asarray(optimizer.batch_size, tails.dtype)
        steps = _sum_over(tails.shape[0], lambda j: tails[j] * table.steps[j])
        return SideMoments(*jnp.moveaxis((draws * table.first + steps) / draws, 1, 0))

    def one(data, key, step):
        key = jax.random.wrap_key_data(key)
        weights = batch_weights(optimizer, data.weights, key, step + t)
        return side_moments(data._replace(weights=weights))

    moments = jax.vmap(one, in_axes=-1)(*noise)
    return SideMoments(*(v.T for v in moments))


def _gradient_rows(rows, g1, g0):
    """M z for the rows (a, b, w) of a neuron vector or of Φ_t: ∇_θ L = (G1 w, G0 w,
    G1 a + G0 b) (`fastpath`), with g1, g0 of the neuron's side."""
    a, b, w = rows
    return (g1 * w, g0 * w, g1 * a + g0 * b)


def _optimizer_step(rows, g1, g0, h, momentum):
    """GD (θ ← θ - h ∇) or heavy ball (v ← μ v + ∇, θ ← θ - h v, as optax's sgd) on the
    rows (θ[, v]) of neuron vectors or of Φ_t."""
    if momentum is None:
        return tuple(r - g for r, g in zip(rows, _gradient_rows(rows, h * g1, h * g0), strict=True))
    gradient = _gradient_rows(rows[:3], g1, g0)
    velocity = tuple(momentum * v + g for v, g in zip(rows[3:], gradient, strict=True))
    return (*(r - h * v for r, v in zip(rows[:3], velocity, strict=True)), *velocity)


def _block_steps(carry, fixed, alpha, num_steps, optimizer: Optimizer, unroll=1):
    """`num_steps` steps of one block from carry = (Φ_t, c, tracked, kink, moved, c's
    velocity), runs axis last: the same, after the steps."""
    grams, tracked_plus, real, moments, h, noise, table = fixed
    momentum = HEAVY_BALL[optimizer.name]
    size = grams.shape[1]

    def body(carry, t, words):
        phi, c, tracked, kink, moved, c_velocity = carry  # phi: Φ_t, (2, D, D, runs)
        stochastic = optimizer.stochastic
        step_moments = (
            _minibatch_moments(optimizer, noise, table, t, words) if stochastic else moments
        )
        u = _sum_over(size, lambda j: grams[:, :, j] * phi[:, 2, j][:, None])  # Σ_t Φ_t[w]ᵀ
        wa = _sum_over(size, lambda j: phi[:, 0, j] * u[:, j])  # Σ_{i on t} w_i a_i
        wb = _sum_over(size, lambda j: phi[:, 1, j] * u[:, j])
        slope, level = _pair(alpha, wa[0], wa[1]), c + _pair(alpha, wb[0], wb[1])
        r0, r1 = residual_moments(level, slope, step_moments)
        g1 = _pair(alpha, r1[0], r1[1])[:, None]  # per neuron side t
        g0 = _pair(alpha, r0[0], r0[1])[:, None]
        phi = jnp.stack(_optimizer_step(tuple(jnp.moveaxis(phi, 1, 0)), g1, g0, h, momentum), 1)
        gc = r0[0] + r0[1]
        if momentum is None:
            c = c - h * gc
        else:
            c_velocity = momentum * c_velocity + gc
            c = c - h * c_velocity
        t1 = jnp.where(tracked_plus, g1[0], g1[1])
        t0 = jnp.where(tracked_plus, g0[0], g0[1])
        tracked = jnp.stack(_optimizer_step(tuple(tracked), t1, t0, h, momentum))
        ratio = jnp.where(real, jnp.abs(tracked[1] / tracked[0]), 0.0)
        flipped = real & ((tracked[0] > 0) != tracked_plus)
        kink = functools.reduce(jnp.maximum, ratio, kink)
        moved = functools.reduce(jnp.logical_or, flipped, moved)
        return (phi, c, tracked, kink, moved, c_velocity), None

    words_for = (
        words_ahead(optimizer, noise.key, noise.step, lanes_axis=-1) if noise is not None else None
    )
    return scan_steps(body, carry, num_steps, unroll, words_for)
