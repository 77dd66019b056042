"""`simulate`: train every run of a batch until it stops, in four steps (validate the
arguments, place the runs, train chunk by chunk, collect the results).

(The module is not named `simulate`: `gdrelu.engine.simulate` is the function.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu.batched import in_draw_batches
from gdrelu.cache import use_default_cache
from gdrelu.data import WeightedData
from gdrelu.detectors import classify
from gdrelu.engine.checks import (
    CheckInputs,
    ChunkScalars,
    checked_inputs,
    refuse_unusable,
    warn_of_points_at_zero,
)
from gdrelu.engine.chunk import ChunkSettings, exact_chunk
from gdrelu.engine.paths import choose_path
from gdrelu.engine.placement import Layout, own_lanes_at, placed, rearranged
from gdrelu.engine.state import (
    REPORTED,
    STEPS_REPORTED,
    Runs,
    check_step_budget,
    materialized_params,
)
from gdrelu.model import Params, Scaling, active_neurons, padded, scaling_of
from gdrelu.numbers import is_integer, is_real
from gdrelu.optim import Optimizer, check_multinomial_steps, get_optimizer
from gdrelu.outcome import SimulationResult, Status, stop_rules

X64_HINT = 'jax.config.update("jax_enable_x64", True)'


def simulate(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    optimizer="gd",
    parameterization: str = "standard",
    sampler: str | None = None,
    batch_size: int = 16,
    key=None,
    check_every: int = 1000,
    max_checks: int = 1000,
    alpha: float = 0.0,
    validation_weights=None,
    validation: WeightedData | None = None,
    test: WeightedData | None = None,
    early_stopping: bool | None = None,
    min_delta: float = 1e-8,
    patience: int = 10,
    stop_on: tuple[str, ...] | None = None,
    eigenvectors: str = "columns",
    path: str = "auto",
    block: int | None = None,
    redo: int | None = None,
    devices=None,
    kernel: str | None = None,
    on_check: Callable[[int, np.ndarray], None] | None = None,
    classify_width: int | None = None,
) -> SimulationResult:
    """Train every run until it stops, or for `max_checks` checks `check_every` steps apart.

    params, data: a leading runs axis on every field; step_size: (runs,) or a scalar (None for
    an optax transformation with its own learning rate). Runs train in the params' dtype
    (float64 needs `jax_enable_x64`), to which the other inputs are cast. `optimizer`: "gd",
    "sgd", "momentum", "adam", a function h -> optax transformation, or a transformation
    (`optim.get_optimizer`, with `sampler` and `batch_size`); a stochastic sampler needs `key`,
    one key per run (typed, or (runs, 2) key data). `parameterization`: "standard" (He), "ntk".

    The checks and their order are `engine.checks`' (docs/theory.md, "Outcome of a run").
    `stop_on` selects crossed, stuck and degenerate (default: all three for full-batch GD
    on 1-D data in the standard parameterization, none elsewhere); divergence always stops
    a run; `eigenvectors="rows"` is the reference code's certificate. With `early_stopping`
    (default: when `validation_weights` are given) a run stops once its validation loss
    (`validation_weights` on the training points, or held-out `validation` points) has
    not improved by `min_delta` (on the paper code's Σ p r², twice the ½ Σ p r² reported)
    for `patience` checks. Every run reports its best validation loss, that check's step,
    the test loss there, and `gdrelu.detectors`' verdicts (classified at `classify_width`
    neurons). `on_check(k, status)` gets every status after check k.

    `path` ("auto": `engine.choose_path`), `devices` (default: the local ones), `block` and
    `redo` (`placement.blocking_for`) and `kernel` (`placement.propagator_kernel`; default
    $GDRELU_PROPAGATOR_KERNEL, else "auto") choose how the runs train: a fast path redoes
    on the general path every chunk it could not do exactly, so statuses and steps do not
    depend on them (docs/design.md, "Training paths"). The first call in a process turns on
    JAX's persistent compilation cache (`gdrelu.cache`; GDRELU_CACHE_DIR=none: off).
    """
    arguments = dict(locals())  # every argument by name: what the checks and training read
    use_default_cache()
    return _trained(_validated(**arguments), **arguments)


def _trained(
    plan,
    params,
    data,
    step_size,
    *,
    parameterization,
    check_every,
    max_checks,
    alpha,
    validation_weights,
    validation,
    test,
    min_delta,
    patience,
    block,
    redo,
    devices,
    kernel,
    on_check,
    classify_width,
    **_,
) -> SimulationResult:
    """`simulate`'s runs placed on the devices, trained by chunks until every one stopped,
    and their result, once `plan` (`_validated`) settled how."""
    params, data, validation, test = _as_arrays(params, data, validation_weights, validation, test)
    scaling = _scaling(params, parameterization)
    steps = 0.0 if step_size is None else step_size
    inputs, usable, at_zero = checked_inputs(data, _per_run(steps, params), validation, test)
    refuse_unusable(np.asarray(usable), validation_weights is not None)
    if "crossed" in plan.rules:
        warn_of_points_at_zero(np.asarray(at_zero))
    mixed = plan.path == "fixed_pattern"
    runs, inputs, layout = placed(
        params, inputs, plan.noise_key, scaling, plan.optimizer, block, devices, mixed, kernel, redo
    )
    dtype = params.b.dtype
    scalars = ChunkScalars(
        np.asarray(alpha, dtype), np.asarray(min_delta, dtype), np.asarray(patience, np.int32)
    )
    settings = ChunkSettings(check_every, plan.rules, plan.path, plan.optimizer, layout.blocking)
    outcomes = _Outcomes.empty(params)
    _trained_until_stopped(runs, inputs, layout, scalars, settings, max_checks, on_check, outcomes)
    return _result(outcomes, params, data, scaling, plan.rules, classify_width)


class _Plan(NamedTuple):
    """What `simulate` settles from its arguments before anything runs."""

    optimizer: Optimizer
    rules: tuple[str, ...]  # `outcome.stop_rules`, and "held_out" with held-out points
    path: str
    noise_key: jax.Array | None  # (runs, 2) uint32 key data


def _validated(
    params,
    data,
    step_size,
    *,
    optimizer,
    sampler,
    batch_size,
    key,
    parameterization,
    check_every,
    max_checks,
    validation_weights,
    validation,
    test,
    early_stopping,
    stop_on,
    eigenvectors,
    path,
    block,
    redo,
    alpha,
    min_delta,
    patience,
    **_,
) -> _Plan:
    """`simulate`'s arguments checked, before anything is compiled: its `_Plan`."""
    optimizer = get_optimizer(optimizer, sampler=sampler, batch_size=batch_size)
    check_precision(params, data)
    _check_settings(check_every, max_checks, block, redo, patience, alpha, min_delta, stop_on)
    _check_inputs(params, data, step_size, validation_weights, validation, test)
    standard = parameterization == "standard"
    one_dimensional = np.ndim(data.x) == 2
    early_stopping = _early_stopping(early_stopping, validation_weights, validation)
    rules = stop_rules(stop_on, optimizer, standard, one_dimensional, eigenvectors, early_stopping)
    held_out = validation is not None or test is not None
    if held_out:
        rules += ("held_out",)
    if optimizer.uses_step_size == (step_size is None):
        raise ValueError(
            "step_size: needed for a named optimizer or a function of h, and must be None "
            "for an optax transformation with its own learning rate"
        )
    noise_key = key_data_per_run(key, int(np.shape(params.c)[0]))
    if optimizer.stochastic and noise_key is None:
        raise ValueError(f"key: sampler {optimizer.sampler!r} needs one key per run")
    check_multinomial_steps(optimizer, check_every * max_checks)
    points = np.shape(data.x)[1]
    if optimizer.sampler == "epoch" and optimizer.batch_size > points:
        raise ValueError(f"batch_size: {optimizer.batch_size} exceeds the {points} points")
    path = choose_path(path, rules, optimizer, np.ndim(params.a) == 2, standard, held_out)
    return _Plan(optimizer, rules, path, noise_key)


