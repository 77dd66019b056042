"""The specs a command asks for: the defaults, then a protocol's fields (`protocols`),
then a TOML file's, then the flags'. Only configuration errors (`SpecError`, a bad file
or flag) are reported as such; any other error is a bug and propagates."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gdrelu import memory
from gdrelu.cli.errors import UsageError
from gdrelu.cli.parser import RUN_FLAGS
from gdrelu.data import CONTINUOUS
from gdrelu.protocols import protocol
from gdrelu.spec import STEP_SIZE_RULES, ExperimentSpec, SpecError

COMPARE_SETS = ("optimizer", "stop_on", "stuck_rule")  # the fields `compared` overrides


def requested_specs(args) -> list[ExperimentSpec]:
    """The specs of this command line: one, or one per optimizer of `gdrelu compare`. A
    setting that would change nothing is refused, not ignored (`refuse_unused`); a refused
    field that a protocol or the config file set says so."""
    layers = _layers(args)
    values = _merged(layers)
    try:
        specs = specs_from(values, getattr(args, "optimizers", None))
        refuse_unused(values, args, specs)
    except UsageError as e:
        raise UsageError(_with_origin(str(e), layers)) from None
    return specs


def refuse_unused(values: dict[str, Any], args, specs: list[ExperimentSpec]) -> None:
    """Refuse a batch size set (by a flag, a protocol or the config file) where no
    optimizer draws minibatches, and a held-out count for data that draw no held-out
    points: the specs would carry a setting that changes nothing."""
    if "batch_size" in values and all(spec.full_batch for spec in specs):
        optimizers = ", ".join(spec.optimizer for spec in specs)
        given = "--batch-size" if getattr(args, "batch_size", None) is not None else "batch_size"
        train = "trains" if len(specs) == 1 else "train"
        raise UsageError(f"{given}: {optimizers} {train} full-batch (sampler 'full')")
    if "num_heldout" in values and specs[0].data not in CONTINUOUS:
        given = "--num-heldout" if getattr(args, "num_heldout", None) is not None else "num_heldout"
        data = specs[0].data
        raise UsageError(f"{given}: only continuous data draw held-out points; {data}")


def given_values(args) -> dict[str, Any]:
    """The spec fields this command line sets: a protocol's, then a config file's, then
    the flags' (a data file alone means data = 'file'; its path made absolute)."""
    return _merged(_layers(args))


def _layers(args) -> list[tuple[str, dict[str, Any]]]:
    """(origin, fields) of a protocol, the config file and the flags, in the order they
    apply. A config file's field that `compared` sets for every optimizer is refused."""
    layers = []
    if getattr(args, "protocol", None):
        layers.append((f"--protocol {args.protocol}", protocol(args.protocol)))
    if args.config is not None:
        config = _config(args.config)
        for field in COMPARE_SETS if getattr(args, "optimizers", None) else ():
            if field in config:
                raise UsageError(
                    f"{field}: gdrelu compare sets it for each optimizer itself "
                    "(docs/theory.md, 'Outcome of a run'); remove it from --config"
                )
        layers.append((f"--config {args.config}", config))
    flags = {field: getattr(args, field, None) for field, *_ in RUN_FLAGS.values()}
    layers.append(("flags", {k: v for k, v in flags.items() if v is not None}))
    return layers


def _merged(layers) -> dict[str, Any]:
    values = {}
    for _, fields in layers:
        values.update(fields)
    if "data_file" in values and "data" not in values:
        values["data"] = "file"
    if values.get("data_file") == "":  # Path("") is the working directory
        raise UsageError("data_file: an empty path")
    if isinstance(values.get("data_file"), str):  # a resume may start in another directory
        values["data_file"] = str(Path(values["data_file"]).resolve())
    return values


def with_origin(message: str, args) -> str:
    """`message` ("field: ...") with where this command line set its field, unless by a
    flag: a protocol or the config file (`_with_origin`)."""
    return _with_origin(message, _layers(args))


