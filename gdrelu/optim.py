"""Optimizers of the paper (GD, SGD, heavy-ball momentum, Adam) through optax.

An `Optimizer` pairs an optax transformation, built from a run's step size h (a traced
per-run scalar, so a sweep over step sizes compiles once), with the sampler that picks
the weights of each step's loss ½ Σ_j q_j (f(x_j) - y_j)²:

- "full": q = p, the run's weights (GD, full-batch momentum and Adam);
- "multinomial": the paper's SGD: q = counts / B of B draws from p, fresh each step
  (`multinomial_counts`: B categorical draws by inverse CDF, O(B·m) with no rejection
  loop, so vmapped runs all take the same few operations);
- "epoch": epoch-wise reshuffled minibatches of B of the m points (the last m mod B points
  of each permutation are left out), q_j = p_j m / B on the batch: an unbiased estimate
  of the full loss, which for uniform p is the minibatch mean.

The multinomial sampler draws step t's batch from threefry counters t·B' + k of the run's
key, the epoch sampler epoch e's permutation from fold_in(key, e), so a run's noise depends
only on its key and the step count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.extend.random import threefry_2x32

from gdrelu.numbers import is_integer

SAMPLERS = ("full", "multinomial", "epoch")
MOMENTUM = 0.9  # heavy ball with 0.9 (docs/theory.md, "Section 10")


def _gd(step_size):
    return optax.sgd(step_size)


def _momentum(step_size):
    return optax.sgd(step_size, momentum=MOMENTUM)


def _adam(step_size):
    return optax.chain(scale_by_adam(), optax.scale_by_learning_rate(step_size))


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """`optax.scale_by_adam` (ε outside the root, no ε inside, optax's state) with each bias
    correction a product by its reciprocal, m̂ = m · (1/(1 - β₁ᵗ)) and v̂ = v · (1/(1 -
    β₂ᵗ)), where optax divides every entry by 1 - βᵗ. XLA's CPU compiler rewrites optax's
    division into this product in some pipelines (one device) and not in others (runs
    sharded over several), so with optax's Adam a run's bits depended on the device count
    (docs/fidelity.md, "Adam")."""
    optax_adam = optax.scale_by_adam(b1, b2, eps)

    def update(updates, state, params=None):
        del params
        mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        first, second = 1 - b1**count, 1 - b2**count  # optax's 1 - βᵗ, in its dtype

        def scaled(m, v):
            m_hat = m * (1 / first.astype(m.dtype))
            v_hat = v * (1 / second.astype(v.dtype))
            return m_hat / (jnp.sqrt(v_hat) + eps)

        updates = jax.tree.map(scaled, mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(optax_adam.init, update)


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A user's transformation with its own learning rate: the step size is not used."""

    transformation: optax.GradientTransformation

    def __call__(self, step_size):
        del step_size
        return self.transformation


class Optimizer(NamedTuple):
    """How a run trains: `transformation(h)` and the sampler of each step's batch.

    Hashable, so that it can be a static argument: equal optimizers share compiled code.
    `certificate` is True only for full-batch GD, the setting in which the paper's
    stopping rules ("stuck", "degenerate") are proofs.
    """

    name: str
    transformation: Callable[[jax.Array], optax.GradientTransformation]
    sampler: str = "full"
    batch_size: int = 16
    certificate: bool = False
    uses_step_size: bool = True

    @property
    def stochastic(self) -> bool:
        return self.sampler != "full"


# name -> (transformation of h, default sampler)
NAMED = {
    "gd": (_gd, "full"),
    "sgd": (_gd, "multinomial"),
    "momentum": (_momentum, "full"),
    "adam": (_adam, "full"),
}


def is_named(optimizer: Optimizer) -> bool:
    """Whether `optimizer` is one of `NAMED` (GD, SGD, heavy ball with μ = `MOMENTUM`,
    Adam) with the run's step size as learning rate, whatever its sampler."""
    named = NAMED.get(optimizer.name)
    return named is not None and optimizer.transformation is named[0]


def _check_transformation(name: str, made) -> None:
    """Refuse a function h -> ? whose result has no optax `init` and `update`."""
    if not (callable(getattr(made, "init", None)) and callable(getattr(made, "update", None))):
        raise ValueError(
            f"optimizer: {name}(h) returned {type(made).__name__}, not an "
            "optax.GradientTransformation"
        )


def get_optimizer(
    optimizer="gd", *, sampler: str | None = None, batch_size: int | None = None
) -> Optimizer:
    """An `Optimizer` from a name in `NAMED`, a function h -> optax.GradientTransformation,
    a `optax.GradientTransformation` (used with its own learning rate) or an `Optimizer`.

    `sampler` (default: "multinomial" for "sgd", "full" otherwise) and `batch_size` B
    (default 16) choose each step's batch; "gd" is full-batch by definition. An
    `Optimizer` has its own: a `sampler` or `batch_size` other than its is refused.
    """
    if isinstance(optimizer, Optimizer):
        for field, value in (("sampler", sampler), ("batch_size", batch_size)):
            if value is not None and value != getattr(optimizer, field):
                raise ValueError(
                    f"{field}: {value!r}, but the Optimizer given has {field} "
                    f"{getattr(optimizer, field)!r}: set it in get_optimizer"
                )
        return optimizer
    batch_size = 16 if batch_size is None else batch_size
    if isinstance(optimizer, str):
        if optimizer not in NAMED:
            raise ValueError(f"optimizer: {optimizer!r} is not one of {', '.join(NAMED)}")
        transformation, default = NAMED[optimizer]
        name, uses_step_size = optimizer, True
    elif isinstance(optimizer, optax.GradientTransformation):
        transformation, default, name, uses_step_size = _Fixed(optimizer), "full", "custom", False
    elif callable(optimizer):
        transformation, default = optimizer, "full"
        name, uses_step_size = getattr(optimizer, "__name__", "custom"), True
        _check_transformation(name, optimizer(1.0))
        if name in NAMED:  # not the named optimizer: no certificate, no fast path of its own
            name = f"custom {name}"
    else:
        raise ValueError(f"optimizer: {optimizer!r} is neither a name nor an optax transformation")
    sampler = sampler or default
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if name == "gd" and sampler != "full":
        raise ValueError("sampler: 'gd' is full-batch; use optimizer='sgd' for minibatches")
    if not is_integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} is not a positive integer")
    return Optimizer(
        name,
        transformation,
        sampler,
        int(batch_size),
        certificate=name == "gd",
        uses_step_size=uses_step_size,
    )


