"""The command line of `gdrelu run` and `gdrelu compare`. Every list of accepted values
in the help comes from the package's constants, so that the help never drifts."""

from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
from pathlib import Path

from gdrelu import section10
from gdrelu.cache import default_cache_dir
from gdrelu.cli.errors import UsageError
from gdrelu.data import DATASETS
from gdrelu.engine.placement import KERNEL_VARIABLE, KERNELS
from gdrelu.init import BIAS_INITS, INITS
from gdrelu.optim import NAMED, SAMPLERS
from gdrelu.protocols import PROTOCOLS
from gdrelu.spec import BUCKETS, DTYPES, STEP_SIZE_RULES, ExperimentSpec

DATA_CHOICES = (*DATASETS, "file")
PRESETS = ("section10",)
# A negative number, list or limit as a flag's value (--deltas -0.1,0.1, --memory-budget
# -inf): argparse's own pattern takes only -1 and -1.5, and reads the rest as flags.
NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)[\w.,+-]*$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # --optimizer must not pass for --optimizers
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})
        self._negative_number_matcher = NEGATIVE_VALUE

    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(message)


class _Formatter(argparse.HelpFormatter):
    def _split_lines(self, text, width):  # names such as kink-neg-unif stay whole
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _items(text: str) -> list[str]:
    """The comma-separated items of `text`; an empty one (a typo such as 16,,32) refused."""
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item")
    return items


def _int_list(text: str) -> tuple[int, ...]:
    items = _items(text)
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def _float_list(text: str) -> tuple[float, ...]:
    items = _items(text)
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


def _cache_dir(text: str) -> Path:
    """A directory (`_path`); 'none' turns the cache off."""
    return _path(text, "; 'none' turns the cache off")