def _check_settings(check_every, max_checks, block, redo, patience, alpha, min_delta, stop_on):
    """The counts, the step budget and the scalars of `simulate`, each named if refused."""
    _check_counts(check_every=check_every, max_checks=max_checks, block=block, redo=redo)
    if not (is_integer(patience) and patience >= 0):  # 0: stop at the first check
        raise ValueError(f"patience: must be an integer ≥ 0, not {patience!r}")
    check_step_budget(check_every, max_checks)
    _check_scalars(alpha=alpha, min_delta=min_delta)
    if isinstance(stop_on, str):
        raise ValueError(f"stop_on: a tuple of rule names, such as ({stop_on!r},)")


def _early_stopping(early_stopping, validation_weights, validation) -> bool:
    """Whether runs stop early (default: when validation weights are given), checked
    against the validation given."""
    if validation is not None and validation_weights is not None:
        raise ValueError("validation: give held-out points or validation_weights, not both")
    if early_stopping is None:
        early_stopping = validation_weights is not None
    if early_stopping and validation is None and validation_weights is None:
        raise ValueError("early_stopping: needs validation points or validation_weights")
    return early_stopping


def _check_counts(**counts) -> None:
    """Refuse a count that is not a positive integer, naming it (block and redo may be
    None: the engine's own sizes)."""
    for name, count in counts.items():
        if count is None and name in ("block", "redo"):
            continue
        if not (is_integer(count) and count >= 1):
            raise ValueError(f"{name}: must be a positive integer, not {count!r}")