def _is_trace(node) -> bool:
    return isinstance(node, optax.TraceState)


def velocity(opt_state):
    """The heavy-ball velocity (optax's trace, a Params) in `opt_state`, or None."""
    traces = [node for node in jax.tree.leaves(opt_state, is_leaf=_is_trace) if _is_trace(node)]
    return traces[0].trace if traces else None


def with_velocity(opt_state, new):
    """`opt_state` with its heavy-ball velocity replaced by `new`."""
    return jax.tree.map(
        lambda node: node._replace(trace=new) if _is_trace(node) else node,
        opt_state,
        is_leaf=_is_trace,
    )


def batch_weights(
    optimizer: Optimizer, weights: jax.Array, key: jax.Array, step, words=None
) -> jax.Array:
    """Weights q (m,) of step `step`'s loss for one run with data weights p = `weights`
    (zero off the minibatch; `minibatch` gathers the epoch sampler's batch instead);
    `words`: the step's multinomial words if drawn already (`multinomial_words`)."""
    if optimizer.sampler == "full":
        return weights
    if optimizer.sampler == "multinomial":
        if words is None:
            counts = multinomial_counts(key, optimizer.batch_size, weights, step)
        else:
            counts = counts_from_words(words, weights)
        return counts / jnp.asarray(optimizer.batch_size, weights.dtype)
    batch = epoch_batch(optimizer, weights.shape[0], key, step)
    picked = jnp.zeros_like(weights).at[batch].set(1.0)
    return picked * weights * (weights.shape[0] / optimizer.batch_size)


def multinomial_steps(draws: int) -> int:
    """How many steps of `draws` draws one key's 2^32 counters cover (`multinomial_counts`):
    a run may not take more, or its minibatches would repeat."""
    return 2**32 // (draws + draws % 2)


def check_multinomial_steps(optimizer: Optimizer, steps: int) -> None:
    """ValueError if `steps` steps of `optimizer`'s multinomial minibatches would run out of
    counters (`multinomial_steps`)."""
    if optimizer.sampler != "multinomial":
        return
    if multinomial_steps(optimizer.batch_size) < 1:
        raise ValueError(
            f"batch_size: {optimizer.batch_size} multinomial draws a step exceed one run's 2^32 "
            "counters"
        )
    if steps > multinomial_steps(optimizer.batch_size):
        raise ValueError(
            f"max_checks: {steps} steps of {optimizer.batch_size} multinomial draws exceed the "
            f"{multinomial_steps(optimizer.batch_size)} steps one run's counters cover"
        )


