"""Experiment specs, their cells, and the keys that make every run reproducible.

A spec expands into cells (one per width × Δ); a run is (seed, cell, index in cell) and
its key is fold_in(fold_in(key(seed), cell_hash), index), where cell_hash is a stable
hash of the settings that define the cell's data and initialization. A run's result
thus depends neither on batching nor on which other cells run, and two optimizers given
the same seed see the same data and initial networks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu import engine, memory, theory
from gdrelu.data import (
    CONTINUOUS,
    DATASETS,
    FINITE,
    WeightedData,
    load_user_data,
    multinomial_weights,
    training_statistics,
)
from gdrelu.engine import STOP_RULES, SimulationResult, Status, simulate
from gdrelu.init import INITS, init_bias, padded_init, parse_bias_init
from gdrelu.model import Params, Scaling, padded, scaling_of
from gdrelu.optim import NAMED, SAMPLERS, get_optimizer
from gdrelu.stats import failure_probability

STUCK_STATUSES = (Status.STUCK, Status.A_DEGENERATE, Status.X_DEGENERATE)

DTYPES = ("float64", "float32")
STEP_SIZE_RULES = ("paper", "ntk", "small")
FIXED_DIMENSION = {"six-points": 1, "star": 2, "cross": 2, "double-cross": 2, "p-ex": 1}
STUCK_RULES = ("auto", "certificate", "final")
BUCKETS = ("auto", "pow2", "one", "none")
# With "auto" buckets, the widths up to this share one program when the runs train on the
# propagator, whose GD step costs O(1) in the width: padding them costs less than a
# compile per width (default `gdrelu run` on 2 CPU cores, cold: see `width_buckets`).
SHARED_BUCKET = 128
NOISE_STREAM = 0x5EED  # fold_in(run key, NOISE_STREAM): the run's minibatch noise
BIAS_STREAM = 0xB1A5  # fold_in(parameter key, BIAS_STREAM): the run's layer-1 biases


class SpecError(ValueError):
    """A bad experiment setting; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """What to run: the paper's 1-D GD experiment over widths × Δ (PAPER.md, "Reference protocol").

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
    target. `step_size` is "paper" (1/λ_max(M^{1/2} A_ref M^{1/2})
    at initialization), "ntk" (1/λ_max of the weighted neural-tangent Gram at
    initialization, `theory.ntk_step_size`), "small" (0.01/n) or a positive number,
    times `step_factor`.
    `optimizer` is one of `optim.NAMED`;
    `sampler` (None: the optimizer's default) and `batch_size` B pick its minibatches.
    `init` is "he" (standard), "swapped" or "ntk" (raw N(0, 1) weights, scaled in the
    forward pass); `bias_init` is one of `init.BIAS_INITS` (with σ or k filled in).
    `target_halfwidth` H (with `max_runs`) adds runs to each cell in batches of `runs`
    until its 95% interval half-width is at most H (`run_experiment`).
    `stop_on` is passed to `simulate` (None: the rules valid for the optimizer; none
    when the biases do not start at zero, where the paper's crossing rule and
    certificate do not apply).
    `stuck_rule` says what P(stuck) counts: "certificate" (GD's default: certified or
    degenerate), "final" (the other optimizers' default, and `gdrelu compare`'s for all:
    certified or degenerate, or a final network still in the linear regime, `detectors`).
    `buckets` says which widths share a compiled program (`width_buckets`); a run's
    result does not depend on it.
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
        _validate(self)

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

    @property
    def input_dim(self) -> int:
        """d: fixed by the data set or file, else `dim` (default 1)."""
        if self.data == "file":  # numpy only: specs are checked before JAX starts
            x = load_user_data(self.data_file)[0]
            return 1 if x.ndim == 1 else x.shape[1]
        return FIXED_DIMENSION.get(self.data) or self.dim or 1

    @property
    def num_points(self) -> int:
        """Training points per run: the support's size, or `num_train` (default 256·d)."""
        if self.data in CONTINUOUS:
            return self.num_train or 256 * self.input_dim
        if self.data == "file":
            return load_user_data(self.data_file)[1].shape[0]
        rays = {"star": 11, "cross": 4, "double-cross": 8, "multi-axis": 2 * self.input_dim}
        return 6 if self.data == "six-points" else 3 * rays[self.data]

    def support(self, dtype=None) -> tuple[jax.Array, jax.Array]:
        """The points x (m,) or (m, d) and targets y (m,) of a finite data set (before Δ)."""
        if self.data == "file":
            x, y = load_user_data(self.data_file)
            return jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        return FINITE[self.data](self.input_dim, dtype)

    @property
    def paper_setting(self) -> bool:
        """GD's theory applies: standard or swapped weights with zero biases."""
        return self.init != "ntk" and self.bias_init == "zero"

    @property
    def parameterization(self) -> str:
        return "ntk" if self.init == "ntk" else "standard"

    @property
    def held_out(self) -> bool:
        """Whether runs have held-out validation and test points (else weights)."""
        return self.data in CONTINUOUS or self.split is not None

    @functools.cached_property
    def path(self) -> str:
        """The engine path its runs train on (`engine.auto_path`); kept, as `width_buckets`
        asks for it at every batch and a --data-file's dimension is read from the file."""
        return engine.auto_path(
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
    def final_stuck_rule(self) -> bool:
        """Whether P(stuck) reads the final network (see `stuck_rule`)."""
        if self.stuck_rule != "auto":
            return self.stuck_rule == "final"
        return self.optimizer != "gd" or not self.paper_setting

    def cells(self) -> list[Cell]:
        return [Cell(width, delta, self) for width in self.widths for delta in self.deltas]


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _validate_data(spec: ExperimentSpec) -> None:
    if spec.data not in (*DATASETS, "file"):
        raise SpecError("data", f"{spec.data!r} is not one of {', '.join(DATASETS)} or file")
    if (spec.data == "file") != (spec.data_file is not None):
        raise SpecError("data_file", "is needed exactly when data = 'file'")
    if spec.data == "file":
        try:
            x, _ = load_user_data(spec.data_file)
        except ValueError as err:
            raise SpecError("data_file", str(err).split(": ", 1)[-1]) from None
        if spec.dim not in (None, 1 if x.ndim == 1 else x.shape[1]):
            raise SpecError("dim", f"the inputs of {spec.data_file} are not {spec.dim}-dimensional")
    if spec.dim is not None and (not _is_int(spec.dim) or spec.dim < 1):
        raise SpecError("dim", f"{spec.dim!r} is not a positive integer")
    fixed = FIXED_DIMENSION.get(spec.data)
    if fixed is not None and spec.dim not in (None, fixed):
        raise SpecError("dim", f"{spec.data} data are {fixed}-dimensional")
    if spec.num_train is not None:
        if spec.data not in CONTINUOUS:
            raise SpecError("num_train", f"{spec.data} data have a fixed support; use num_samples")
        if not _is_int(spec.num_train) or spec.num_train < 2:
            raise SpecError("num_train", f"{spec.num_train!r} is not an integer ≥ 2")
    if spec.data in CONTINUOUS and spec.num_samples is not None:
        raise SpecError("num_samples", f"{spec.data} data are sampled i.i.d.; use num_train")
    if spec.split is not None:
        if spec.data != "file":
            raise SpecError("split", "splits a user data file (data = 'file')")
        if (
            len(spec.split) != 3
            or not all(_is_real(f) and f > 0 for f in spec.split)
            or abs(sum(spec.split) - 1.0) > 1e-9
        ):
            raise SpecError("split", f"{spec.split!r} is not three positive fractions summing to 1")
        sizes = _split_sizes(spec.num_points, spec.split)
        if min(sizes) < 1:
            raise SpecError("split", f"gives empty parts {sizes} of the {spec.num_points} points")
    if not _is_int(spec.num_heldout) or spec.num_heldout < 1:
        raise SpecError("num_heldout", f"{spec.num_heldout!r} is not a positive integer")
    if spec.input_dim > 1 and spec.step_size == "paper":
        raise SpecError("step_size", "'paper' is the 1-D rule; use 'ntk' for d-dim data")


def _validate(spec: ExperimentSpec) -> None:
    _validate_data(spec)
    if not spec.widths:
        raise SpecError("widths", "needs at least one width")
    for width in spec.widths:
        if not _is_int(width) or width < 1:
            raise SpecError("widths", f"{width!r} is not a positive integer")
    if len(set(spec.widths)) != len(spec.widths):
        raise SpecError("widths", "has duplicates")
    if not spec.deltas:
        raise SpecError("deltas", "needs at least one offset")
    for delta in spec.deltas:
        if not _is_real(delta) or not math.isfinite(delta):
            raise SpecError("deltas", f"{delta!r} is not a finite number")
    if len(set(spec.deltas)) != len(spec.deltas):
        raise SpecError("deltas", "has duplicates")
    for name, low in (("runs", 1), ("seed", 0), ("check_every", 1), ("max_checks", 1)):
        value = getattr(spec, name)
        if not _is_int(value) or value < low:
            raise SpecError(name, f"{value!r} is not an integer ≥ {low}")
    if spec.seed >= 2**32:
        raise SpecError("seed", "must be below 2**32")
    if spec.dtype not in DTYPES:
        raise SpecError("dtype", f"{spec.dtype!r} is not one of {', '.join(DTYPES)}")
    if spec.optimizer not in NAMED:
        raise SpecError("optimizer", f"{spec.optimizer!r} is not one of {', '.join(NAMED)}")
    if not _is_int(spec.batch_size) or spec.batch_size < 1:
        raise SpecError("batch_size", f"{spec.batch_size!r} is not a positive integer")
    if spec.sampler is not None and spec.sampler not in SAMPLERS:
        raise SpecError("sampler", f"{spec.sampler!r} is not one of {', '.join(SAMPLERS)}")
    try:
        get_optimizer(spec.optimizer, sampler=spec.sampler, batch_size=spec.batch_size)
    except ValueError as err:
        raise SpecError("sampler", str(err).split(": ", 1)[-1]) from None
    if spec.sampler == "epoch" and spec.batch_size > spec.num_points:
        raise SpecError(
            "batch_size",
            f"{spec.batch_size} exceeds the {spec.num_points} data points (epoch sampler)",
        )
    if spec.init not in INITS:
        raise SpecError("init", f"{spec.init!r} is not one of {', '.join(INITS)}")
    if not isinstance(spec.bias_init, str):
        raise SpecError("bias_init", f"{spec.bias_init!r} is not a name")
    try:
        parse_bias_init(spec.bias_init)
    except ValueError as err:
        raise SpecError("bias_init", str(err).split(": ", 1)[-1]) from None
    proofs = {"stuck", "degenerate"} & set(spec.stop_on or ())
    if proofs and (spec.init == "ntk" or spec.bias_init != "zero"):
        raise SpecError("stop_on", f"{sorted(proofs)} need the standard init with zero biases")
    if spec.step_size not in STEP_SIZE_RULES and not (
        _is_real(spec.step_size) and math.isfinite(spec.step_size) and spec.step_size > 0
    ):
        raise SpecError(
            "step_size", f"{spec.step_size!r} is not one of {STEP_SIZE_RULES} or a positive number"
        )
    if not _is_real(spec.step_factor) or not (0 < spec.step_factor < math.inf):
        raise SpecError("step_factor", f"{spec.step_factor!r} is not a positive number")
    if spec.num_samples is not None and (not _is_int(spec.num_samples) or spec.num_samples < 1):
        raise SpecError("num_samples", f"{spec.num_samples!r} is not a positive integer")
    if not _is_real(spec.alpha) or not 0.0 <= spec.alpha < 1.0:
        raise SpecError("alpha", f"{spec.alpha!r} is not in [0, 1)")
    if not isinstance(spec.early_stopping, bool):
        raise SpecError("early_stopping", "must be true or false")
    if spec.stop_on is not None:
        unknown = set(spec.stop_on) - set(STOP_RULES)
        if unknown:
            raise SpecError("stop_on", f"unknown rules {sorted(unknown)}; known: {STOP_RULES}")
        if spec.optimizer != "gd" and set(spec.stop_on) & {"stuck", "degenerate"}:
            raise SpecError("stop_on", "'stuck' and 'degenerate' are proofs for gd only")
    if spec.target_halfwidth is not None:
        if not _is_real(spec.target_halfwidth) or not 0 < spec.target_halfwidth < 0.5:
            raise SpecError("target_halfwidth", f"{spec.target_halfwidth!r} is not in (0, 0.5)")
        if spec.max_runs is None:
            raise SpecError("max_runs", "is needed with target_halfwidth (a bound on each cell)")
    if spec.max_runs is not None and (not _is_int(spec.max_runs) or spec.max_runs < spec.runs):
        raise SpecError("max_runs", f"{spec.max_runs!r} is not an integer ≥ runs ({spec.runs})")
    if spec.buckets not in BUCKETS:
        raise SpecError("buckets", f"{spec.buckets!r} is not one of {', '.join(BUCKETS)}")
    if spec.stuck_rule not in STUCK_RULES:
        raise SpecError("stuck_rule", f"{spec.stuck_rule!r} is not one of {', '.join(STUCK_RULES)}")
    if spec.stuck_rule == "certificate" and (spec.optimizer != "gd" or not spec.paper_setting):
        raise SpecError(
            "stuck_rule", "the certificate is a proof for gd with zero biases only; use 'final'"
        )


class Cell(NamedTuple):
    """One (width, Δ) cell of a spec."""

    width: int
    delta: float
    spec: ExperimentSpec

    @property
    def num_samples(self) -> int:
        """N for a finite support, the number of training points for continuous data."""
        if self.spec.data in CONTINUOUS:
            return self.spec.num_points
        return self.spec.num_samples or self.width**2

    def settings(self) -> dict[str, Any]:
        """What defines the cell's data and initialization (not the optimizer or dtype)."""
        return {
            "width": int(self.width),
            "delta": float(self.delta),
            "init": self.spec.init,
            "num_samples": int(self.num_samples),
            # only when set, so that the paper's cells keep their hash and their runs
            **({"bias_init": self.spec.bias_init} if self.spec.bias_init != "zero" else {}),
            **({"data": self.spec.data} if self.spec.data != "six-points" else {}),
            **({"data_sha256": _file_hash(self.spec.data_file)} if self.spec.data_file else {}),
            **({"split": list(self.spec.split)} if self.spec.split else {}),
            **({"dim": self.spec.input_dim} if self.spec.input_dim != 1 else {}),
        }

    @property
    def cell_hash(self) -> int:
        """A stable 31-bit hash of `settings()`."""
        text = json.dumps(self.settings(), sort_keys=True)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1

    @property
    def cell_id(self) -> str:
        return f"{self.cell_hash:08x}"


@functools.lru_cache(maxsize=16)
def _file_hash(path: str) -> str:
    """The data file's content hash: a cell (and so its runs) follows the data, not the path."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_key(seed: int, cell_hash: int, index) -> jax.Array:
    """The key of run `index` of a cell: fold_in(fold_in(key(seed), cell_hash), index)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), cell_hash), index)