def _path(text: str, hint: str = "") -> Path:
    """A path; an empty value refused (Path('') is '.', the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path{hint}")
    return Path(text)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
    return text == "on"


def _optimizer_list(text: str) -> tuple[str, ...]:
    names = tuple(_items(text))
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of two or more distinct names")
    for name in names:
        if name not in NAMED:
            raise argparse.ArgumentTypeError(f"{name!r} is not {_one_of(NAMED)}")
    return names


def _default(field: str) -> str:
    value = {f.name: f.default for f in dataclasses.fields(ExperimentSpec)}[field]
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _one_of(values, field: str | None = None) -> str:
    default = f" (default {_default(field)})" if field else ""
    return f"one of {', '.join(values)}{default}"


def _sampler_defaults() -> str:
    """Each sampler with the named optimizers that take it by default (`optim.NAMED`)."""
    takes: dict[str, list[str]] = {}
    for name, (_, sampler) in NAMED.items():
        takes.setdefault(sampler, []).append(name)
    return "; ".join(f"{sampler} for {', '.join(names)}" for sampler, names in takes.items())


# flag name -> (spec field, type, help)
RUN_FLAGS = {
    "--widths": ("widths", _int_list, f"comma-separated widths n (default {_default('widths')})"),
    "--deltas": (
        "deltas",
        _float_list,
        f"comma-separated offsets Δ (default {_default('deltas')})",
    ),
    "--runs": ("runs", int, f"runs per (width, Δ) cell (default {_default('runs')})"),
    "--seed": ("seed", int, f"master seed (default {_default('seed')})"),
    "--dtype": ("dtype", str, _one_of(DTYPES, "dtype")),
    "--check-every": (
        "check_every",
        int,
        f"steps between checks (default {_default('check_every')})",
    ),
    "--max-checks": (
        "max_checks",
        int,
        f"checks before a run is unfinished (default {_default('max_checks')})",
    ),
    "--early-stopping": (
        "early_stopping",
        _on_off,
        "on: a run also stops when its validation loss has not improved by 1e-8 in 10 "
        "checks, the paper code's rule for SGD and Adam; on or off (default off; with "
        "run --protocol, the protocol's)",
    ),
    "--target-halfwidth": ("target_halfwidth", float, "add runs until each 95%% CI half-width ≤ H"),
    "--max-runs": ("max_runs", int, "most runs per cell, needed with --target-halfwidth"),
    "--optimizer": ("optimizer", str, _one_of(NAMED, "optimizer")),
    "--step-size": (
        "step_size",
        str,
        f"{_one_of(STEP_SIZE_RULES, 'step_size')}, or a positive number (small: 0.01/n)",
    ),
    "--step-factor": ("step_factor", float, "multiplies the step size (default 1)"),
    "--sampler": (
        "sampler",
        str,
        f"minibatches: {_one_of(SAMPLERS)} (default: {_sampler_defaults()}; full: every "
        "point at every step)",
    ),
    "--batch-size": ("batch_size", int, f"minibatch size B (default {_default('batch_size')})"),
    "--data": ("data", str, f"{_one_of(DATA_CHOICES, 'data')}; file reads --data-file"),
    "--num-heldout": (
        "num_heldout",
        int,
        f"validation and test points of continuous data (default {_default('num_heldout')})",
    ),
    "--split": ("split", _float_list, "train,validation,test fractions of a --data-file"),
    "--data-file": ("data_file", str, "CSV (header; last column y) or NPZ (x, y): --data file"),
    "--dim": ("dim", int, "input dimension d for multi-axis, radial, rbf (default 1)"),
    "--num-train": ("num_train", int, "training points of continuous data (default 256·d)"),
    "--init": ("init", str, f"weights: {_one_of(INITS, 'init')}"),
    "--bias-init": ("bias_init", str, f"layer-1 biases: {_one_of(BIAS_INITS, 'bias_init')}"),
    "--buckets": (
        "buckets",
        str,
        f"widths sharing a compiled program: {_one_of(BUCKETS, 'buckets')}; auto is pow2, "
        "but the widths ≤ 128 together on GD's propagator; results unchanged to rounding; a "
        "bucket's widths are stored (for --resume) when it finishes, and a run directory "
        "keeps its buckets",
    ),
}


def _version() -> str:
    """The installed distribution's version ("unknown" from a source tree never installed)."""
    from importlib import metadata

    try:
        return metadata.version("gdrelu")
    except metadata.PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    """`gdrelu run` and `gdrelu compare`, with every flag."""
    top = _Parser(
        prog="gdrelu",
        description="Monte Carlo studies of GD on two-layer ReLU nets",
        formatter_class=_Formatter,
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = top.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="run an experiment (the paper's 1-D GD figure by default)",
        description="Train every (width, Δ) cell of an experiment and estimate P(stuck).",
        formatter_class=_Formatter,
    )
    compare = sub.add_parser(
        "compare",
        help="several optimizers on the same data and initial networks, paired",
        description="Train several optimizers on the same data and initial networks and "
        "compare their P(stuck) pairwise.",
        formatter_class=_Formatter,
    )
    compare.add_argument(
        "--optimizers",
        type=_optimizer_list,
        help=f"comma-separated optimizers to compare, two or more of {', '.join(NAMED)} "
        "(with --resume: the recorded ones)",
    )
    _add_reproduce(sub)
    _add_run_only(run)
    for command in (run, compare):
        for flag, (field, kind, text) in RUN_FLAGS.items():
            if not (command is compare and field == "optimizer"):
                command.add_argument(flag, dest=field, type=kind, help=text)
        _add_common(command)
    return top