def _check_scalars(**scalars) -> None:
    """The leak α of σ_α in [0, 1) (the paper's LeakyReLU) and early stopping's
    min_delta ≥ 0, each one finite real number."""
    for name, value in scalars.items():
        number = np.asarray(value).item() if np.ndim(value) == 0 else None
        if not is_real(number):
            raise ValueError(f"{name}: one real number, not {value!r}")
        high = 1.0 if name == "alpha" else math.inf
        if not (math.isfinite(number) and 0.0 <= number < high):
            raise ValueError(f"{name}: {value!r} is not in [0, {high:g})")


def _check_inputs(params: Params, data, step_size, validation_weights, validation, test):
    """Refuse inputs of other runs than `params`', step sizes that are not positive and
    finite (a scalar or one per run), and runs of fewer than two points."""
    _check_runs(params, data=data, validation_weights=validation_weights)
    _check_runs(params, validation=validation, test=test)
    if isinstance(step_size, str):
        raise ValueError(
            f"step_size: {step_size!r} is a rule of ExperimentSpec; simulate takes numbers "
            "(a scalar or one per run), e.g. theory.paper_step_size(params, data)"
        )
    if step_size is not None:
        h = np.asarray(jax.device_get(step_size))
        if h.ndim > 1 or (h.ndim == 1 and h.shape[0] not in (1, np.shape(params.c)[0])):
            raise ValueError(f"step_size: shape {h.shape} is neither a scalar nor one per run")
        if not np.all(np.isfinite(h) & (h > 0)):
            raise ValueError("step_size: every step size must be positive and finite")
    points = np.shape(data.x)[1]
    if points < 2:  # a least-squares fit of one point; the minibatch samplers need two
        raise ValueError(f"data: {points} point per run; a run needs at least 2")


def _check_runs(params: Params, **inputs) -> None:
    """Refuse an input (a pytree or None) whose leaves' leading axis is not the runs axis
    of `params`, naming it: its runs would train on another run's points."""
    if np.ndim(params.c) != 1 or np.shape(params.c)[0] < 1 or np.shape(params.b)[-1] < 1:
        raise ValueError(
            f"params: c of shape {np.shape(params.c)}, b of {np.shape(params.b)}; simulate "
            "takes a batch of at least one run of at least one neuron, a leading runs axis "
            "on every field (jax.vmap the init over keys)"
        )
    runs = int(np.shape(params.c)[0])
    for name, tree in inputs.items():
        for leaf in jax.tree.leaves(tree):
            if np.ndim(leaf) == 0 or np.shape(leaf)[0] != runs:
                raise ValueError(
                    f"{name}: shape {np.shape(leaf)} does not lead with the {runs} runs of params"
                )