def _with_origin(message: str, layers) -> str:
    """`message` ("field: ...") with where its field was set, unless by a flag."""
    field = message.split(":", 1)[0]
    origins = [origin for origin, fields in layers if field in fields]
    if not origins or origins[-1] == "flags":
        return message
    return f"{message} ({field} is set by {origins[-1]})"


def specs_from(values: dict[str, Any], optimizers=None) -> list[ExperimentSpec]:
    """The spec of `values`, or one per optimizer (`compared`); SpecError as UsageError."""
    values = _with_step_size(values)
    try:
        if optimizers:
            return [ExperimentSpec.from_dict(compared(values, o)) for o in optimizers]
        return [ExperimentSpec.from_dict(values)]
    except SpecError as e:
        raise UsageError(str(e)) from None


def compared(values: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """One optimizer's settings in `gdrelu compare`: every optimizer trains to the step
    budget (or stops by early stopping, if asked) unless GD's certificate stops it (a
    proof that its final network stays in the linear regime), and P(stuck) reads the
    final network for all, so the pairs compare like with like. The minibatch settings
    are the other optimizers' (GD ignores a batch size, and takes no sampler)."""
    values = {**values, "optimizer": optimizer, "stuck_rule": "final"}
    if optimizer == "gd":  # full-batch by definition: --sampler sets the others' minibatches
        values.pop("sampler", None)
    values["stop_on"] = []
    if ExperimentSpec.from_dict(values).certified:
        values["stop_on"] = ["stuck", "degenerate"]
    return values


def _config(path) -> dict[str, Any]:
    """The config file's fields; its data_file relative to the file's own directory."""
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
        data_file = config.get("data_file")
        if isinstance(data_file, str) and data_file.strip():
            config["data_file"] = str(Path(path).parent / Path(data_file).expanduser())
        return config
    except OSError as e:
        raise UsageError(f"--config: cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config: {path} is not valid TOML: {e}") from None


def _with_step_size(values: dict[str, Any]) -> dict[str, Any]:
    """A step size given as text: a rule's name or a number."""
    step = values.get("step_size")
    if not isinstance(step, str) or step in STEP_SIZE_RULES:
        return values
    try:
        number = float(step)
    except ValueError:
        raise UsageError(
            f"step_size: {step!r} is not one of {', '.join(STEP_SIZE_RULES)} or a positive number"
        ) from None
    mantissa = step.lower().split("e")[0]
    if number == 0 and any(digit in mantissa for digit in "123456789"):  # 1e-400 reads as 0.0
        raise UsageError(f"step_size: {step!r} is 0 in floating point")
    return {**values, "step_size": number}


def budget_bytes(gigabytes: float | None) -> int | None:
    """--memory-budget in bytes (None: the default budget)."""
    if gigabytes is None:
        return None
    if not 1e-6 <= gigabytes <= 1e9:
        raise UsageError(f"--memory-budget: {gigabytes} is not a number of GB in [1e-6, 1e9]")
    return int(gigabytes * 1e9)


def check_fits(specs, budget: int | None, *, together: bool = True, lower=None, cells=1) -> int:
    """Refuse, before anything is written, a spec with a width of which one run alone
    cannot fit in the memory budget (`memory.BudgetError`); after the devices are set.
    Returns the budget in bytes, measured once (`memory.memory_budget`), for the run.
    `together`: every spec's results stay until the end (`gdrelu compare`), else each
    spec runs alone (`gdrelu reproduce`, the Section 10 preset). `lower`: the flags the
    message names (default: the spec's own, `memory.check_fits`). `cells` (one count, or
    one per spec): how many cells of a spec's shape keep their results together (a
    Section 10 group's configurations, `section10.group_size`)."""
    held, budget = 0, memory.memory_budget(budget)
    counts = [cells] * len(specs) if isinstance(cells, int) else cells
    for spec, count in zip(specs, counts, strict=True):
        memory.check_fits(spec, budget, held=held, lower=lower, as_flags=True, cells=count)
        held += memory.results_bytes(spec) if together else 0
    return budget
