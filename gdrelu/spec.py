"""What to run: `ExperimentSpec`, and `SpecError` naming a bad setting.

Every setting is checked once, here, when a spec is built (docs/theory.md: "Model",
"Data", "Step size", "Outcome of a run"; docs/design.md for the buckets).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import engine
from gdrelu.data import CONTINUOUS, DATASETS, FINITE, count_dtype, load_user_data, split_sizes
from gdrelu.init import INITS, parameterization_of, parse_bias_init
from gdrelu.numbers import is_integer, is_real
from gdrelu.optim import NAMED, SAMPLERS, check_multinomial_steps, get_optimizer

if TYPE_CHECKING:
    from gdrelu.cells import Cell

DTYPES = ("float64", "float32")
STEP_SIZE_RULES = ("paper", "ntk", "small", "param-norm")
DATASET_DIMENSION = {"six-points": 1, "star": 2, "cross": 2, "double-cross": 2, "p-ex": 1}
STUCK_RULES = ("auto", "certificate", "final")
BUCKETS = ("auto", "pow2", "one", "none")
MAX_WIDTH = 2**40  # 24 bytes of parameters per neuron: 26 TB for one run
RAYS = {"star": 11, "cross": 4, "double-cross": 8}  # rays of each 2-D ray support


class SpecError(ValueError):
    """A bad experiment setting; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """What to run: the paper's 1-D GD experiment over widths × Δ by default.

    `data` is one of `data.DATASETS`: a finite support (the six points, star, cross,
    double-cross, multi-axis in `dim` dimensions) gets per-run multinomial weights from
    N = `num_samples` draws (None: N = n²); a continuous distribution (p-ex, radial and
    rbf in `dim` dimensions) gets `num_train` i.i.d. points per run (None: 256·d) with
    equal weights and `num_heldout` validation and test points each, all standardized
    with the training statistics; every run reports its best validation loss over the
    checks and the test loss there.
    With `split` = (train, validation, test) fractions, a user file's points are split
    per run (a random permutation from the run's key) and treated like continuous data:
    equal weights, held-out sets, training statistics. Δ (`deltas`) is added to every
    target. `step_size` is "paper" (1/λ_max(M^{1/2} A_ref M^{1/2}) at initialization),
    "ntk" (1/λ_max of the weighted neural-tangent Gram at initialization,
    `theory.ntk_step_size`), "small" (0.01/n), "param-norm" (1/‖θ‖² at initialization,
    the paper's star code, `theory.param_norm_step_size`) or a positive number, times
    `step_factor`.
    `optimizer` is one of `optim.NAMED`;
    `sampler` (None: the optimizer's default) and `batch_size` B pick its minibatches.
    `init` is "he" (standard), "swapped" or "ntk" (raw N(0, 1) weights, scaled in the
    forward pass); `bias_init` is one of `init.BIAS_INITS` (with σ or k filled in).
    `target_halfwidth` H (with `max_runs`) adds runs to each cell in batches of `runs`
    until its 95% interval half-width is at most H (`runner.run_experiment`).
    `early_stopping` also stops a run when its validation loss has not improved by 1e-8
    in 10 checks (a finite support's validation weights are drawn like its training
    weights).
    `stop_on` is passed to `simulate` (None: the rules valid for the optimizer; none
    when the biases do not start at zero, where the paper's crossing rule and
    certificate do not apply).
    `stuck_rule` says what P(stuck) counts: "certificate" (certified or degenerate; the
    default where the certificate is a proof: full-batch GD on 1-D data, the paper's init,
    and `stop_on` has both rules),
    "final" (the default elsewhere, and `gdrelu compare`'s for all: certified or
    degenerate, or a final network still in the linear regime, `detectors`).
    `buckets` says which widths share a compiled program (`buckets.width_buckets`); a
    run's result does not depend on it.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    data: str = "six-points"
    dim: int | None = None
    num_train: int | None = None
    data_file: str | None = None
    num_heldout: int = 1024
    split: tuple[float, float, float] | None = None
    deltas: tuple[float, ...] = (0.0, 0.01, 0.1)
    runs: int = 1000
    seed: int = 0
    dtype: str = "float64"
    check_every: int = 1000
    max_checks: int = 1000
    optimizer: str = "gd"
    sampler: str | None = None
    batch_size: int = 16
    init: str = "he"
    bias_init: str = "zero"
    step_size: str | float = "paper"
    step_factor: float = 1.0
    num_samples: int | None = None
    alpha: float = 0.0
    early_stopping: bool = False
    stop_on: tuple[str, ...] | None = None
    stuck_rule: str = "auto"
    target_halfwidth: float | None = None
    max_runs: int | None = None
    buckets: str = "auto"

    def __post_init__(self):
        for name in ("widths", "deltas", "stop_on", "split"):  # lists, as a caller may pass
            value = getattr(self, name)
            if isinstance(value, np.ndarray):  # numbers as Python's, for hashing and JSON
                value = value.tolist()
            if isinstance(value, list | tuple):
                plain = (v.item() if isinstance(v, np.generic) else v for v in value)
                if name == "deltas":  # -0.0 as 0.0: one cell, recorded and printed alike
                    plain = (v + 0.0 if isinstance(v, float) else v for v in plain)
                object.__setattr__(self, name, tuple(plain))
            elif name in ("widths", "deltas") and not isinstance(value, tuple):
                raise SpecError(name, f"a tuple, such as ({value!r},), not {value!r}")
        for check in (_check_data, _check_grid, _check_training, _check_stopping):
            check(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentSpec:
        """Build a spec from a mapping (a TOML table), naming any unknown field."""
        known = {f.name for f in dataclasses.fields(cls)}
        for name in values:
            if name not in known:
                raise SpecError(name, f"unknown setting (known: {', '.join(sorted(known))})")
        values = dict(values)
        for name in ("widths", "deltas", "stop_on", "split"):
            if name in values:
                if name in ("stop_on", "split") and values[name] is None:
                    continue
                if not isinstance(values[name], list | tuple):
                    raise SpecError(name, "must be a list")
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @functools.cached_property
    def user_data(self) -> tuple[np.ndarray, np.ndarray]:
        """x (m,) or (m, d) and y (m,) of `data_file`, read once per spec (numpy only:
        specs are checked before JAX starts its backends)."""
        return load_user_data(self.data_file)

    @functools.cached_property
    def data_sha256(self) -> str | None:
        """The data file's content hash (a cell follows the data, not the path), hashed
        once per spec; None without a file."""
        if self.data_file is None:
            return None
        return hashlib.sha256(Path(self.data_file).read_bytes()).hexdigest()

    @property
    def input_dim(self) -> int:
        """d: the data set's or the file's, else `dim` (default 1)."""
        if self.data == "file":
            x = self.user_data[0]
            return 1 if x.ndim == 1 else x.shape[1]
        return DATASET_DIMENSION.get(self.data) or self.dim or 1

    @property
    def num_points(self) -> int:
        """Training points per run: the support's size, or `num_train` (default 256·d)."""
        if self.data in CONTINUOUS:
            return self.num_train or 256 * self.input_dim
        if self.data == "file":
            return self.user_data[1].shape[0]
        if self.data == "six-points":
            return 6
        return 3 * (RAYS.get(self.data) or 2 * self.input_dim)

    def support(self, dtype=None) -> tuple[jax.Array, jax.Array]:
        """The points x (m,) or (m, d) and targets y (m,) of a finite data set (before Δ)."""
        if self.data == "file":
            x, y = self.user_data
            return jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        return FINITE[self.data](self.input_dim, dtype)

    @property
    def paper_setting(self) -> bool:
        """GD's theory applies: standard or swapped weights with zero biases."""
        return parameterization_of(self.init) == "standard" and self.bias_init == "zero"

    @property
    def certified(self) -> bool:
        """GD's certificate (the `stop_on` rules stuck and degenerate) is a proof here:
        full-batch GD on 1-D data in the paper's setting."""
        return self.optimizer == "gd" and self.paper_setting and self.input_dim == 1

    @property
    def training_points(self) -> int:
        """Points each run trains on: `num_points`, or a split file's training part."""
        if self.split is None:
            return self.num_points
        return split_sizes(self.num_points, self.split)[0]

    @property
    def full_batch(self) -> bool:
        """Whether its optimizer trains on every point at every step (sampler "full")."""
        return get_optimizer(self.optimizer, sampler=self.sampler).sampler == "full"

    @property
    def parameterization(self) -> str:
        return parameterization_of(self.init)

    @property
    def held_out(self) -> bool:
        """Whether runs have held-out validation and test points (else weights)."""
        return self.data in CONTINUOUS or self.split is not None

    @property
    def path(self) -> str:
        """The engine path its runs train on (`engine.auto_plan`)."""
        return self.engine_plan[0]

    @property
    def mixed_layout(self) -> bool:
        """Whether its batches keep general blocks beside the path's (`engine.mixes_paths`)."""
        return self.engine_plan[1]

    @functools.cached_property
    def engine_plan(self) -> tuple[str, bool]:
        """(path, mixed layout) of `engine.auto_plan`; kept, as the buckets ask for it at
        every batch."""
        return engine.auto_plan(
            self.optimizer,
            sampler=self.sampler,
            batch_size=self.batch_size,
            stop_on=self.simulate_stop_on,
            parameterization=self.parameterization,
            one_dimensional=self.input_dim == 1,
            early_stopping=self.early_stopping,
            held_out=self.held_out,
        )

    @property
    def simulate_stop_on(self) -> tuple[str, ...] | None:
        """`stop_on` for `simulate`: the spec's, else none outside the paper's setting."""
        if self.stop_on is not None or self.paper_setting:
            return self.stop_on
        return ()

    @property
    def stops_on_proofs(self) -> bool:
        """Whether runs stop on both statuses the certificate rule counts, stuck and
        degenerate: `simulate` sets them only where `stop_on` asks for them."""
        return self.stop_on is None or {"stuck", "degenerate"} <= set(self.stop_on)

    @property
    def final_stuck_rule(self) -> bool:
        """Whether P(stuck) reads the final network (see `stuck_rule`)."""
        if self.stuck_rule != "auto":
            return self.stuck_rule == "final"
        return not (self.certified and self.stops_on_proofs)

    def cells(self) -> list[Cell]:
        from gdrelu.cells import Cell

        return [Cell(width, delta, self) for width in self.widths for delta in self.deltas]


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
        zero_biases = spec.bias_init == "zero"  # every initial kink at 0
        if zero_biases and spec.input_dim == 1 and spec.split is None and 0 in spec.user_data[0]:
            raise SpecError(
                "data_file", f"{spec.data_file} has a point at x = 0, where every initial kink "
                "is with zero biases: the theory needs x_j ≠ 0"
            )  # fmt: skip
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
        len(spec.split) != 3
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
        if len(set(getattr(spec, name))) != len(getattr(spec, name)):
            raise SpecError(name, "has duplicates")
    for name, low in (("runs", 1), ("seed", 0), ("check_every", 1), ("max_checks", 1)):
        value = getattr(spec, name)
        if not _is_positive_int(value, low):
            raise SpecError(name, f"{value!r} is not an integer ≥ {low}")
    if spec.seed >= 2**32:
        raise SpecError("seed", "must be below 2**32")
    try:
        engine.check_step_budget(spec.check_every, spec.max_checks)
    except ValueError as err:
        raise SpecError("max_checks", str(err).split(": ", 1)[-1]) from None
    _choice(spec, "dtype", DTYPES)
    if spec.dtype == "float64" and not jax.config.jax_enable_x64:
        raise SpecError(
            "dtype",
            "float64 needs JAX's 64-bit mode: call "
            'jax.config.update("jax_enable_x64", True) at start-up, or use float32',
        )
    _choice(spec, "buckets", BUCKETS)
    _check_sample_count(spec)


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
                f"2^{bits}" + (" or enable jax_enable_x64" if bits < 53 else ""),
            )


DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentSpec)}


def _check_training(spec: ExperimentSpec) -> None:
    """Optimizer, minibatches, initialization and step size."""
    _choice(spec, "optimizer", NAMED)
    if not _is_positive_int(spec.batch_size):
        raise SpecError("batch_size", f"{spec.batch_size!r} is not a positive integer")
    if spec.sampler is not None:
        _choice(spec, "sampler", SAMPLERS)
    try:
        optimizer = get_optimizer(spec.optimizer, sampler=spec.sampler, batch_size=spec.batch_size)
    except ValueError as err:
        raise SpecError("sampler", str(err).split(": ", 1)[-1]) from None
    try:
        check_multinomial_steps(optimizer, spec.check_every * spec.max_checks)
    except ValueError as err:
        raise SpecError("max_checks", str(err).split(": ", 1)[-1]) from None
    if spec.sampler == "epoch" and spec.batch_size > spec.training_points:
        raise SpecError(
            "batch_size",
            f"{spec.batch_size} exceeds the {spec.training_points} training points (epoch sampler)",
        )
    _choice(spec, "init", INITS)
    if not isinstance(spec.bias_init, str):
        raise SpecError("bias_init", f"{spec.bias_init!r} is not a name")
    try:
        parse_bias_init(spec.bias_init)
    except ValueError as err:
        raise SpecError("bias_init", str(err).split(": ", 1)[-1]) from None
    if spec.step_size not in STEP_SIZE_RULES and not (
        is_real(spec.step_size) and 0 < _as_float(spec.step_size) < math.inf
    ):
        raise SpecError(
            "step_size",
            f"{spec.step_size!r} is not one of {', '.join(STEP_SIZE_RULES)} or a positive number",
        )
    if spec.input_dim > 1 and spec.step_size == "paper":
        raise SpecError("step_size", "'paper' is the 1-D rule; use 'ntk' for d-dim data")
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
    if not is_real(spec.alpha) or not 0.0 <= spec.alpha < 1.0:
        raise SpecError("alpha", f"{spec.alpha!r} is not in [0, 1)")


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
        unknown = set(spec.stop_on) - set(engine.STOP_RULES)
        if unknown:
            known = engine.STOP_RULES
            raise SpecError("stop_on", f"unknown rules {sorted(unknown)}; known: {known}")
        if "crossed" in spec.stop_on and spec.input_dim == 1 and spec.bias_init != "zero":
            raise SpecError(
                "stop_on",
                f"'crossed' stops a 1-D run once a kink reaches the data; bias_init "
                f"{spec.bias_init!r} puts kinks there from the start (drop 'crossed')",
            )
        proofs = {"stuck", "degenerate"} & set(spec.stop_on)
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
        raise SpecError(
            "stuck_rule",
            f"'certificate' counts the stuck and degenerate statuses, which stop_on "
            f"{list(spec.stop_on)} never sets; add them to stop_on or use 'final'",
        )