def check_precision(params: Params, data: WeightedData) -> None:
    """Refuse params that are not float32 or float64 (the runs train in their dtype: an
    integer network cannot, and float16 has no eigensolver), and float64 params or data
    while `jax_enable_x64` is off: JAX would train them as float32 without a word."""
    dtype = np.dtype(getattr(params.b, "dtype", np.asarray(params.b).dtype))
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"params: {dtype} weights; the runs train in float32 or float64")
    if jax.config.read("jax_enable_x64"):
        return
    wide = [np.dtype(v.dtype) == np.float64 for v in (*params, *data) if hasattr(v, "dtype")]
    if any(wide):
        raise ValueError(
            "params or data are float64 but jax_enable_x64 is off, so JAX would train them "
            f"as float32; enable it at start-up with {X64_HINT} (or pass float32 arrays)"
        )


def key_data_per_run(key, runs: int):
    """Per-run key data (runs, 2) uint32 from typed keys or key data, or None."""
    if key is None:
        return None
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if np.shape(key) != (runs, 2):
        raise ValueError(f"key: expected one threefry key per run, got shape {np.shape(key)}")
    return on_device(key, np.uint32)


def _as_arrays(params, data, validation_weights, validation, test):
    """(params, data, validation, test) as JAX arrays of the parameters' dtype; without
    held-out points, validation is the training points with `validation_weights`."""
    dtype = params.b.dtype
    data = WeightedData(*(on_device(v, dtype) for v in data))
    params = Params(*(on_device(v, dtype) for v in params))
    if validation is None:
        weights = data.weights if validation_weights is None else validation_weights
        validation = data._replace(weights=on_device(weights, dtype))
    validation = WeightedData(*(on_device(v, dtype) for v in validation))
    test = validation if test is None else WeightedData(*(on_device(v, dtype) for v in test))
    return params, data, validation, test


def on_device(value, dtype) -> jax.Array:
    """`value` as a JAX array of `dtype`: as it is if it is one, else converted on the
    host and transferred (`jnp.asarray` of a host array compiles a program per shape)."""
    if isinstance(value, jax.Array) and value.dtype == dtype:
        return value
    return jax.device_put(np.asarray(value, dtype))


def _scaling(params: Params, parameterization: str) -> Scaling:
    """The forward multipliers of each run, from its true width (padding excluded)."""
    if parameterization == "standard":
        return scaling_of(parameterization, None, 1)
    dim = 1 if params.a.ndim == 2 else params.a.shape[-2]
    widths = np.sum(active_neurons(jax.device_get(params)), axis=-1)
    return scaling_of(parameterization, widths, dim, xp=np)


def _per_run(value, params: Params) -> jax.Array:
    """A scalar or (runs,) `value` as (runs,) of the parameters' dtype."""
    return jax.device_put(np.broadcast_to(np.asarray(value, params.b.dtype), params.c.shape))


class _Outcomes(NamedTuple):
    """What the finished runs have reported (host arrays, filled in as runs finish)."""

    status: np.ndarray  # (runs,) Status codes
    stop_step: np.ndarray  # (runs,)
    params: list[np.ndarray]  # the final parameters, a leading runs axis
    reported: dict[str, np.ndarray]  # "loss", "linear_threshold", `state.REPORTED`: (runs,)

    @classmethod
    def empty(cls, params: Params) -> _Outcomes:
        runs, dtype = params.c.shape[0], params.b.dtype
        names = ("loss", "linear_threshold", *REPORTED)
        return cls(
            status=np.zeros(runs, np.int8),
            stop_step=np.zeros(runs, np.int64),
            params=[np.zeros(np.shape(leaf), dtype) for leaf in params],
            reported={
                name: np.zeros(runs, np.int64 if name in STEPS_REPORTED else dtype)
                for name in names
            },
        )


