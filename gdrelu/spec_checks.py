"""Every setting of an `ExperimentSpec` checked once, when it is built (`check`): a bad
one raises `SpecError` naming its field (docs/theory.md: "Model", "Data", "Step size",
"Outcome of a run"; docs/design.md for the buckets)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import numpy as np

from gdrelu import engine, theory
from gdrelu.data import CONTINUOUS, DATASETS, count_dtype, split_sizes
from gdrelu.init import INITS, parse_bias_init
from gdrelu.numbers import first_repeated, is_integer, is_real
from gdrelu.optim import NAMED, SAMPLERS, check_multinomial_steps
from gdrelu.outcome import not_rules
from gdrelu.spec import (
    BUCKETS,
    DATASET_DIMENSION,
    DEFAULTS,
    DTYPES,
    MAX_WIDTH,
    STEP_SIZE_RULES,
    STUCK_RULES,
    SpecError,
)

if TYPE_CHECKING:
    from gdrelu.spec import ExperimentSpec


def check(spec: ExperimentSpec) -> None:
    """Raise `SpecError` naming the first bad setting of `spec`."""
    for part in (_check_data, _check_grid, _check_training, _check_stopping):
        part(spec)


def _is_positive_int(value, low: int = 1) -> bool:
    return is_integer(value) and value >= low


def _choice(spec: ExperimentSpec, name: str, choices) -> None:
    value = getattr(spec, name)
    if not isinstance(value, str) or value not in choices:  # a TOML list is unhashable
        raise SpecError(name, f"{value!r} is not one of {', '.join(choices)}")


def _check_data(spec: ExperimentSpec) -> None:
    """The data set, its dimension, sizes and split."""
    if spec.data not in (*DATASETS, "file"):
        raise SpecError("data", f"{spec.data!r} is not one of {', '.join(DATASETS)} or file")
    if (spec.data == "file") != (spec.data_file is not None):
        raise SpecError("data_file", "is needed exactly when data = 'file'")
    if spec.data == "file":
        try:
            spec.user_data  # noqa: B018 (read and checked once, here)
        except ValueError as err:
            raise SpecError("data_file", str(err).split(": ", 1)[-1]) from None
        if spec.dim not in (None, spec.input_dim):
            raise SpecError("dim", f"the inputs of {spec.data_file} are not {spec.dim}-dimensional")
    if spec.dim is not None and not _is_positive_int(spec.dim):
        raise SpecError("dim", f"{spec.dim!r} is not a positive integer")
    dataset_dim = DATASET_DIMENSION.get(spec.data)
    if dataset_dim is not None and spec.dim not in (None, dataset_dim):
        raise SpecError("dim", f"{spec.data} data are {dataset_dim}-dimensional")
    if spec.data == "multi-axis" and (spec.dim or 1) < 2:
        raise SpecError("dim", "multi-axis data need dim ≥ 2 (in 1-D: six-points)")
    if spec.num_train is not None:
        if spec.data not in CONTINUOUS:
            raise SpecError("num_train", f"{spec.data} data have a finite support; use num_samples")
        if not _is_positive_int(spec.num_train, 2):
            raise SpecError("num_train", f"{spec.num_train!r} is not an integer ≥ 2")
    if spec.data in CONTINUOUS and spec.num_samples is not None:
        raise SpecError("num_samples", f"{spec.data} data are sampled i.i.d.; use num_train")
    if spec.split is not None and spec.num_samples is not None:  # draw_split weighs equally
        raise SpecError("num_samples", "a split file's points have equal weights; N draws none")
    if spec.num_samples is not None and not _is_positive_int(spec.num_samples):
        raise SpecError("num_samples", f"{spec.num_samples!r} is not a positive integer")
    if spec.split is not None:
        _check_split(spec)
    if not _is_positive_int(spec.num_heldout):
        raise SpecError("num_heldout", f"{spec.num_heldout!r} is not a positive integer")
    if spec.num_heldout != DEFAULTS["num_heldout"] and spec.data not in CONTINUOUS:
        raise SpecError("num_heldout", f"only continuous data draw held-out points; {spec.data}")


def _check_split(spec: ExperimentSpec) -> None:
    if spec.data != "file":
        raise SpecError("split", "splits a user data file (data = 'file')")
    if (
        not isinstance(spec.split, tuple)  # a bare number: __post_init__ keeps it as given
        or len(spec.split) != 3
        or not all(is_real(f) and f > 0 for f in spec.split)
        or abs(sum(spec.split) - 1.0) > 1e-9
    ):
        raise SpecError("split", f"{spec.split!r} is not three positive fractions summing to 1")
    sizes = split_sizes(spec.num_points, spec.split)
    if min(sizes) < 1:
        raise SpecError("split", f"gives empty parts {sizes} of the {spec.num_points} points")
    if spec.training_points < 2:
        raise SpecError("split", f"leaves 1 training point of {spec.num_points}; need 2")


def _check_grid(spec: ExperimentSpec) -> None:
    """Widths, offsets, run counts, seed and dtype."""
    if not spec.widths:
        raise SpecError("widths", "needs at least one width")
    for width in spec.widths:
        if not _is_positive_int(width):
            raise SpecError("widths", f"{width!r} is not a positive integer")
        if width > MAX_WIDTH:
            raise SpecError("widths", f"{width} is above 2^40 neurons (26 TB of parameters a run)")
    if not spec.deltas:
        raise SpecError("deltas", "needs at least one offset")
    for delta in spec.deltas:
        if not is_real(delta) or not math.isfinite(delta):
            raise SpecError("deltas", f"{delta!r} is not a finite number")
    for name in ("widths", "deltas"):
        twice = first_repeated(getattr(spec, name))  # 0 and -0.0 too: one cell
        if twice is not None:
            raise SpecError(name, f"has duplicates ({twice!r} again)")
    for name, low in (("runs", 1), ("seed", 0), ("check_every", 1), ("max_checks", 1)):
        value = getattr(spec, name)
        if not _is_positive_int(value, low):
            raise SpecError(name, f"{value!r} is not an integer ≥ {low}")
    if spec.seed >= 2**32:
        raise SpecError("seed", f"{spec.seed!r} is not below 2**32")
    try:
        engine.check_step_budget(spec.check_every, spec.max_checks)
    except ValueError as err:
        field, reason = str(err).split(": ", 1)
        raise SpecError(field, reason) from None
    _choice(spec, "dtype", DTYPES)
    if spec.dtype == "float64" and not jax.config.jax_enable_x64:
        raise SpecError(
            "dtype",
            "float64 needs JAX's 64-bit mode: call "
            'jax.config.update("jax_enable_x64", True) at start-up, or use float32',
        )
    _choice(spec, "buckets", BUCKETS)
    _check_sample_count(spec)
    _check_range(spec)
    _check_point_at_zero(spec)


def _check_range(spec: ExperimentSpec) -> None:
    """Offsets and a data file's values within a quarter of the dtype's largest number:
    Δ is added to the targets (or to the star's radii), and a sum beyond the range is inf,
    which the engine refused in every run, after the run's directory was made."""
    limit = float(np.finfo(spec.dtype).max) / 4
    within = f"within a quarter of {spec.dtype}'s largest number, {limit:.3g}"
    for delta in spec.deltas:
        if abs(delta) > limit:
            raise SpecError("deltas", f"{delta:g} is not {within}")
    if spec.data == "file":
        largest = max(float(np.max(np.abs(v))) for v in spec.user_data)
        if largest > limit:
            raise SpecError("data_file", f"{spec.data_file}: a value {largest:.3g} is not {within}")


def _check_point_at_zero(spec: ExperimentSpec) -> None:
    """A data file's 1-D point at x = 0 in the run's dtype (`theory.point_at_zero`: within
    64 ulp of its largest |x|), where every initial kink of zero biases is: every run would
    count as crossed at its first check, with nothing said (a split's draws are warned of
    per cell instead, `cells.points_at_zero`)."""
    if (
        spec.data != "file"
        or spec.bias_init != "zero"
        or spec.input_dim != 1
        or spec.split is not None
    ):
        return
    x = np.asarray(spec.user_data[0], spec.dtype).reshape(1, -1)
    if theory.point_at_zero(x, xp=np)[0]:
        nearest, largest = float(x.flat[np.argmin(np.abs(x))]), float(np.max(np.abs(x)))
        raise SpecError(
            "data_file", f"{spec.data_file} has a point at x = {nearest:.3g}, 0 within 64 "
            f"{spec.dtype} ulp of its largest |x| ({largest:.3g}), where every initial kink is "
            "with zero biases: the theory needs x_j ≠ 0"
        )  # fmt: skip


def _check_bias_scale(spec: ExperimentSpec, sigma: float) -> None:
    """normal(σ) and uniform(σ): σ non-zero in the run's dtype, and its square (the loss
    and the paper's step size square the biases) far from the dtype's largest number."""
    finfo = np.finfo(spec.dtype)
    largest = math.sqrt(float(finfo.max)) / 1024
    if float(np.asarray(sigma, spec.dtype)) == 0:
        raise SpecError("bias_init", f"σ = {sigma:g} is 0 in {spec.dtype}")
    if sigma > largest:
        raise SpecError(
            "bias_init", f"σ = {sigma:g} is above {largest:.3g}, the square root of {spec.dtype}'s "
            "largest number over 1024: the loss and the step size square the biases"
        )  # fmt: skip


def _check_sample_count(spec: ExperimentSpec) -> None:
    """N multinomial draws per run (N = n² by default) stay exact: the sampler counts in
    `data.count_dtype()` (`jax.random.multinomial`), whose integers are exact up to 2^53
    (float64, x64 on) or 2^24 (float32); above, the counts stop summing to N."""
    if spec.data in CONTINUOUS or spec.split is not None:
        return
    counting = np.dtype(count_dtype())
    bits = np.finfo(counting).nmant + 1
    if spec.num_samples is not None:
        if spec.num_samples > 2**bits:
            raise SpecError("num_samples", f"above 2^{bits}, {counting}'s exact integers")
        return
    for width in spec.widths:
        if width**2 > 2**bits:
            raise SpecError(
                "widths",
                f"width {width}: N = n² = {width**2} draws exceed 2^{bits}, {counting}'s "
                f"exact integers (widths up to {math.isqrt(2**bits)}); set num_samples ≤ "
                f"2^{bits} (in a --config file)"
                + (" or enable jax_enable_x64" if bits < 53 else ""),
            )


def _check_training(spec: ExperimentSpec) -> None:
    """Optimizer, minibatches, initialization, step size and α."""
    _choice(spec, "optimizer", NAMED)
    if not _is_positive_int(spec.batch_size):
        raise SpecError("batch_size", f"{spec.batch_size!r} is not a positive integer")
    if spec.sampler is not None:
        _choice(spec, "sampler", SAMPLERS)
    try:
        optimizer = spec.trained_by
    except ValueError as err:
        raise SpecError("sampler", str(err).split(": ", 1)[-1]) from None
    try:
        check_multinomial_steps(optimizer, spec.check_every * spec.max_checks)
    except ValueError as err:
        raise SpecError(*str(err).split(": ", 1)) from None
    if spec.sampler == "epoch" and spec.batch_size > spec.training_points:
        raise SpecError(
            "batch_size",
            f"{spec.batch_size} exceeds the {spec.training_points} training points (epoch sampler)",
        )
    _choice(spec, "init", INITS)
    if not isinstance(spec.bias_init, str):
        raise SpecError("bias_init", f"{spec.bias_init!r} is not a name")
    try:
        mode, sigma = parse_bias_init(spec.bias_init)
    except ValueError as err:
        raise SpecError("bias_init", str(err).split(": ", 1)[-1]) from None
    if mode in ("normal", "uniform"):
        _check_bias_scale(spec, sigma)
    _check_step_size(spec)
    if not is_real(spec.alpha) or not 0.0 <= spec.alpha < 1.0:
        raise SpecError("alpha", f"{spec.alpha!r} is not in [0, 1)")


def _check_step_size(spec: ExperimentSpec) -> None:
    """A rule that applies to the data and parameterization, or a positive number that
    stays positive and finite times `step_factor` in the dtype."""
    if spec.step_size not in STEP_SIZE_RULES and not (
        is_real(spec.step_size) and 0 < _as_float(spec.step_size) < math.inf
    ):
        raise SpecError(
            "step_size",
            f"{spec.step_size!r} is not one of {', '.join(STEP_SIZE_RULES)} or a positive number",
        )
    if spec.input_dim > 1 and spec.step_size == "paper":
        raise SpecError(
            "step_size", "'paper' (the default) is the 1-D rule; use 'ntk' for d-dim data "
            "(or 'param-norm', the star code's)"
        )  # fmt: skip
    if spec.init == "ntk" and spec.step_size == "paper":
        raise SpecError(
            "step_size", "'paper' (the default) reads the raw (a, b, w) of the standard "
            "parameterization; with init 'ntk' use 'ntk'"
        )  # fmt: skip
    if not is_real(spec.step_factor) or not (0 < spec.step_factor < math.inf):
        raise SpecError("step_factor", f"{spec.step_factor!r} is not a positive number")
    if is_real(spec.step_size) and spec.dtype in DTYPES:
        with np.errstate(over="ignore", under="ignore"):
            try:
                step = np.dtype(spec.dtype).type(spec.step_size) * np.dtype(spec.dtype).type(
                    spec.step_factor
                )
            except OverflowError:  # an int beyond the dtype
                step = np.inf
        if not (0 < step < np.inf):
            raise SpecError(
                "step_size", f"{spec.step_size!r} × step_factor {spec.step_factor!r} is "
                f"{step} in {spec.dtype}: not a positive finite step"
            )  # fmt: skip


def _as_float(value) -> float:
    """A real number as a float; inf beyond float64 (an int of 400 digits)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _check_stopping(spec: ExperimentSpec) -> None:
    """Stop rules, what P(stuck) counts, and the adaptive run count."""
    if not isinstance(spec.early_stopping, bool):
        raise SpecError("early_stopping", "must be true or false")
    if spec.stop_on is not None:
        if not all(isinstance(rule, str) for rule in spec.stop_on):
            raise SpecError("stop_on", f"{spec.stop_on!r} is not a list of rule names")
        unknown = sorted(set(spec.stop_on) - set(engine.STOP_RULES))
        if unknown:
            raise SpecError("stop_on", not_rules(unknown))
        if "crossed" in spec.stop_on and spec.input_dim == 1 and spec.bias_init != "zero":
            raise SpecError(
                "stop_on",
                f"'crossed' stops a 1-D run once a kink reaches the data; bias_init "
                f"{spec.bias_init!r} puts kinks there from the start (drop 'crossed')",
            )
        proofs = engine.PROOF_RULES & set(spec.stop_on)
        if proofs and not spec.certified:
            raise SpecError(
                "stop_on",
                f"{sorted(proofs)} are proofs for gd on 1-D data with the standard init and "
                "zero biases only",
            )
    if spec.target_halfwidth is not None:
        if not is_real(spec.target_halfwidth) or not 0 < spec.target_halfwidth < 0.5:
            raise SpecError("target_halfwidth", f"{spec.target_halfwidth!r} is not in (0, 0.5)")
        if spec.max_runs is None:
            raise SpecError("max_runs", "is needed with target_halfwidth (a bound on each cell)")
    if spec.max_runs is not None and spec.target_halfwidth is None:
        raise SpecError("max_runs", "bounds the growth of target_halfwidth, which is not set")
    if spec.max_runs is not None and not _is_positive_int(spec.max_runs, spec.runs):
        raise SpecError("max_runs", f"{spec.max_runs!r} is not an integer ≥ runs ({spec.runs})")
    _choice(spec, "stuck_rule", STUCK_RULES)
    if spec.stuck_rule == "certificate" and not spec.certified:
        raise SpecError(
            "stuck_rule",
            "the certificate is a proof for gd on 1-D data with zero biases only; use 'final'",
        )
    if spec.stuck_rule == "certificate" and not spec.stops_on_proofs:
        missing = sorted(engine.PROOF_RULES - set(spec.stop_on))
        raise SpecError(
            "stuck_rule",
            f"'certificate' counts the stuck and degenerate statuses, which runs get only "
            f"from those stop_on rules; stop_on {list(spec.stop_on)} lacks "
            f"{' and '.join(missing)}: add {'it' if len(missing) == 1 else 'them'} or use "
            "'final'",
        )
