"""`simulate`'s arguments, refused before anything compiles, each naming the argument at
fault and why (the counts and scalars of a run, the step sizes, and the runs axis, points
and dtype of the inputs)."""

from __future__ import annotations

import math

import jax
import numpy as np

from gdrelu.data import WeightedData, check_points
from gdrelu.engine.state import check_step_budget
from gdrelu.model import Params, check_neurons
from gdrelu.numbers import check_kind, has_real_dtype, is_integer, is_real

X64_HINT = 'jax.config.update("jax_enable_x64", True)'


def check_settings(check_every, max_checks, block, redo, patience, alpha, min_delta):
    """The counts, the step budget and the scalars of `simulate`, each named if refused."""
    _check_counts(check_every=check_every, max_checks=max_checks, block=block, redo=redo)
    if not (is_integer(patience) and patience >= 0):  # 0: stop at the first check
        raise ValueError(f"patience: must be an integer ≥ 0, not {patience!r}")
    check_step_budget(check_every, max_checks)
    _check_scalars(alpha=alpha, min_delta=min_delta)


def rule_names(stop_on) -> tuple[str, ...] | None:
    """`stop_on` as a tuple of rule names (None stays None): any collection of strings."""
    if stop_on is None:
        return None
    if isinstance(stop_on, str):
        raise ValueError(f"stop_on: a tuple of rule names, such as ({stop_on!r},)")
    try:
        names = tuple(stop_on)
    except TypeError:
        names = (stop_on,)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"stop_on: a tuple of rule names, such as ('crossed',), not {stop_on!r}")
    return tuple(str(name) for name in names)


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


def check_arrays(params: Params, data, step_size, validation_weights, validation, test):
    """Refuse inputs of other runs than `params`', point sets whose x, y and weights
    disagree (`_check_points`), step sizes that are not positive and finite (a scalar or
    one per run), and runs of fewer than two points."""
    _check_runs(params, data=data, validation_weights=validation_weights, validation=validation,
                test=test)  # fmt: skip
    _check_points(data, validation_weights, validation=validation, test=test)
    features, takes = np.shape(data.x)[2:], np.shape(params.a)[1:-1]  # () in 1-D
    if features != takes:
        raise ValueError(
            f"data: points of shape {features or '()'} (x of shape {np.shape(data.x)}), but "
            f"params' networks take points of shape {takes or '()'} (a of {np.shape(params.a)})"
        )
    if isinstance(step_size, str):
        raise ValueError(
            f"step_size: {step_size!r} is a rule of ExperimentSpec; simulate takes numbers "
            "(a scalar or one per run), e.g. theory.paper_step_size(params, data)"
        )
    if step_size is not None:
        h = np.asarray(jax.device_get(step_size))
        if not has_real_dtype(h):
            # True trained with h = 1
            raise ValueError(f"step_size: {h.dtype} values; give real numbers")
        if h.ndim > 1 or (h.ndim == 1 and h.shape[0] not in (1, np.shape(params.c)[0])):
            raise ValueError(f"step_size: shape {h.shape} is neither a scalar nor one per run")
        dtype = params_dtype(params)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            trained = h.astype(dtype)  # the runs train in the params' dtype
        bad = np.flatnonzero(~(np.isfinite(trained) & (trained > 0)))
        if bad.size:
            more = f" and {bad.size - 1} more" if bad.size > 1 else ""
            verb = "have" if more else "has"
            which = f"run {bad[0]}{more} {verb} " if h.size > 1 else ""
            given, cast = h.reshape(-1)[bad[0]].item(), trained.reshape(-1)[bad[0]].item()
            changed = np.isfinite(given) and cast != given  # rounded to 0 or inf
            rounded = f", {cast!r} in the params' {dtype}" if changed else ""
            raise ValueError(
                f"step_size: {which}{given!r}{rounded}; every step size must be positive and "
                "finite (a rule such as theory.paper_step_size gives nan or inf for data that "
                "are not finite or weights of sum 0)"
            )
    points = np.shape(data.x)[1]
    if points < 2:  # a least-squares fit of one point; the minibatch samplers need two
        raise ValueError(f"data: {points} point per run; a run needs at least 2")


def check_kinds(params, data, validation, test) -> None:
    """`numbers.check_kind` of the named inputs (None stands for no held-out points):
    first of the checks."""
    check_kind("params", params, Params)
    check_kind("data", data, WeightedData)
    for name, points in (("validation", validation), ("test", test)):
        if points is not None:
            check_kind(name, points, WeightedData)


def _check_points(data, validation_weights, **held_out) -> None:
    """Refuse point sets whose x, y and weights disagree on the points per run, held-out
    points of other features than the data's, and validation weights that are not one
    per training point: each would fail inside XLA without naming its argument."""
    for name, points in {"data": data, **held_out}.items():
        if points is None:
            continue
        check_points(name, points)
        x = np.shape(points.x)
        if x[2:] != np.shape(data.x)[2:]:
            raise ValueError(f"{name}: x of shape {x}, but the data's x is {np.shape(data.x)}")
    if validation_weights is not None and np.shape(validation_weights) != np.shape(data.y):
        raise ValueError(
            f"validation_weights: shape {np.shape(validation_weights)}, not one per training "
            f"point as the data's weights, {np.shape(data.y)}"
        )