def noise_keys(cell: Cell, indices: np.ndarray) -> jax.Array:
    """Key data (runs, 2) of the minibatch noise of runs `indices` of a cell: the same for
    every optimizer (common random numbers), independent of the data and initialization."""
    return _noise_keys(
        jnp.asarray(cell.spec.seed, jnp.uint32),
        jnp.asarray(cell.cell_hash, jnp.uint32),
        jnp.asarray(indices, jnp.uint32),
    )


@jax.jit
def _noise_keys(seed, cell_hash, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(run_key(seed, cell_hash, i), NOISE_STREAM))
    return jax.random.key_data(keys(indices))


def initial_runs(
    cell: Cell, indices: np.ndarray, size: int | None = None
) -> tuple[Params, WeightedData, Any]:
    """Initial parameters, training data and validation of runs `indices` of a cell: the
    validation weights on the training points (finite supports), or held-out (validation,
    test) points (continuous data). The networks are padded to `size` neurons
    (`model.padded`; default: the cell's width, no padding)."""
    spec = cell.spec
    size = cell.width if size is None else size
    dtype = jnp.dtype(spec.dtype)
    keys = (
        jnp.asarray(spec.seed, jnp.uint32),
        jnp.asarray(cell.cell_hash, jnp.uint32),
        jnp.asarray(indices, jnp.uint32),
    )
    biased = spec.bias_init != "zero"  # biases are drawn for the true width, then padded
    if spec.input_dim == 1:  # one program draws every width of the spec
        params = _padded_params(
            *keys,
            jnp.asarray(cell.width),
            jnp.zeros((), dtype),
            size=shared_width(spec),
            init=spec.init,
        )
        params = _cut(params, cell.width if biased else size)
    else:
        params = _initial_params(
            *keys, jnp.zeros((), dtype), width=cell.width, dim=spec.input_dim, init=spec.init
        )
    delta = jnp.asarray(cell.delta, dtype)
    if spec.split is not None:
        x, y = spec.support(dtype)
        sizes = _split_sizes(x.shape[0], spec.split)
        data, valid = _split_data(*keys, x, y, delta, sizes=sizes)
    elif spec.data in CONTINUOUS:
        data, valid = _sampled_data(
            *keys,
            delta,
            count=cell.num_samples,
            heldout=spec.num_heldout,
            dataset=spec.data,
            dim=spec.input_dim,
        )
    else:
        x, y = spec.support(dtype)
        data, valid = _initial_data(*keys, x, y, delta, cell.num_samples)
    if biased:
        params = _biased(*keys, params, data, bias_init=spec.bias_init, init=spec.init)
    return padded(params, size), data, valid


