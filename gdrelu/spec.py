"""What to run: `ExperimentSpec`, and `SpecError` naming a bad setting.

Every setting is checked once, when a spec is built (`spec_checks`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import engine
from gdrelu.data import CONTINUOUS, FINITE, load_user_data, split_sizes
from gdrelu.init import parameterization_of
from gdrelu.optim import get_optimizer

if TYPE_CHECKING:
    from gdrelu.cells import Cell
    from gdrelu.optim import Optimizer

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


def _plain(value):
    """A numpy or JAX scalar (0-d array) as the Python number or bool it holds; any other
    value as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__") and not isinstance(value, str) and np.ndim(value) == 0:
        try:
            return np.asarray(value).item()
        except TypeError:  # a JAX PRNG key: no number, refused by the field's check
            return value
    return value


def _dtype_name(value):
    """A numpy or JAX type's dtype name ("float32"), or the value where it is none."""
    try:
        return np.dtype(value).name
    except TypeError:
        return value


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """What to run: the paper's 1-D GD experiment over widths × Δ by default.

    `data` is one of `data.DATASETS`: a finite support (the six points, star, cross,
    double-cross, multi-axis in `dim` dimensions) gets per-run multinomial weights from
    N = `num_samples` draws (None: N = n²); a continuous distribution (p-ex in 1-D,
    radial and rbf in `dim` dimensions) gets `num_train` i.i.d. points per run (None: 256·d) with
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
    `sampler` (None: the optimizer's default) and `batch_size` B pick its minibatches; a
    full-batch spec (sampler "full") trains on every point and ignores B, so that
    `gdrelu compare` can give GD the other optimizers' B (the CLI refuses a B that no
    optimizer of the command draws).
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
    `alpha` is the leak α ∈ [0, 1) of σ_α (0: ReLU).
    `stuck_rule` says what P(stuck) counts: "certificate" (certified or degenerate; what
    "auto", the default, takes where the certificate is a proof: full-batch GD on 1-D
    data, the paper's init, and `stop_on` has both rules),
    "final" (what "auto" takes elsewhere, and `gdrelu compare`'s for all: certified or
    degenerate, or a final network still in the linear regime, `detectors`, of a run
    neither diverged nor stopped by the crossing rule).
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
        for field in dataclasses.fields(self):  # numpy and JAX scalars as Python's, for JSON
            object.__setattr__(self, field.name, _plain(getattr(self, field.name)))
        if isinstance(self.dtype, type | np.dtype):  # np.float32, jnp.float64: by name
            object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        for name in ("widths", "deltas", "stop_on", "split"):  # lists, as a caller may pass
            value = getattr(self, name)
            if hasattr(value, "__array__") and not isinstance(value, str):  # numpy, JAX
                value = np.asarray(value).tolist()  # numbers as Python's, for hashing and JSON
            if isinstance(value, list | tuple):
                plain = (_plain(v) for v in value)
                if name == "deltas":  # -0.0 as 0.0: one cell, recorded and printed alike
                    plain = (v + 0.0 if isinstance(v, float) else v for v in plain)
                object.__setattr__(self, name, tuple(plain))
            elif name in ("widths", "deltas", "stop_on") and value is not None:
                if hasattr(value, "__iter__") and not isinstance(value, str):  # a generator
                    raise SpecError(name, f"a tuple or list, not a {type(value).__name__}")
                raise SpecError(name, f"a tuple, such as ({value!r},), not {value!r}")
        from gdrelu.spec_checks import check  # it reads this module's names

        check(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentSpec:
        """Build a spec from a mapping (a TOML table), naming any unknown field; a list
        field may also be a numpy array, as the constructor takes."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values: a mapping of spec fields (a TOML table), not {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        for name in values:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise SpecError(name, f"unknown setting ({hint}known: {', '.join(sorted(known))})")
        values = dict(values)
        for name in ("widths", "deltas", "stop_on", "split"):
            if name in values:
                if name in ("stop_on", "split") and values[name] is None:
                    continue
                if isinstance(values[name], np.ndarray) and values[name].ndim == 1:
                    values[name] = values[name].tolist()
                if not isinstance(values[name], list | tuple):
                    raise SpecError(name, "must be a list")
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applied(self) -> dict[str, Any]:
        """`to_dict` with what its open fields leave to the engine filled in: the sampler,
        the stop rules and the stuck rule its runs get (as the reproduction report prints
        them); the step-size rule stays a name, as each run has its own h."""
        stuck_rule = "final" if self.final_stuck_rule else "certificate"
        return {**self.to_dict(), "sampler": self.trained_by.sampler,
                "stop_on": self.stop_rules, "stuck_rule": stuck_rule}  # fmt: skip

    @property
    def stop_rules(self) -> tuple[str, ...]:
        """The rules that stop its runs at a check (`outcome.stop_rules`, without early
        stopping): `stop_on`, else those the engine applies to this optimizer and data."""
        from gdrelu.outcome import stop_rules

        standard = self.parameterization == "standard"
        return stop_rules(
            self.simulate_stop_on, self.trained_by, standard, self.input_dim == 1, "columns", False
        )

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
    def trained_by(self) -> Optimizer:
        """The `optim.Optimizer` its runs train with: `optimizer`, `sampler`, `batch_size`."""
        return get_optimizer(self.optimizer, sampler=self.sampler, batch_size=self.batch_size)

    @property
    def full_batch(self) -> bool:
        """Whether its optimizer trains on every point at every step (sampler "full")."""
        return self.trained_by.sampler == "full"

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
        """Whether `stop_on` asks for both statuses the certificate rule counts, stuck and
        degenerate (`simulate` sets them only then); None asks for them only where the
        spec is `certified`, so read it together with that."""
        return self.stop_on is None or set(self.stop_on) >= engine.PROOF_RULES

    @property
    def applies_certificate(self) -> bool:
        """Whether `simulate` checks these runs against both of the certificate's rules
        (`SimulationResult.certificate_checked`): `certified` and `stops_on_proofs`."""
        return self.certified and self.stops_on_proofs

    @property
    def final_stuck_rule(self) -> bool:
        """Whether P(stuck) reads the final network (see `stuck_rule`)."""
        if self.stuck_rule != "auto":
            return self.stuck_rule == "final"
        return not self.applies_certificate

    def cells(self) -> list[Cell]:
        from gdrelu.cells import Cell

        return [Cell(width, delta, self) for width in self.widths for delta in self.deltas]


DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentSpec)}