def multinomial_counts(key: jax.Array, draws: int, weights: jax.Array, step=0) -> jax.Array:
    """Counts (m,) of `draws` i.i.d. draws from the categorical distribution ∝ `weights`
    (m,), as `weights.dtype`: the `step`-th such batch of `key`.

    Draw k takes K random bits u_k = threefry2x32(key, step·B' + k) (B' = `draws` rounded
    up to even; K = 32, or 24 for float32 so that u_k is exact in it) and is the category
    j with T_{j-1} ≤ u_k < T_j, T_j = ⌊2^K Σ_{i≤j} p_i / Σp⌋: each point is drawn with its
    probability to within 2^-K, and a point of weight 0 never. Counter-based, so a step
    costs B'/2 threefry blocks and no key derivation; O(draws·m), with none of the
    rejection loops of `jax.random.multinomial`'s binomials, which under vmap run every
    run to the slowest one."""
    words = multinomial_words(jax.random.key_data(key), draws, step)[0]
    return counts_from_words(words, weights)


def multinomial_words(key_data: jax.Array, draws: int, step, num_steps: int = 1) -> jax.Array:
    """The 32-bit words (num_steps, draws) of the multinomial draws of steps `step`, …,
    `step` + num_steps - 1 of one run (`multinomial_counts`; key_data (2,) uint32).

    threefry2x32 maps counter pairs to word pairs; one step's B' counters pair as
    (s·B' + k, s·B' + B'/2 + k), k < B'/2, and so they do here for every step, so that
    one call for many steps (the loops draw a block of steps at once, `scan_steps`: a
    long vector of counters runs several times faster than a step's few) gives each step
    its words bit for bit."""
    even = draws + draws % 2
    half = even // 2
    first = jnp.asarray(step, jnp.uint32) + jnp.arange(num_steps, dtype=jnp.uint32)
    low = first[:, None] * jnp.uint32(even) + jnp.arange(half, dtype=jnp.uint32)
    words = threefry_2x32(key_data, jnp.concatenate([low.ravel(), (low + half).ravel()]))
    pairs = words.reshape(2, num_steps, half)
    return jnp.concatenate([pairs[0], pairs[1]], axis=1)[:, :draws]


def counts_from_words(words: jax.Array, weights: jax.Array) -> jax.Array:
    """Counts (m,) of the draws whose 32-bit words are `words` (draws,), from the
    categorical distribution ∝ `weights` (m,) (`multinomial_counts`): differences of
    `tail_counts`, C_0 = draws, C_m = 0."""
    every = jnp.asarray([words.shape[0]], weights.dtype)  # C_0
    none = jnp.zeros_like(every)  # C_m
    tails = jnp.concatenate([every, tail_counts(words, multinomial_thresholds(weights)), none])
    return tails[:-1] - tails[1:]


def multinomial_thresholds(weights: jax.Array) -> jax.Array:
    """(m - 1,) thresholds T'_j, j = 1, …, m - 1, of the categorical distribution ∝
    `weights` (m,), as weights.dtype: draw k picks a category ≥ j iff T'_j ≤ u_k (u_k its
    word's K leading bits, `multinomial_counts`). T'_j = T_{j-1}, which is nondecreasing
    in j, or +inf past the last category of positive weight (T_j may round below 2^K)."""
    dtype = weights.dtype
    cdf = jnp.cumsum(weights)
    thresholds = jnp.floor(cdf[:-1] * (2.0 ** _draw_bits(dtype) / cdf[-1]))
    last = weights.shape[0] - 1 - jnp.argmax(weights[::-1] > 0)
    return jnp.where(jnp.arange(1, weights.shape[0]) <= last, thresholds, jnp.inf)


def tail_counts(words: jax.Array, thresholds: jax.Array) -> jax.Array:
    """C_j = #{k: draw k picks a category ≥ j}, j = 1, …, m - 1 (`multinomial_thresholds`),
    as thresholds.dtype: words (draws, ...) and thresholds (m - 1, ...) share any trailing
    axes (lanes); (m - 1, ...)."""
    dtype = thresholds.dtype
    bits = (words >> jnp.uint32(32 - _draw_bits(dtype))).astype(dtype)
    tails = [jnp.sum(threshold <= bits, axis=0, dtype=dtype) for threshold in thresholds]
    return jnp.stack(tails) if tails else jnp.zeros((0, *bits.shape[1:]), dtype)


def _draw_bits(dtype) -> int:
    """K, the leading bits of a word that a draw reads: 32, or fewer so that u_k is an
    exact integer in `dtype` (24 for float32)."""
    return min(32, jnp.finfo(dtype).nmant + 1)