def _cut(params: Params, width: int) -> Params:
    """The first `width` neurons of a batch of 1-D networks."""
    return Params(params.a[:, :width], params.b[:, :width], params.w[:, :width], params.c)


@functools.partial(jax.jit, static_argnames=("bias_init", "init"))
def _biased(seed, cell_hash, indices, params, data, *, bias_init, init):
    """Layer-1 biases by `bias_init`, keyed by fold_in(parameter key, BIAS_STREAM)."""
    keys = jax.vmap(lambda k: jax.random.fold_in(k, BIAS_STREAM))(
        _run_keys(seed, cell_hash, indices)[:, 0]
    )
    dim = 1 if params.a.ndim == 2 else params.a.shape[1]
    scaling = scaling_of("ntk" if init == "ntk" else "standard", params.b.shape[-1], dim)

    def one(p, x, weights, key):
        return init_bias(p, x, weights, bias_init, key=key, scaling=scaling)

    return jax.vmap(one)(params, data.x, data.weights, keys)


def _run_keys(seed, cell_hash, indices):
    """Per run: keys of (initial parameters, training data, validation weights)."""
    return jax.vmap(lambda index: jax.random.split(run_key(seed, cell_hash, index), 3))(indices)


@functools.partial(jax.jit, static_argnames=("width", "dim", "init"))
def _initial_params(seed, cell_hash, indices, like, *, width, dim, init):
    """One compiled program per (width, dim, init, dtype, run count)."""
    keys = _run_keys(seed, cell_hash, indices)[:, 0]
    return jax.vmap(lambda key: INITS[init](width, dim, key=key, dtype=like.dtype))(keys)


