"""The general path's chunk as one native loop on a CPU (kernel="native"): GD, SGD, heavy
ball and Adam.

XLA's loop of the general path (`engine.paths._trained`) passes over each run's (m, n)
preactivations in about 40 small operations per step, each a round trip through memory:
the whole cost of Adam's steps (Adam never takes the propagator), and of the other
optimizers' redos and general blocks (the runs whose kinks reached the data).
`native_src/general.c` does the same step, LANES runs per vector, a run's neurons in L1
or L2 for all the steps of a chunk: the multinomial minibatch (the same threefry words as
`optim.multinomial_words`), the loss and activation pattern of θ_t, its gradient, the
optimizer's update (optax's SGD, with momentum μ, or `optim.scale_by_adam`), the largest
kink, and the events the general path watches (the first pattern change, the first loss
below (1 - ε) L_lin, the neurons that changed pattern or side).

Its sums over the points and neurons run in another order than XLA's, so a run's bits are
not those of XLA's loop: the parameters agree with XLA's to 1e-10 relative over 300 steps
(and with the optimizers written out in NumPy to 1e-12 over a chunk), and a run whose
trajectory is chaotic parts from XLA's later (tests/test_native_general.py). So this loop
is never chosen by "auto": it is kernel "native" by name (`simulate(kernel="native")`,
$GDRELU_PROPAGATOR_KERNEL), and the results record it ("adam-native" for Adam,
"general-native" for the others). It steps float64 runs of 1-D data with at most 63
points (a neuron's pattern is a bit mask), in either parameterization, with ReLU or
LeakyReLU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import native
from gdrelu.detectors import ESCAPE_MARGIN
from gdrelu.model import Params
from gdrelu.optim import (
    MOMENTUM,
    Optimizer,
    is_named,
    multinomial_thresholds,
    velocity,
    with_velocity,
)

MAX_POINTS = 63  # the C loop's MAX_POINTS
MODES = {"gd": 0, "sgd": 0, "momentum": 1, "adam": 2}  # the C loop's PLAIN, HEAVY_BALL, ADAM


def is_adam(optimizer: Optimizer) -> bool:
    """Whether `optimizer` is gdrelu's Adam (`optim.scale_by_adam`, β = (0.9, 0.999), ε =
    1e-8, the run's step size as learning rate), whatever its sampler."""
    return optimizer.name == "adam" and is_named(optimizer)


def trains(optimizer: Optimizer) -> bool:
    """Whether the C loop takes `optimizer`'s steps: one of gdrelu's named optimizers
    (`optim.is_named`) with full batches or multinomial minibatches (of any size B)."""
    return is_named(optimizer) and optimizer.sampler in ("full", "multinomial")


def kernel_name(optimizer: Optimizer) -> str:
    """What a run directory records for `optimizer`'s steps on this loop: "adam-native"
    for Adam (as since the loop was Adam's alone), "general-native" for the others."""
    return "adam-native" if is_adam(optimizer) else "general-native"


def check_requested(kernel: str, optimizer: Optimizer, dimension: int, points: int, dtype):
    """ValueError where `kernel` "native" is asked of a named optimizer (`optim.is_named`) that
    the C loop cannot train (`trains`, `check_trains`), before anything compiles, or where
    the loop cannot be built here (`native.NativeUnavailable`, with the reason: it is built
    now, not at the first general block, which may come after results were written);
    nothing for other kernels and optimizers (the loop does not take their steps)."""
    if kernel != "native" or not is_named(optimizer):
        return
    if not trains(optimizer):
        raise ValueError(
            f"kernel 'native' trains {optimizer.name} with full batches or multinomial "
            f"minibatches, not {optimizer.sampler} minibatches"
        )
    check_trains(dimension, points, dtype)
    native.general_library()


def check_trains(dimension: int, points: int, dtype) -> None:
    """ValueError unless the C loop can step runs of `dtype` on `points` training points of
    `dimension`: 1-D, at most `MAX_POINTS` of them, float64."""
    if dimension != 1:
        raise ValueError(f"kernel 'native' trains on 1-D data, not {dimension}-D")
    if points > MAX_POINTS:
        raise ValueError(f"kernel 'native' trains on at most {MAX_POINTS} points, not {points}")
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


def _state_rows(optimizer: Optimizer, opt_state, runs: int):
    """(mu, nu, count) of the C loop from `opt_state`: Adam's moments and count, the heavy
    ball's velocity, or one row of zeros for each where the optimizer has none."""
    none = jnp.zeros((1, runs))
    if is_adam(optimizer):
        adam = opt_state[0]
        return _rows(adam.mu), _rows(adam.nu), adam.count[None].astype(jnp.float64)
    if optimizer.name == "momentum":
        return _rows(velocity(opt_state)), none, none
    return none, none, none


def _opt_state(optimizer: Optimizer, opt_state, mu, nu, count, n: int):
    """`opt_state` with the C loop's (mu, nu, count) back in it (`_state_rows`)."""
    if is_adam(optimizer):
        adam, *rest = opt_state
        count = count[0].astype(adam.count.dtype)
        return (adam._replace(count=count, mu=_params(mu, n), nu=_params(nu, n)), *rest)
    if optimizer.name == "momentum":
        return with_velocity(opt_state, _params(mu, n))
    return opt_state


def general_chunk(state, data, step_size, alpha, num_steps, optimizer: Optimizer, active=None):
    """`num_steps` steps (an int or traced) of `optimizer` (`trains`) on a batch of runs
    (`engine.state.RunState`, data with a leading runs axis), as the vmapped
    `engine.paths._trained`: (state, kink, first pattern change, first loss below L_lin,
    changed (runs, n)). Only the first `active` runs step (an int or traced; None: all),
    rounded up to a lane group (`native.LANES`); the others keep their state, with no
    event and no kink."""
    if not is_named(optimizer):  # for callers of the path itself; `simulate` refuses earlier
        raise ValueError(
            f"kernel 'native' trains gdrelu's gd, sgd, momentum and adam, not {optimizer.name!r}"
        )
    check_requested("native", optimizer, *data_shape(data.x), state.params.c.dtype)
    target = native.general_registered()
    params, scaling = state.params, state.scaling
    runs, n = params.a.shape
    never = jnp.full((1, runs), -1.0)
    carry = [
        _rows(params),
        *_state_rows(optimizer, state.opt_state, runs),
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
    draws = optimizer.batch_size if stochastic else 0
    mode = MODES[optimizer.name]
    settings = (alpha, num_steps, draws, runs if active is None else active, mode, MOMENTUM)
    stepped = native.lanes_call(target, carry, fixed, dtypes, settings)
    theta, mu, nu, count, kink, first, below, flags = (v[:, :runs] for v in stepped)
    opt_state = _opt_state(optimizer, state.opt_state, mu, nu, count, n)
    state = state._replace(params=_params(theta, n), opt_state=opt_state)
    as_step = state.step.dtype
    return state, kink[0], first[0].astype(as_step), below[0].astype(as_step), flags.T > 0.5
