"""`simulate`: train every run of a batch until it stops, in four steps (validate the
arguments, place the runs, train chunk by chunk, collect the results).

(The module is not named `simulate`: `gdrelu.engine.simulate` is the function.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import native_general
from gdrelu.batched import in_draw_batches
from gdrelu.cache import use_default_cache
from gdrelu.compiled import jit
from gdrelu.data import WeightedData
from gdrelu.detectors import classify
from gdrelu.engine.arguments import (
    check_arrays,
    check_callers,
    check_kinds,
    check_kinks,
    check_precision,
    check_settings,
    params_dtype,
    rule_names,
)
from gdrelu.engine.checks import (
    CheckInputs,
    ChunkScalars,
    checked_inputs,
    refuse_unusable,
    warn_of_kinks_among_data,
    warn_of_points_at_zero,
)
from gdrelu.engine.chunk import ChunkSettings, chunk_settings, exact_chunk
from gdrelu.engine.paths import choose_path, mixes_paths
from gdrelu.engine.placement import Layout, own_lanes_at, placed, rearranged, requested_kernel
from gdrelu.engine.state import (
    REPORTED,
    STEPS_REPORTED,
    Runs,
    materialized_params,
)
from gdrelu.model import Params, Scaling, active_neurons, padded, scaling_of
from gdrelu.optim import Optimizer, check_multinomial_steps, get_optimizer
from gdrelu.outcome import (
    PROOF_RULES,
    SimulationResult,
    Status,
    stop_rules,
    with_diverged_escaped,
)


def simulate(
    params: Params,
    data: WeightedData,
    step_size,
    *,
    optimizer="gd",
    parameterization: str = "standard",
    sampler: str | None = None,
    batch_size: int | None = None,
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
    (`optim.get_optimizer`, with `sampler` and `batch_size`, default 16, refused for a
    full-batch sampler; an `Optimizer` brings its own); `key`: one per run (typed, or (runs,
    2) key data) for a stochastic sampler. `parameterization`: "standard" (He), "ntk".

    The checks and their order are `engine.checks`' (docs/theory.md, "Outcome of a run").
    `stop_on` selects crossed, stuck and degenerate (default: all three for full-batch GD
    on 1-D data in the standard parameterization, none elsewhere); divergence always stops
    a run; `eigenvectors="rows"` is the reference code's certificate. With `early_stopping`
    (default: when `validation_weights` are given) a run stops once its validation loss
    (`validation_weights` on the training points, or held-out `validation` points) has
    not improved by `min_delta` (on the paper code's Σ p r², twice the ½ Σ p r² reported)
    for `patience` checks. Every run reports its best validation loss, that check's step,
    the test loss there (NaN without `test`), and `gdrelu.detectors`' verdicts (classified
    at `classify_width` neurons). `on_check(k, status)` gets every status after check k.

    `path` ("auto": `engine.paths.choose_path`), `devices` (default: the local ones),
    `block`, `redo` (`placement.blocking_for`) and `kernel` (`placement.propagator_kernel`)
    choose how the runs train: statuses and steps do not depend on them (a fast path redoes
    on the general path what it cannot do exactly; docs/design.md, "Training paths"), but
    for the C loop `native_general` ("native" by name only, to rounding). The first call
    turns on the compilation cache (`gdrelu.cache`; GDRELU_CACHE_DIR=none: off)."""
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
    tested = test is not None  # else the checks read the validation set as the test set
    params, data, validation, test = _as_arrays(params, data, validation_weights, validation, test)
    scaling = _scaling(params, parameterization)
    points = (data, validation, test, validation_weights is not None)
    inputs = _inputs(plan.rules, params, step_size, scaling, *points)
    mixed = mixes_paths(plan.path, plan.rules)
    redone = mixed and plan.path == "propagator"
    runs, inputs, layout = placed(
        params,
        inputs,
        plan.noise_key,
        scaling,
        plan.optimizer,
        block,
        devices,
        mixed,
        kernel,
        redo,
        redone,
    )
    dtype = params.b.dtype
    scalars = ChunkScalars(
        np.asarray(alpha, dtype),
        np.asarray(min_delta, dtype),
        np.asarray(patience, np.int32),
        np.asarray(check_every, np.int32),
    )
    settings = chunk_settings(check_every, plan.rules, plan.path, plan.optimizer, layout.blocking)
    outcomes = _Outcomes.empty(params)
    _trained_until_stopped(runs, inputs, layout, scalars, settings, max_checks, on_check, outcomes)
    return _result(outcomes, params, data, scaling, plan.rules, classify_width, tested)