@functools.partial(jax.jit, static_argnames=("size", "init"))
def _padded_params(seed, cell_hash, indices, width, like, *, size, init):
    """1-D networks of `width` neurons padded to `size` (`init.padded_init`): one compiled
    program per (size, init, dtype, run count), whatever the width."""
    keys = _run_keys(seed, cell_hash, indices)[:, 0]
    return jax.vmap(lambda key: padded_init(init, size, width, key=key, dtype=like.dtype))(keys)


@jax.jit
def _initial_data(seed, cell_hash, indices, x, y, delta, num_samples):
    """A finite support x, y with per-run multinomial training and validation weights: one
    compiled program per (support shape, dtype, run count), whatever the width (N, Δ are
    data)."""
    keys = _run_keys(seed, cell_hash, indices)

    def one(key_data, key_valid):
        weights = multinomial_weights(key_data, x.shape[0], num_samples, delta.dtype)
        valid = multinomial_weights(key_valid, x.shape[0], num_samples, delta.dtype)
        return WeightedData(x, y + delta, weights), valid

    return jax.vmap(one)(keys[:, 1], keys[:, 2])


@functools.partial(jax.jit, static_argnames=("count", "heldout", "dataset", "dim"))
def _sampled_data(seed, cell_hash, indices, delta, *, count, heldout, dataset, dim):
    """`count` i.i.d. training points per run and `heldout` validation and test points
    each, all standardized with the training statistics; equal weights."""
    keys = _run_keys(seed, cell_hash, indices)

    def sample(key, size):
        x, y = CONTINUOUS[dataset](key, size, dim, delta.dtype)
        return WeightedData(x, y, jnp.full((size,), 1.0 / size, delta.dtype))

    def one(key_data, key_valid):
        key_val, key_test = jax.random.split(key_valid)
        held = (sample(key_val, heldout), sample(key_test, heldout))
        return _standardized(sample(key_data, count), *held, delta)

    return jax.vmap(one)(keys[:, 1], keys[:, 2])


