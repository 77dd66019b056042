"""Detectors of the linear regime, valid for every optimizer and input dimension.

docs/theory.md ("Outcome of a run"): a run whose activation pattern on the training points
never changes is, on each group of points that share a pattern, an affine function of
x, so its loss is at least

    L_lin = ½ Σ_groups min_{v} Σ_{j ∈ group} p_j (y_j - v·(x_j, 1))²,

the weighted least-squares error of one affine fit per group of the initial pattern. With
zero biases the groups are the two sides of the origin in 1-D (per-side lines, the
paper's v_opt) and the rays of the star data (lines in |x| per ray); in general they are
the cells of the initial hyperplane arrangement that hold data. A run has escaped the
linear regime if its final loss is below (1 - 1e-6) L_lin or its final pattern groups
the points differently from the initial one ("a kink crossed and stayed crossed"); it is
stuck otherwise. A neuron that only changes side (a_i through 0 with its kink inside the
data, 1-D) changes the pattern but not the groups: the network stays linear per side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdrelu.compiled import jit
from gdrelu.data import WeightedData
from gdrelu.model import STANDARD, Params, Scaling, activation_pattern

ESCAPE_MARGIN = 1e-6  # escaped: final loss below (1 - ESCAPE_MARGIN) L_lin


def _packed(pattern: jax.Array) -> jax.Array:
    """Activation pattern (m, n) bool as (m, ceil(n/32)) uint32 words, for exact sorting."""
    m, n = pattern.shape
    bits = jnp.pad(pattern, ((0, 0), (0, -n % 32))).reshape(m, -1, 32).astype(jnp.uint32)
    return jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def _sorted_groups(pattern: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(group id of each point in sorted order, that order) for a pattern (m, n) bool.

    The points are sorted lexicographically by their packed words with one stable sort of
    m keys per word, last word first (an LSD radix sort in a loop), so the compiled
    program's size does not grow with n."""
    words = _packed(pattern)
    m, num_words = words.shape

    def by_word(k, order):
        word = jax.lax.dynamic_index_in_dim(words, num_words - 1 - k, axis=1, keepdims=False)
        return order[jnp.argsort(word[order], stable=True)]

    order = jax.lax.fori_loop(0, num_words, by_word, jnp.arange(m))
    sorted_words = words[order]
    new = jnp.any(sorted_words[1:] != sorted_words[:-1], axis=-1)
    return jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(new, dtype=jnp.int32)]), order


def pattern_groups(params: Params, x: jax.Array, scaling: Scaling = STANDARD) -> jax.Array:
    """Group id (m,) int of each data point: equal ids iff equal activation patterns."""
    ids, order = _sorted_groups(activation_pattern(params, x, scaling))
    return jnp.zeros_like(ids).at[order].set(ids)


def same_groups(initial: Params, final: Params, x: jax.Array, scaling=STANDARD) -> jax.Array:
    """Whether two networks group the points alike: both partitions have as many groups as
    their common refinement (the partition by the concatenated patterns)."""
    first = activation_pattern(initial, x, scaling)
    second = activation_pattern(final, x, scaling)
    counts = [
        _sorted_groups(pattern)[0][-1]
        for pattern in (first, second, jnp.concatenate([first, second], axis=1))
    ]
    return (counts[0] == counts[2]) & (counts[1] == counts[2])


def _affine_fit_loss(groups: jax.Array, data: WeightedData) -> jax.Array:
    """½ Σ_j p_j r_j² of one weighted affine fit per group (group ids (m,) in [0, m))."""
    x, y, p = data
    features = jnp.concatenate([x.reshape(x.shape[0], -1), jnp.ones((x.shape[0], 1), y.dtype)], 1)
    m = x.shape[0]
    grams = jax.ops.segment_sum(
        p[:, None, None] * features[:, :, None] * features[:, None, :], groups, m
    )
    moments = jax.ops.segment_sum(p[:, None] * features * y[:, None], groups, m)
    coef = jnp.einsum("gij,gj->gi", jnp.linalg.pinv(grams, hermitian=True), moments)
    residual = y - jnp.sum(features * coef[groups], axis=-1)
    return 0.5 * jnp.sum(p * residual * residual)