def _add_reproduce(sub) -> None:
    from gdrelu.reproduce import EXPERIMENTS, SCALES, SECTION10_SCALE

    grids = ", ".join(f"{grid} at {name}" for name, grid in SECTION10_SCALE.items())
    command = sub.add_parser(
        "reproduce",
        help="every experiment of the paper as its code ran it, into DIR/report.md and .html",
        description="Every experiment of the paper as its code ran it, into DIR/report.md "
        "and .html.",
        formatter_class=_Formatter,
    )
    command.add_argument(
        "--scale",
        choices=SCALES,
        help=f"{_one_of(SCALES)} (default small: minutes on a CPU); Section 10 takes run "
        f"--preset section10's grid {grids}",
    )
    command.add_argument("--only", help=f"comma-separated experiments of {_one_of(EXPERIMENTS)}")
    command.add_argument("--out", type=_path, help="output directory (default runs/<timestamp>/)")
    command.add_argument(
        "--resume", type=_path, metavar="DIR", help="finish the reproduction in DIR"
    )
    command.add_argument("--quiet", action="store_true", help="no progress line")
    command.add_argument("--cache-dir", type=_cache_dir, default=default_cache_dir(),
                         help="where compiled XLA programs are kept ('none': nowhere)")  # fmt: skip
    _add_kernel(command)
    _add_memory_budget(command)


def _add_kernel(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--kernel",
        choices=KERNELS,
        help=f"the kernel of the steps (default ${KERNEL_VARIABLE}, else with --resume the "
        "one the run recorded, else auto: the "
        "propagator's C loop on a CPU with a C compiler where it trains the runs, XLA's "
        "loops otherwise); native also puts the general path (Adam's steps, the others' "
        "redos) in C for float64 1-D data: faster, other bits than XLA's; pallas: the "
        "propagator's GPU kernel for full-batch GD (interpret: the same, interpreted)",
    )


def _add_memory_budget(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        help="memory the runs may use, finished ones included (default: 70%% of the "
        "accelerators' free memory, or half the host's available memory); more runs go in "
        "several batches",
    )


def _add_run_only(run: argparse.ArgumentParser) -> None:
    from gdrelu.reproduce import SECTION10_SCALE

    used = "; ".join(
        f"{grid}: reproduce --scale {name}'s" for name, grid in SECTION10_SCALE.items()
    )
    run.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        help=f"the spec fields of one of the paper code's protocols, {', '.join(PROTOCOLS)}, "
        "under those of --config and the flags",
    )
    run.add_argument(
        "--preset", choices=PRESETS, help=f"a preset grid instead of a spec: {', '.join(PRESETS)}"
    )
    run.add_argument(
        "--scale",
        choices=list(section10.SCALES),
        help=f"size of the preset grid: {_one_of(section10.SCALES)} (default small; {used})",
    )


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        type=_path,
        help="TOML file of experiment settings (its data_file relative to the file)",
    )
    command.add_argument("--out", type=_path, help="output directory (default runs/<timestamp>/)")
    command.add_argument(
        "--resume",
        type=_path,
        metavar="DIR",
        help="finish an interrupted run in DIR with the specs of its manifest (flags given "
        "must agree with them): finished units, and the finished batches of the bucket in "
        "progress, are kept (the same --memory-budget keeps results to the bit)",
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_memory_budget(command)
    command.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes (jax.distributed): each trains a share of every "
        "cell, process 0 writes; address, count and id from the flags below or from "
        "the cluster's environment (SLURM, TPU pods)",
    )
    command.add_argument("--coordinator", help="host:port of process 0 (--distributed)")
    command.add_argument("--num-processes", type=int, help="process count (--distributed)")
    command.add_argument("--process-id", type=int, help="this process's id (--distributed)")
    command.add_argument(
        "--coordinator-timeout",
        type=int,
        metavar="SECONDS",
        help="how long a process waits for the others to connect (--distributed; default "
        "JAX's 300); a process other than 0 refuses a --coordinator that does not answer",
    )
    command.add_argument(
        "--cache-dir",
        type=_cache_dir,
        default=default_cache_dir(),
        help="where compiled XLA programs are kept between runs ('none': nowhere; "
        "default $GDRELU_CACHE_DIR, else $XDG_CACHE_HOME/gdrelu/xla, ~/.cache/gdrelu/xla)",
    )
    _add_kernel(command)