def _standardized(train: WeightedData, validation, test, delta):
    """(train, (validation, test)) standardized with the training statistics, Δ added to
    every target."""
    statistics = training_statistics(train)

    def one(points):
        x, y = statistics.apply(points.x, points.y)
        return WeightedData(x, y + delta, points.weights)

    return one(train), (one(validation), one(test))


@jax.jit
def _paper_step_size(params, data, alpha):
    """`theory.paper_step_size` as one compiled program (eagerly it is dozens of them)."""
    return theory.paper_step_size(params, data, alpha=alpha)


@functools.partial(jax.jit, static_argnames=("init",))
def _ntk_step_size(params, data, alpha, widths, init):
    """1/λ_max of each run's weighted neural-tangent Gram at initialization (true
    `widths` (runs,) of padded networks)."""
    dim = 1 if params.a.ndim == 2 else params.a.shape[1]
    scaling = scaling_of("ntk" if init == "ntk" else "standard", widths, dim)

    def one(p, d, s):
        return theory.ntk_step_size(p, d, alpha=alpha, scaling=Scaling(*s))

    return jax.vmap(one)(params, data, tuple(jnp.broadcast_to(v, widths.shape) for v in scaling))


class CellResult(NamedTuple):
    cell: Cell
    step_size: np.ndarray
    result: SimulationResult