def _trained_until_stopped(
    runs: Runs,
    inputs: CheckInputs,
    layout: Layout,
    scalars,
    settings: ChunkSettings,
    max_checks,
    on_check,
    outcomes: _Outcomes,
) -> None:
    """Chunk after chunk until every run stopped or `max_checks` checks: each finished
    run goes into `outcomes`, and the active ones move to the front of their device."""
    mixed = settings.path == "fixed_pattern"
    for k in range(1, max_checks + 1):
        runs, code, loss, fixed_next = exact_chunk(runs, inputs, scalars, settings, layout)
        if k == max_checks:
            code = np.where(code == Status.RUNNING, np.int8(Status.UNFINISHED), code)
        done = (layout.slots >= 0) & (code != Status.RUNNING)
        keep = np.flatnonzero((layout.slots >= 0) & ~done)
        moved = mixed and np.any(layout.general[keep] == fixed_next[keep])
        if done.any():
            lanes = np.flatnonzero(done)
            ids = layout.slots[lanes]
            outcomes.status[ids] = code[lanes]
            outcomes.stop_step[ids] = k * settings.check_every
            _finished(runs, loss, lanes, layout, outcomes, ids)
        if not keep.size:
            layout = layout._replace(slots=np.full_like(layout.slots, -1))
        elif done.any() or moved:  # the active runs first on each device: shapes never change
            general = ~fixed_next[keep] if mixed else None
            runs, inputs, layout = rearranged(runs, inputs, layout, keep, general)
        if on_check is not None:
            on_check(k, outcomes.status.copy())
        if not (layout.slots >= 0).any():
            break


@functools.partial(jax.jit, static_argnames=("mesh",))
def _ending(runs: Runs, loss, positions, mesh) -> tuple[Params, dict[str, jax.Array]]:
    """The lanes at `positions` (`own_lane_batches`): their materialized parameters and
    reported values."""
    runs, loss = own_lanes_at((runs, loss), positions, mesh)
    reported = {name: getattr(runs.info, name) for name in REPORTED}
    threshold = runs.state.linear_threshold
    return materialized_params(runs.state), {
        "loss": loss,
        "linear_threshold": threshold,
        **reported,
    }


def _finished(runs: Runs, loss, lanes, layout: Layout, outcomes: _Outcomes, ids) -> None:
    """Copy the parameters and reported values of `lanes` into `outcomes` at `ids`,
    `layout.finished_lanes` at a time, each device its own: only the finished runs cross
    to the host."""
    mesh = layout.sharding.mesh
    for positions, taken in layout.own_batches(lanes, layout.finished_lanes):
        host_params, host_reported = jax.device_get(_ending(runs, loss, positions, mesh))
        real = taken >= 0
        got = ids[taken[real]]
        for name, values in host_reported.items():
            outcomes.reported[name][got] = values[real]
        for out, leaf in zip(outcomes.params, host_params, strict=True):
            out[got] = leaf[real]


def _result(outcomes: _Outcomes, params, data, scaling, rules, classify_width) -> SimulationResult:
    """The `SimulationResult` of the finished runs, with the detectors' classification."""
    runs, dtype = params.c.shape[0], params.b.dtype
    final = Params(*outcomes.params)
    scaling = Scaling(*(np.broadcast_to(np.asarray(v, dtype), (runs,)) for v in scaling))
    reported = outcomes.reported
    loss, threshold = (reported[name] for name in ("loss", "linear_threshold"))
    trees = jax.device_get((params, final, data, loss, scaling, threshold))
    width = params.b.shape[-1] if classify_width is None else classify_width

    def classified(indices):  # padded on the host a batch at a time: no program per width
        initial, last, *rest = jax.tree.map(lambda v: np.asarray(v)[indices], trees)
        return classify(padded(initial, width, xp=np), padded(last, width, xp=np), *rest)

    threshold, escaped = in_draw_batches(classified, np.arange(runs), width, on_host=True)
    held_out = "held_out" in rules
    return SimulationResult(
        status=outcomes.status,
        stop_step=outcomes.stop_step,
        params=final,
        max_kink=reported["max_kink"],
        final_loss=reported["loss"],
        pattern_change_step=reported["pattern_change"],
        loss_below_step=reported["loss_below"],
        linear_threshold=threshold,
        escaped=escaped,
        best_validation_loss=reported["best_val"],
        test_loss_at_best=reported["test_at_best"] if held_out else np.full(runs, np.nan),
        best_step=reported["best_step"],
    )
