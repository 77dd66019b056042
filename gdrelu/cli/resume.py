"""`--resume DIR`: the run in DIR goes on with the specs its manifest records; flags
given with it must agree with them (the order of widths and offsets aside: the run keeps
its own, so it pads, buckets and writes its table as the uninterrupted run would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdrelu.cli.errors import UsageError
from gdrelu.cli.options import given_values, refuse_unused, specs_from, with_origin
from gdrelu.spec import ExperimentSpec, SpecError

UNORDERED = ("widths", "deltas")


def started(args) -> dict[str, Any] | None:
    """The manifest of the directory to resume (None without --resume)."""
    from gdrelu.store import ResumeError, read_manifest

    if args.resume is None:
        return None
    if args.out is not None:
        raise UsageError("--resume: give the run's directory there, not with --out")
    try:
        manifest = read_manifest(args.resume)
    except ResumeError as err:
        raise UsageError(f"--resume: {err}") from None
    return manifest


def check_command(args, manifest: dict[str, Any] | None) -> None:
    """Refuse to resume a reproduction with `run`, a plain run with `--preset` or with
    `compare`: the directory is finished by the command that started it (`run` finishes
    a comparison too)."""
    if manifest is None:
        return
    if "reproduce" in manifest["specs"][0] and args.command != "reproduce":
        raise UsageError(
            f"--resume: {args.resume} holds a reproduction; finish it with "
            f"gdrelu reproduce --resume {args.resume}"
        )
    if args.command == "compare" and not is_preset(manifest) and len(manifest["specs"]) == 1:
        raise UsageError(
            f"--resume: {args.resume} holds a run of one optimizer, not a comparison; "
            f"finish it with gdrelu run --resume {args.resume}"
        )
    if args.command != "reproduce" and getattr(args, "preset", None) and not is_preset(manifest):
        raise UsageError(
            f"--resume: {args.resume} holds a run, not the {args.preset} preset; "
            "resume it without --preset"
        )


def is_preset(manifest: dict[str, Any] | None) -> bool:
    """Whether the manifest is that of a preset grid (`gdrelu.section10`)."""
    return manifest is not None and "preset" in manifest["specs"][0]


def recorded_kernel(args, manifest: dict[str, Any] | None) -> str | None:
    """On --resume without --kernel and without $GDRELU_PROPAGATOR_KERNEL: the kernel
    under which the run's recorded kernels resolve again (`store.kernel_flag`), unless
    that is auto (then None, as otherwise): a run started with --kernel native resumes as
    it was started."""
    import os

    from gdrelu.engine.placement import KERNEL_VARIABLE
    from gdrelu.store import kernel_flag

    if getattr(args, "kernel", None) is not None or manifest is None:
        return None
    if os.environ.get(KERNEL_VARIABLE):  # set and not empty ("" reads as unset)
        return None
    settings = manifest.get("settings", {})
    kernels = settings.get("kernels", settings.get("kernel"))  # an older gdrelu's: GD's kernel
    flag = kernel_flag(kernels) if isinstance(kernels, str) else None
    return None if flag == "auto" else flag


def recorded_specs(args, manifest: dict[str, Any]) -> list[ExperimentSpec]:
    """The manifest's specs, once the flags given are checked against them."""
    directory: Path = args.resume
    given = given_values(args)
    values = manifest["specs"]
    if given.get("data_file"):  # the file may have moved: its content must hash as recorded
        values = [
            {**v, "data_file": given["data_file"]} if v.get("data_file") else v for v in values
        ]
    try:
        specs = [ExperimentSpec.from_dict(v) for v in values]
    except SpecError as err:
        moved = err.field == "data_file" and not given.get("data_file")
        hint = "; if the file moved, name it with --data-file" if moved else ""
        raise UsageError(f"--resume: {directory}/manifest.json: {err}{hint}") from None
    optimizers = getattr(args, "optimizers", None)
    if given or optimizers:
        try:
            if optimizers:
                requested = specs_from({**specs[0].to_dict(), **given}, optimizers)
            else:
                requested = [specs_from({**s.to_dict(), **given})[0] for s in specs]
        except UsageError as err:  # the flags and a recorded spec make no spec together
            differ = _given_otherwise(specs, given)
            if not differ or set(given) - set(specs[0].to_dict()):  # no field: as fresh
                raise UsageError(with_origin(str(err), args)) from None
        else:
            differ = _differing(specs, requested)
        if differ:
            raise UsageError(
                f"--resume: {directory} was started with another spec (differs in {differ})"
            )
        refuse_unused(given, args, specs)  # as a fresh run refuses them
    return specs


def _given_otherwise(recorded: list[ExperimentSpec], given: dict[str, Any]) -> str:
    """The fields in which the flags `given` differ from the first recorded spec they
    change, as text ("" if they change none)."""
    from gdrelu.provenance import differing_fields, recorded_and_given

    for spec in recorded:
        before = spec.to_dict()
        after = {**before, **given}
        fields = differing_fields(before, after, unordered=UNORDERED)
        if fields:
            return "; ".join(recorded_and_given(before, after, f) for f in fields)
    return ""


def _differing(recorded: list[ExperimentSpec], requested: list[ExperimentSpec]) -> str:
    """The fields in which the requested specs differ from the recorded ones, as text."""
    from gdrelu.provenance import differing_fields, recorded_and_given

    was, now = ([s.optimizer for s in specs] for specs in (recorded, requested))
    if len(was) != len(now) or (len(was) > 1 and was != now):  # a compare's optimizers
        given = ",".join(dict.fromkeys(now))  # --optimizer gd set every spec's: "gd"
        return f"optimizers: recorded {','.join(was)}, given {given}"
    fields: dict[str, str] = {}  # each field as the first spec that differs in it has it
    for was, now in zip(recorded, requested, strict=True):
        before, after = was.to_dict(), now.to_dict()
        for field in differing_fields(before, after, unordered=UNORDERED):
            fields.setdefault(field, recorded_and_given(before, after, field))
    return "; ".join(fields[f] for f in sorted(fields))