def _check_runs(params: Params, **inputs) -> None:
    """Refuse an input (a pytree or None) whose leaves' leading axis is not the runs axis
    of `params`, naming it: its runs would train on another run's points."""
    if (
        np.ndim(params.c) != 1
        or np.shape(params.c)[0] < 1
        or np.shape(params.b)[-1] < 1
        or np.shape(params.b)[:-1] != np.shape(params.c)
    ):
        raise ValueError(
            f"params: c of shape {np.shape(params.c)}, b of {np.shape(params.b)}; simulate "
            "takes a batch of at least one run of at least one neuron, a leading runs axis "
            "on every field (jax.vmap the init over keys)"
        )
    check_neurons(params)
    finite = [np.all(np.isfinite(np.asarray(jax.device_get(v)))) for v in params]
    if not all(finite):
        raise ValueError("params: some weights are not finite; a run must start from a network")
    runs = int(np.shape(params.c)[0])
    for name, tree in inputs.items():
        for leaf in jax.tree.leaves(tree):
            if np.ndim(leaf) == 0 or np.shape(leaf)[0] != runs:
                raise ValueError(
                    f"{name}: shape {np.shape(leaf)} does not lead with the {runs} runs of params"
                )


def check_kinks(params: Params, rules, one_dimensional: bool) -> None:
    """Where the 1-D crossing rule applies (`max_kink` ≥ min|x|), refuse a real neuron
    (not padding: a = b = w = 0) with a_i = 0 and b_i = 0: its kink b_i/a_i is 0/0, a NaN
    that the running largest kink keeps, and the rule would never fire for its run."""
    if not (one_dimensional and "crossed" in rules):
        return
    a, b, w = (np.asarray(jax.device_get(v)) for v in params[:3])
    undefined = (a == 0) & (b == 0) & (w != 0)
    if undefined.any():
        run, neuron = np.argwhere(undefined)[0]
        raise ValueError(
            f"params: run {run}'s neuron {neuron} has a = 0 and b = 0 but w ≠ 0: its kink b/a "
            "is 0/0, and the crossing rule could not see its run cross; only padding neurons "
            "(a = b = w = 0) may have a = 0 there"
        )


def check_callers(params: Params, devices, on_check, classify_width) -> None:
    """Refuse an empty device list, an `on_check` that cannot be called and a
    `classify_width` narrower than the networks before anything trains: each would fail
    only after training, or deep inside the placement."""
    if devices is not None and not (
        isinstance(devices, list | tuple | np.ndarray)
        and all(isinstance(d, jax.Device) for d in np.ravel(np.asarray(devices, object)))
    ):
        raise ValueError(f"devices: a list of JAX devices, such as jax.devices(), not {devices!r}")
    if devices is not None and len(devices) == 0:
        raise ValueError("devices: an empty list; give at least one device, or None for all")
    if on_check is not None and not callable(on_check):
        raise ValueError(f"on_check: {on_check!r} is not a function of (k, status)")
    width = np.shape(params.b)[-1]
    if classify_width is not None and not (is_integer(classify_width) and classify_width >= width):
        raise ValueError(
            f"classify_width: {classify_width!r} is not an integer ≥ the networks' {width} neurons"
        )


def params_dtype(params: Params) -> np.dtype:
    """The dtype the runs train in: their weights' (b's, else the first field's that has
    one; array-likes such as lists take it, or numpy's if none has one)."""
    typed = [np.dtype(v.dtype) for v in (params.b, *params) if hasattr(v, "dtype")]
    return typed[0] if typed else np.asarray(params.b).dtype


def check_precision(params: Params, data: WeightedData, **held_out) -> None:
    """Refuse params that are not float32 or float64 (the runs train in their dtype: an
    integer network cannot, and float16 has no eigensolver), and float64 params while
    `jax_enable_x64` is off: JAX would train them as float32 without a word. Float64 data
    (numpy's default) beside float32 params is cast to float32, as every other input.
    Also refused: params whose fields differ in dtype (the runs would train in b's), and
    complex points, targets or weights (their imaginary parts would be dropped)."""
    dtype = params_dtype(params)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"params: {dtype} weights; the runs train in float32 or float64")
    fields = zip(params._fields, params, strict=True)
    kinds = {name: np.dtype(v.dtype) for name, v in fields if hasattr(v, "dtype")}
    wide = np.float64 in (*kinds.values(), dtype)  # lists alone: numpy's float64
    if wide and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "params: float64 but jax_enable_x64 is off, so JAX would train them as float32; "
            f"enable it at start-up with {X64_HINT} (or pass float32 arrays)"
        )
    if len(set(kinds.values())) > 1:
        said = ", ".join(f"{name} {kind}" for name, kind in kinds.items())
        raise ValueError(f"params: {said}; give every field the dtype the runs train in")
    for name, points in (("data", data), *held_out.items()):
        if points is not None and any(np.iscomplexobj(v) for v in points):
            raise ValueError(f"{name}: complex values; points, targets and weights are real")