NOISE_BLOCK = 64  # most steps whose multinomial words a loop draws at once (`scan_steps`)


def noise_block(unroll: int = 1) -> int:
    """Steps whose multinomial words `scan_steps` draws at once: `NOISE_BLOCK`, rounded
    down to a multiple of `unroll` (at least `unroll`)."""
    return max(unroll, NOISE_BLOCK - NOISE_BLOCK % unroll)


def scan_steps(body, carry, num_steps, unroll: int = 1, words_for=None):
    """The carry after steps t = 0, 1, …, num_steps - 1 of body(carry, t, words) ->
    (carry, None). `num_steps` is data (an int or a traced int32), so one compiled loop
    takes every step count; `unroll` steps go in one iteration of the loop. With
    `words_for(t0, size)`, the multinomial words of steps t0, …, t0 + size - 1 (step axis
    first), the words are drawn for blocks of `noise_block(unroll)` steps and step t gets
    its own (the last block's are drawn whole, its first num_steps mod size taken); without
    it `words` is None."""
    num_steps = jnp.asarray(num_steps, jnp.int32)
    size = unroll if words_for is None else noise_block(unroll)
    done = num_steps // size * size  # the steps of whole blocks
    if words_for is None:

        def group(i, c):
            for s in range(unroll):
                c = body(c, i * unroll + s, None)[0]
            return c

        carry = jax.lax.fori_loop(0, num_steps // size, group, carry)
        step = lambda t, c: body(c, t, None)[0]  # noqa: E731
        return carry if unroll == 1 else jax.lax.fori_loop(done, num_steps, step, carry)

    def block(b, c):
        first = b * size
        words = words_for(first, size)
        step = lambda c, s: body(c, first + s, words[s])  # noqa: E731
        return jax.lax.scan(step, c, jnp.arange(size, dtype=jnp.int32), unroll=unroll)[0]

    def last_block(c):  # its words drawn here, never beside a whole block's
        words = words_for(done, size)
        step = lambda t, c: body(c, t, words[t - done])[0]  # noqa: E731
        return jax.lax.fori_loop(done, num_steps, step, c)

    carry = jax.lax.fori_loop(0, num_steps // size, block, carry)
    return jax.lax.cond(done < num_steps, last_block, lambda c: c, carry)


def words_ahead(optimizer: Optimizer, key_data: jax.Array, step, lanes_axis: int | None = None):
    """`scan_steps`' words_for, (t0, size) -> the multinomial words of steps step + t0, …,
    step + t0 + size - 1: of one run (key_data (2,), step ()), (size, draws); or of the
    lanes along `lanes_axis` (key_data (2, lanes), step (lanes,)), that axis last. None
    unless the multinomial sampler draws the minibatches."""
    if optimizer.sampler != "multinomial":
        return None

    def words_for(t0, size):
        def of(key, first):
            return multinomial_words(key, optimizer.batch_size, first + t0, size)

        if lanes_axis is None:
            return of(key_data, step)
        return jax.vmap(of, in_axes=lanes_axis, out_axes=-1)(key_data, step)

    return words_for


def epoch_batch(optimizer: Optimizer, m: int, key: jax.Array, step) -> jax.Array:
    """Indices (B,) of step `step`'s minibatch: slice `step mod (m // B)` of epoch
    `step // (m // B)`'s permutation of the m points. The permutation is drawn anew at
    every step (O(m log m)): a step's cost is that sort plus the O(B) batch."""
    size = optimizer.batch_size
    if size > m:
        raise ValueError(f"batch_size: {size} exceeds the {m} training points")
    epoch, position = jnp.divmod(step, m // size)
    order = jax.random.permutation(jax.random.fold_in(key, epoch), m)
    return jax.lax.dynamic_slice_in_dim(order, position * size, size)


def minibatch(optimizer: Optimizer, data, key: jax.Array, step, words=None):
    """Step `step`'s loss terms as WeightedData: the epoch sampler's B points gathered (the
    loss and its gradient cost O(B), not O(m); `epoch_batch` sorts m keys), else every
    point with `batch_weights` (`words`: the step's multinomial words, if drawn)."""
    if optimizer.sampler != "epoch":
        weights = batch_weights(optimizer, data.weights, key, step, words)
        return data._replace(weights=weights)
    batch = epoch_batch(optimizer, data.weights.shape[0], key, step)
    scale = data.weights.shape[0] / optimizer.batch_size
    return type(data)(data.x[batch], data.y[batch], data.weights[batch] * scale)