def width_buckets(spec: ExperimentSpec) -> list[tuple[int, tuple[int, ...]]]:
    """The batches of a spec: (bucket width, the widths trained together), in order of
    first width. Every network of a batch is padded to its bucket width, and batches of one
    bucket width and run count share their compiled programs.

    `buckets`: "pow2" pads each width to the next power of two (at most 2× the work, one
    program per octave), "one" pads every width to the largest (one program), "none"
    gives every width its own program. "auto" is "pow2", except that on the propagator
    path the widths up to `SHARED_BUCKET` share one program: each is trained alone, padded
    to the next power of two of the largest of them. There a run's steps cost O(1) in the
    width, and only its once-per-chunk work and its redos on the general path grow with
    the padding. Measured on 2 CPU cores, cold: the default run (widths 16-128) took
    28.5-29.6 s against 39.3-40.4 s with "pow2"; widths 256-2048 padded to 2048 ("one")
    took 110 s against 86 s with "pow2", their redos at width 2048 costing more than the
    compiles saved. Each width alone in its batch keeps the widest one's results bit for
    bit those of a run without the narrower ones (a batch's size and padding move the
    last bits).
    """
    if spec.buckets == "none":
        return [(w, (w,)) for w in spec.widths]
    if spec.buckets == "one":
        return [(max(spec.widths), spec.widths)]
    shared = [w for w in spec.widths if w <= SHARED_BUCKET]
    if spec.buckets == "auto" and shared and spec.path == "propagator":
        floor = _next_power_of_two(max(shared))
        return [(max(floor, _next_power_of_two(w)), (w,)) for w in spec.widths]
    groups: dict[int, list[int]] = {}
    for w in spec.widths:
        groups.setdefault(_next_power_of_two(w), []).append(w)
    return [(bucket, tuple(ws)) for bucket, ws in groups.items()]


def _next_power_of_two(width: int) -> int:
    return 1 << (width - 1).bit_length()


def shared_width(spec: ExperimentSpec) -> int:
    """The widest bucket: programs that run once per batch (the initial networks, the
    paper's step size, the final classification) take every network padded to it, one
    program for all buckets."""
    return max(bucket for bucket, _ in width_buckets(spec))


def run_experiment(
    spec: ExperimentSpec,
    *,
    on_check: Callable[[tuple[int, ...], int, np.ndarray], None] | None = None,
    on_cells_done: Callable[[Sequence[CellResult]], None] | None = None,
    processes: Processes | None = None,
    memory_budget: int | None = None,
) -> list[CellResult]:
    """Run every cell of `spec`, one bucket of widths at a time (`width_buckets`: all
    their Δ cells in one batch, padded to the bucket's width), in the spec's cell order.
    A bucket whose runs do not fit in `memory_budget` bytes (default: a share of the free
    device or host memory, `memory.memory_budget`) goes in several batches (a run's
    result does not depend on its batch).

    With `processes`, this process trains runs index, index + count, … of every cell and
    `processes.gather` collects every process's share, so each process returns the
    whole result (a run's key depends only on its index: the same runs as one process).

    With `target_halfwidth` H, each bucket continues in batches of `runs` more runs (run
    indices continue, so keys do too) for the cells whose 95% interval of P(stuck) is
    wider than 2H, until it is not or a cell has `max_runs` runs: the result of a cell
    equals a fixed-size run of its final count. `on_check(widths, k, status)` reports
    progress after each check; `on_cells_done` receives the cells of each width as soon
    as its bucket finishes.
    """
    if processes is not None and spec.target_halfwidth is not None:
        raise ValueError("target_halfwidth: not supported across processes yet")
    results = {}
    budget = memory.memory_budget(memory_budget)
    for bucket, widths in width_buckets(spec):
        run_batch = functools.partial(_run_batches, spec, bucket, on_check=on_check, budget=budget)
        cells = [Cell(width, delta, spec) for width in widths for delta in spec.deltas]
        share = np.arange(spec.runs)
        if processes is not None:
            share = share[processes.index :: processes.count]
        done = run_batch([(cell, share) for cell in cells])
        if processes is not None:
            done = [_gathered(cr, spec.runs, processes) for cr in done]
        while spec.target_halfwidth is not None:
            wanted = [
                (i, np.arange(size, min(size + spec.runs, spec.max_runs)))
                for i, cr in enumerate(done)
                if (size := cr.result.status.size) < spec.max_runs
                and interval_halfwidth(cr) > spec.target_halfwidth
            ]
            if not wanted:
                break
            more = run_batch([(cells[i], idx) for i, idx in wanted])
            for (i, _), extra in zip(wanted, more, strict=True):
                done[i] = _joined(done[i], extra)
        for width in widths:
            results[width] = [cr for cr in done if cr.cell.width == width]
            if on_cells_done is not None:
                on_cells_done(results[width])
    return [cr for width in spec.widths for cr in results[width]]