@jit
def linear_threshold(params: Params, data: WeightedData, scaling: Scaling = STANDARD) -> jax.Array:
    """L_lin of one run at its (initial) parameters: one weighted affine fit per group
    (compiled once per shape, not operation by operation when called eagerly)."""
    return _affine_fit_loss(pattern_groups(params, data.x, scaling), data)


def linear_regime(params: Params, data: WeightedData, scaling: Scaling = STANDARD):
    """(L_lin, within_sides) of one run at its initial parameters. within_sides (1-D): no
    group holds points on both sides of the origin, so the groups refine the two sides and
    a network affine on each side (every kink inside the data-free zone) has a loss of at
    least L_lin; False for d-dim input."""
    groups = pattern_groups(params, data.x, scaling)
    threshold = _affine_fit_loss(groups, data)
    if data.x.ndim > 1:
        return threshold, jnp.zeros((), bool)
    m = data.x.shape[0]
    plus = jax.ops.segment_sum((data.x > 0).astype(jnp.int32), groups, m)
    size = jax.ops.segment_sum(jnp.ones(m, jnp.int32), groups, m)
    return threshold, jnp.all((plus == 0) | (plus == size))


BATCH_RUNS = 64  # most runs per batch
BATCH_ELEMENTS = 2**22  # a batch's (points × neurons) entries, per array of its patterns


def batched_map(fn, args):
    """`fn` over the leading (runs) axis of every leaf of the tuple `args` (data x of
    shape (runs, m) or (runs, m, d), networks of n neurons), vmapped over batches of runs.

    The batch size follows from the shapes only, `BATCH_RUNS` runs or fewer so that a
    batch holds at most `BATCH_ELEMENTS` pattern entries (m·n per run): it bounds the
    memory of wide networks on many points, and every run is computed in a batch of the
    same size whatever the run count (a batch of fewer runs is another program, whose
    pinv rounds otherwise: L_lin moved in its last bits with the memory budget's
    batches). The runs are padded with copies of the last to a whole number of batches,
    so that the compiled program holds one copy of `fn` (`jax.lax.map`'s separate
    remainder batch doubled `initial_state`'s compile time)."""
    leaves = jax.tree.leaves(args)
    runs = leaves[0].shape[0]
    points, width = args[1].x.shape[1], args[0].b.shape[-1]
    size = max(1, min(BATCH_RUNS, BATCH_ELEMENTS // max(1, points * width)))
    pad = -runs % size
    padded = jax.tree.map(lambda v: jnp.concatenate([v, jnp.repeat(v[-1:], pad, 0)]), args)
    out = jax.lax.map(lambda part: fn(*part), padded, batch_size=size)
    return jax.tree.map(lambda v: v[:runs], out)


def below_linear(loss: jax.Array, threshold: jax.Array) -> jax.Array:
    """Whether a training loss is below (1 - ESCAPE_MARGIN) L_lin: out of the linear regime."""
    return loss < (1.0 - ESCAPE_MARGIN) * threshold


def escaped(
    initial: Params, final: Params, data: WeightedData, loss, threshold, scaling=STANDARD
) -> jax.Array:
    """The final classification of one run: True if it left the linear regime."""
    regrouped = ~same_groups(initial, final, data.x, scaling)
    return regrouped | below_linear(loss, threshold)


@jit
def classify(
    initial: Params, final: Params, data: WeightedData, loss, scaling=STANDARD, threshold=None
):
    """Batched over runs (scaling: scalars or (runs,) each): (L_lin at the initial
    parameters, escaped). A `threshold` (runs,) given is taken as L_lin, not recomputed."""
    runs = loss.shape[0]
    scaling = Scaling(*(jnp.broadcast_to(v, (runs,)) for v in scaling))
    if threshold is None:
        threshold = batched_map(linear_threshold, (initial, data, scaling))
    return threshold, jax.vmap(escaped)(initial, final, data, loss, threshold, scaling)