def _inputs(rules, params, step_size, scaling, data, validation, test, reweighted: bool):
    """The checks' inputs (`checked_inputs`, one program), once runs whose points are not
    usable are refused and those the kink rule (in `rules`) would stop at their first
    check are warned of: a point at x = 0, or a kink that starts among the data."""
    steps = 0.0 if step_size is None else step_size
    inputs, usable, at_zero, among = checked_inputs(
        data, _per_run(steps, params), validation, test, params, scaling.a
    )
    refuse_unusable(np.asarray(usable), reweighted)
    if "crossed" in rules:
        warn_of_points_at_zero(np.asarray(at_zero))
        warn_of_kinks_among_data(np.asarray(among))
    return inputs


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
    devices,
    on_check,
    classify_width,
    kernel,
    **_,
) -> _Plan:
    """`simulate`'s arguments checked, before anything is compiled: its `_Plan`."""
    check_kinds(params, data, validation, test)
    optimizer = _optimizer(optimizer, sampler, batch_size)
    check_precision(params, data, validation=validation, test=test)
    check_settings(check_every, max_checks, block, redo, patience, alpha, min_delta)
    check_arrays(params, data, step_size, validation_weights, validation, test)
    check_callers(params, devices, on_check, classify_width)
    standard = parameterization == "standard"
    one_dimensional = np.ndim(data.x) == 2
    early_stopping = _early_stopping(early_stopping, validation_weights, validation)
    stop_on = rule_names(stop_on)
    rules = stop_rules(stop_on, optimizer, standard, one_dimensional, eigenvectors, early_stopping)
    check_kinks(params, rules, one_dimensional)
    held_out = validation is not None or test is not None
    rules += ("held_out",) if held_out else ()
    if optimizer.uses_step_size == (step_size is None):
        raise ValueError(
            "step_size: needed for a named optimizer or a function of h, and must be None "
            "for an optax transformation with its own learning rate"
        )
    noise_key = _noise_key(key, optimizer, int(np.shape(params.c)[0]))
    check_multinomial_steps(optimizer, check_every * max_checks)
    if optimizer.sampler == "epoch" and optimizer.batch_size > (points := np.shape(data.x)[1]):
        raise ValueError(f"batch_size: {optimizer.batch_size} exceeds the {points} points")
    path = choose_path(path, rules, optimizer, np.ndim(params.a) == 2, standard, held_out)
    shape, dtype = native_general.data_shape(data.x), params_dtype(params)
    native_general.check_requested(requested_kernel(kernel), optimizer, *shape, dtype)
    return _Plan(optimizer, rules, path, noise_key)


def _noise_key(key, optimizer: Optimizer, runs: int) -> jax.Array | None:
    """The runs' key data for the minibatch draws (`key_data_per_run`), refused if a
    stochastic sampler has none, and given to a full-batch one, which would ignore it
    (the paper's Adam took minibatches; gdrelu's is full-batch unless told)."""
    noise_key = key_data_per_run(key, runs)
    if optimizer.stochastic and noise_key is None:
        raise ValueError(f"key: sampler {optimizer.sampler!r} needs one key per run")
    if not optimizer.stochastic and noise_key is not None:  # as a batch_size would be
        minibatches = (
            "optimizer='sgd'" if optimizer.name == "gd" else "sampler='multinomial' or 'epoch'"
        )
        raise ValueError(
            f"key: {optimizer.name!r} trains on every point each step (sampler "
            f"{optimizer.sampler!r}) and draws nothing; give key=None, or {minibatches} "
            "for minibatches"
        )
    return noise_key