class Processes(NamedTuple):
    """This process's place among `count` (index) and how to collect a pytree of host
    arrays of equal shapes from all of them (stacked on a new leading axis)."""

    index: int
    count: int
    gather: Callable[[Any], Any]


def _gathered(local: CellResult, runs: int, processes: Processes) -> CellResult:
    """A cell's whole result from every process's share (runs index::count each)."""
    share = -(-runs // processes.count)
    padded = jax.tree.map(
        lambda v: np.concatenate([v, np.repeat(v[-1:], share - v.shape[0], axis=0)]),
        (local.step_size, local.result),
    )
    stacked = processes.gather(padded)  # (count, share, ...)
    order = np.arange(runs)
    whole = jax.tree.map(
        lambda v: np.asarray(v)[order % processes.count, order // processes.count], stacked
    )
    return CellResult(local.cell, *whole)


def stuck_runs(cell_result: CellResult) -> np.ndarray:
    """Which runs of a cell are stuck (bool, runs): certified by GD's criterion or
    degenerate; with the spec's "final" stuck rule also the runs whose final network is
    still in the linear regime (`detectors`; diverged runs are neither stuck nor escaped).
    """
    res = cell_result.result
    certified = np.isin(res.status, STUCK_STATUSES)
    if not cell_result.cell.spec.final_stuck_rule:
        return certified
    return certified | (~res.escaped & (res.status != Status.DIVERGED))


def interval_halfwidth(cell_result: CellResult) -> float:
    """Half the width of the 95% Clopper-Pearson interval of the cell's P(stuck)."""
    stuck = stuck_runs(cell_result)
    low, high = failure_probability(int(stuck.sum()), stuck.size)[1]
    return (high - low) / 2.0


def _joined(first: CellResult, second: CellResult) -> CellResult:
    """One cell's results of two batches of consecutive run indices, in index order."""
    join = functools.partial(jax.tree.map, lambda a, b: np.concatenate([a, b]))
    return CellResult(
        first.cell,
        np.concatenate([first.step_size, second.step_size]),
        join(first.result, second.result),
    )


def _run_batches(spec, bucket: int, work, *, on_check, budget: int) -> list[CellResult]:
    """`_run_batch` on `work` split into batches that fit in `budget` bytes (`memory`):
    each cell's runs in index order, whatever the split."""
    total = sum(idx.size for _, idx in work)
    per_run, per_block_run = run_bytes(spec, bucket, work[0][0])
    block = engine.blocking_for(jax.local_devices(), total).block
    limit = memory.batch_runs(per_run, per_block_run, budget, block)
    if total <= limit:
        return _run_batch(spec, bucket, work, on_check)
    sizes = np.array([idx.size for _, idx in work])
    starts = np.cumsum(sizes) - sizes  # each cell's first position in the whole work
    parts: list[list[CellResult]] = [[] for _ in work]
    finished = np.zeros(0, np.int8)  # statuses of the batches done, for on_check
    for first in range(0, total, limit):
        lows = np.clip(first - starts, 0, sizes)
        highs = np.clip(first + limit - starts, 0, sizes)
        owners = np.flatnonzero(lows < highs)
        batch = [(work[i][0], work[i][1][lows[i] : highs[i]]) for i in owners]
        callback = None
        if on_check is not None:
            callback = functools.partial(_progress_after, on_check, finished)
        done = _run_batch(spec, bucket, batch, callback)
        for i, cr in zip(owners, done, strict=True):
            parts[i].append(cr)
        finished = np.concatenate([finished, *(cr.result.status for cr in done)])
    return [functools.reduce(_joined, cell_parts) for cell_parts in parts]


def _progress_after(on_check, before: np.ndarray, widths, k, status) -> None:
    """`on_check` of a later batch: the earlier batches' final statuses come first."""
    on_check(widths, k, np.concatenate([before, status]))


def run_bytes(spec: ExperimentSpec, bucket: int, cell: Cell) -> tuple[int, int]:
    """(bytes of one run's state and check inputs, bytes of its temporaries while its
    block trains): shapes only, nothing is computed."""
    optimizer = get_optimizer(spec.optimizer, sampler=spec.sampler, batch_size=spec.batch_size)

    def one(indices):
        params, data, valid = initial_runs(cell, indices, bucket)
        step = jnp.zeros((1,), params.c.dtype)
        state = engine.initial_state(params, step, noise_keys(cell, indices), optimizer=optimizer)
        if isinstance(valid, tuple):
            validation, test = valid
        else:
            validation = test = data._replace(weights=valid)
        return state, engine.check_inputs(data, step, validation, test)

    shapes = jax.eval_shape(one, jax.ShapeDtypeStruct((1,), jnp.uint32))
    points = max(leaf.shape[1] for leaf in (shapes[1].data.y, shapes[1].validation.y))
    itemsize = jnp.dtype(spec.dtype).itemsize
    temporaries = memory.TEMPORARIES * points * bucket * itemsize
    return memory.tree_bytes(shapes), temporaries


def _run_batch(spec, bucket: int, work, on_check) -> list[CellResult]:
    """Train the runs `indices` of each (cell, indices) in `work` in one batch, every
    network padded to `bucket` neurons (`model.padded`)."""
    parts = [
        (*initial_runs(cell, idx, bucket), noise_keys(cell, idx), np.full(idx.size, cell.width))
        for cell, idx in work
    ]
    params, data, valid, keys, widths = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    dtype = params.c.dtype
    if spec.step_size == "paper":
        wide = padded(jax.device_get(params), shared_width(spec), xp=np)
        step = _paper_step_size(wide, data, jnp.asarray(spec.alpha, dtype))
    elif spec.step_size == "ntk":
        step = _ntk_step_size(params, data, jnp.asarray(spec.alpha, dtype), widths, spec.init)
    elif spec.step_size == "small":
        step = 0.01 / widths.astype(dtype)
    else:
        step = jnp.full((params.c.shape[0],), spec.step_size, dtype)
    if spec.step_factor != 1.0:
        step = step * spec.step_factor
    label = tuple(sorted({cell.width for cell, _ in work}))
    callback = None if on_check is None else (lambda k, status: on_check(label, k, status))
    sim = simulate(
        params,
        data,
        step,
        optimizer=spec.optimizer,
        sampler=spec.sampler,
        batch_size=spec.batch_size,
        key=keys,
        stop_on=spec.simulate_stop_on,
        parameterization=spec.parameterization,
        check_every=spec.check_every,
        max_checks=spec.max_checks,
        alpha=spec.alpha,
        **_validation_arguments(spec, valid),
        on_check=callback,
        classify_width=shared_width(spec),
    )
    step = np.asarray(step)
    done, first = [], 0
    for cell, idx in work:
        part = slice(first, first + idx.size)
        result = jax.tree.map(lambda v, s=part: v[s], sim)
        final = Params(*(leaf[..., : cell.width] for leaf in result.params[:3]), result.params.c)
        done.append(CellResult(cell, step[part], result._replace(params=final)))
        first += idx.size
    return done


def _split_sizes(count: int, fractions) -> tuple[int, int, int]:
    train, valid = round(fractions[0] * count), round(fractions[1] * count)
    return train, valid, count - train - valid


@functools.partial(jax.jit, static_argnames=("sizes",))
def _split_data(seed, cell_hash, indices, x, y, delta, *, sizes):
    """Per run: a random split of the points into train/validation/test (`sizes`), equal
    weights, all standardized with the training statistics."""
    keys = _run_keys(seed, cell_hash, indices)

    def one(key):
        order = jax.random.permutation(key, x.shape[0])
        cuts = np.cumsum(sizes)[:-1]
        parts = [
            WeightedData(x[i], y[i], jnp.full(i.shape, 1.0 / i.shape[0], y.dtype))
            for i in jnp.split(order, cuts)
        ]
        return _standardized(*parts, delta)

    return jax.vmap(one)(keys[:, 1])


def _validation_arguments(spec: ExperimentSpec, valid) -> dict[str, Any]:
    """`simulate`'s validation arguments: held-out sets, or weights when early stopping."""
    if spec.held_out:
        validation, test = valid
        return {"validation": validation, "test": test, "early_stopping": spec.early_stopping}
    return {"validation_weights": valid if spec.early_stopping else None}


def status_counts(status: np.ndarray) -> dict[str, int]:
    """Counts of every final status by lowercase name (zeros included)."""
    return {s.label: int(np.sum(status == s)) for s in Status if s != Status.RUNNING}
