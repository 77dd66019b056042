"""Adam's chunk on the general path as one native loop on a CPU (kernel="native").

XLA's loop of the general path (`engine.paths._trained`) passes over each run's (m, n)
preactivations in about 40 small operations per step, each a round trip through memory;
with Adam that is the whole cost of a step (Adam never takes the propagator).
`native_src/adam_general.c` does the same step, LANES runs per vector, a run's neurons in
L1 or L2 for all the steps of a chunk: the multinomial minibatch (the same threefry words
as `optim.multinomial_words`), the loss and activation pattern of θ_t, its gradient,
`optim.scale_by_adam`'s update, the largest kink, and the events the general path
watches (the first pattern change, the first loss below (1 - ε) L_lin, the neurons that
changed pattern or side).

Its sums over the points and neurons run in another order than XLA's, so a run's bits are
not those of XLA's loop: the parameters agree with XLA's to 1e-10 relative over 300 steps
(and with Adam written out in NumPy to 1e-12 over a chunk), and a run whose trajectory
is chaotic parts from XLA's later (tests/test_native_adam.py). So this loop is never
chosen by "auto": it is kernel "native" by name (`simulate(kernel="native")`,
$GDRELU_PROPAGATOR_KERNEL), and the results record their kernel ("adam-native"). It
steps float64 runs of 1-D data with at most 63 points (a neuron's pattern is a bit
mask), in either parameterization, with ReLU or LeakyReLU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import native
from gdrelu.detectors import ESCAPE_MARGIN
from gdrelu.model import Params
from gdrelu.optim import NAMED, Optimizer, multinomial_thresholds

MAX_POINTS = 63  # the C loop's MAX_POINTS


def is_adam(optimizer: Optimizer) -> bool:
    """Whether `optimizer` is gdrelu's Adam (`optim.scale_by_adam`, β = (0.9, 0.999), ε =
    1e-8, the run's step size as learning rate), whatever its sampler."""
    return optimizer.name == "adam" and optimizer.transformation is NAMED["adam"][0]


def trains(optimizer: Optimizer) -> bool:
    """Whether the C loop takes `optimizer`'s steps: gdrelu's Adam (`is_adam`) with full
    batches or multinomial minibatches."""
    return is_adam(optimizer) and optimizer.sampler in ("full", "multinomial")


def check_requested(kernel: str, optimizer: Optimizer, dimension: int, points: int, dtype):
    """ValueError where `kernel` "native" is asked of an Adam that the C loop cannot train
    (`trains`, `check_trains`), before anything compiles; nothing for other kernels and
    optimizers (they do not take this loop)."""
    if kernel != "native" or not is_adam(optimizer):
        return
    if not trains(optimizer):
        raise ValueError(
            "kernel 'native' trains Adam with full batches or multinomial minibatches, not "
            f"{optimizer.sampler} minibatches"
        )
    check_trains(dimension, points, dtype)


def check_trains(dimension: int, points: int, dtype) -> None:
    """ValueError unless the C loop can step runs of `dtype` on `points` training points of
    `dimension`: 1-D, at most `MAX_POINTS` of them, float64."""
    if dimension != 1:
        raise ValueError(f"kernel 'native' trains Adam on 1-D data, not {dimension}-D")
    if points > MAX_POINTS:
        most = f"at most {MAX_POINTS} points"
        raise ValueError(f"kernel 'native' trains Adam on {most}, not {points}")
    if jnp.dtype(dtype) != jnp.float64:
        raise ValueError(f"kernel 'native' steps float64 runs, not {jnp.dtype(dtype)}")


def data_shape(x) -> tuple[int, int]:
    """(dimension, points) of a batch's training points x, (runs, m) or (runs, m, d)."""
    return (1 if len(np.shape(x)) == 2 else np.shape(x)[-1]), np.shape(x)[1]


def _rows(params: Params) -> jax.Array:
    """(3n + 1, runs): a, b, w of every neuron, then c."""
    return jnp.concatenate([params.a.T, params.b.T, params.w.T, params.c[None]])


def _params(rows: jax.Array, n: int) -> Params:
    return Params(rows[:n].T, rows[n : 2 * n].T, rows[2 * n : 3 * n].T, rows[3 * n])


def adam_chunk(state, data, step_size, alpha, num_steps, optimizer: Optimizer):
    """`num_steps` steps (an int or traced) of Adam on a batch of runs (`engine.state.
    RunState`, data with a leading runs axis), as the vmapped `engine.paths._trained`:
    (state, kink, first pattern change, first loss below L_lin, changed (runs, n))."""
    check_trains(*data_shape(data.x), state.params.c.dtype)  # for callers of the path itself
    native.registered()  # a missing compiler fails here, with its reason
    params, scaling = state.params, state.scaling
    runs, n = params.a.shape
    adam, *rest = state.opt_state
    never = jnp.full((1, runs), -1.0)
    carry = [
        _rows(params),
        _rows(adam.mu),
        _rows(adam.nu),
        adam.count[None].astype(jnp.float64),
        jnp.zeros((1, runs)),
        never,
        never,
        jnp.zeros((n, runs)),
    ]
    stochastic = optimizer.sampler == "multinomial"
    thresholds = jax.vmap(multinomial_thresholds)(data.weights).T if stochastic else None
    limit = (1.0 - ESCAPE_MARGIN) * state.linear_threshold
    fixed = [
        data.x.T,
        data.y.T,
        data.weights.T,
        step_size[None],
        scaling.a[None],
        scaling.w[None],
        limit[None],
        state.noise_key.T,
        state.step[None],
        jnp.zeros((data.x.shape[-1] - 1, runs)) if thresholds is None else thresholds,
    ]
    dtypes = [np.uint32 if i in (7, 8) else np.float64 for i in range(len(fixed))]  # key, step
    settings = (alpha, num_steps, optimizer.batch_size if stochastic else 0, runs)
    stepped = native.lanes_call(native.ADAM_TARGET, carry, fixed, dtypes, settings)
    theta, mu, nu, count, kink, first, below, flags = (v[:, :runs] for v in stepped)
    adam = adam._replace(
        count=count[0].astype(adam.count.dtype), mu=_params(mu, n), nu=_params(nu, n)
    )
    state = state._replace(params=_params(theta, n), opt_state=(adam, *rest))
    as_step = state.step.dtype
    return state, kink[0], first[0].astype(as_step), below[0].astype(as_step), flags.T > 0.5