def _optimizer(optimizer, sampler, batch_size) -> Optimizer:
    """`get_optimizer`, refusing a batch size given for an optimizer that trains on every
    point at every step (sampler "full"), which would have been ignored."""
    trained = get_optimizer(optimizer, sampler=sampler, batch_size=batch_size)
    if batch_size is not None and trained.sampler == "full" and trained is not optimizer:
        raise ValueError(
            f"batch_size: {batch_size!r}, but {trained.name!r} trains on every point each step "
            "(sampler 'full'); give sampler='multinomial' or 'epoch' for minibatches"
        )
    return trained


def _early_stopping(early_stopping, validation_weights, validation) -> bool:
    """Whether runs stop early (default: when validation weights are given), checked
    against the validation given."""
    if validation is not None and validation_weights is not None:
        raise ValueError("validation: give held-out points or validation_weights, not both")
    if early_stopping is None:
        early_stopping = validation_weights is not None
    if not (np.ndim(early_stopping) == 0 and np.asarray(early_stopping).dtype == bool):
        raise ValueError(f"early_stopping: {early_stopping!r} is not True, False or None")
    early_stopping = bool(early_stopping)  # "off" would have been true
    if early_stopping and validation is None and validation_weights is None:
        raise ValueError("early_stopping: needs validation points or validation_weights")
    return early_stopping


def key_data_per_run(key, runs: int):
    """Per-run key data (runs, 2) uint32 from typed keys or key data, or None."""
    if key is None:
        return None
    dtype = key.dtype if hasattr(key, "dtype") else np.asarray(key).dtype  # a list has none
    typed = jnp.issubdtype(dtype, jax.dtypes.prng_key)
    given = np.shape(key)
    if typed and str(jax.random.key_impl(key)) != "threefry2x32":
        raise ValueError(f"key: {jax.random.key_impl(key)} keys; simulate takes threefry2x32 keys")
    if not typed:
        words = np.asarray(key)
        if not jnp.issubdtype(dtype, jnp.integer):  # a float's bits were cut
            raise ValueError(f"key: {dtype} key data; give uint32 key data or typed keys")
        if np.any((words < 0) | (words >= 2**32)):  # cut too
            raise ValueError("key: key data outside [0, 2**32); give uint32 key data or typed keys")
    if typed:
        key = jax.random.key_data(key)
    if np.shape(key) != (runs, 2):
        kind = "typed keys" if typed else "key data"
        raise ValueError(
            f"key: one threefry key per run, ({runs},) typed keys or ({runs}, 2) key data "
            f"(jax.random.split(key, {runs})), not {kind} of shape {given}"
        )
    return on_device(key, np.uint32)


def _as_arrays(params, data, validation_weights, validation, test):
    """(params, data, validation, test) as JAX arrays of the parameters' dtype; without
    held-out points, validation is the training points with `validation_weights`."""
    dtype = params_dtype(params)
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
    mixed = mixes_paths(settings.path, settings.rules)
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
            outcomes.stop_step[ids] = k * int(scalars.check_every)
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


@functools.partial(jit, static_argnames=("mesh",))
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


def _result(
    outcomes: _Outcomes, params, data, scaling, rules, classify_width, tested: bool
) -> SimulationResult:
    """The `SimulationResult` of the finished runs, with the detectors' classification;
    `tested`: whether `simulate` was given test points (else the test loss is NaN)."""
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

    patterns = data.x.shape[1] * width  # (m, n) entries of a run's activation patterns
    threshold, escaped = in_draw_batches(
        classified, np.arange(runs), width, on_host=True, entries=patterns
    )
    return SimulationResult(
        status=outcomes.status,
        stop_step=outcomes.stop_step,
        params=final,
        max_kink=reported["max_kink"],
        final_loss=reported["loss"],
        pattern_change_step=reported["pattern_change"],
        loss_below_step=reported["loss_below"],
        linear_threshold=threshold,
        escaped=with_diverged_escaped(escaped, outcomes.status),
        best_validation_loss=reported["best_val"],
        test_loss_at_best=reported["test_at_best"] if tested else np.full(runs, np.nan),
        best_step=reported["best_step"],
        certificate_checked=np.full(runs, set(rules) >= PROOF_RULES),
    )
