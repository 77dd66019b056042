"""The run directory of a command: room on its disk, created and proven writable, and
its manifest written or, on --resume, checked, all before any compute."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

from gdrelu.cli.errors import UsageError


def open_directory(args, manifest: dict[str, Any], need_bytes: int = 0) -> Path:
    """The directory to resume, checked against `manifest`, or a new one holding it."""
    from gdrelu.store import ResumeError, check_manifest, write_manifest

    check_space(args.resume or args.out or Path("runs"), need_bytes)
    if args.resume is not None:
        try:
            check_manifest(args.resume, manifest)
        except ResumeError as err:
            raise UsageError(f"--resume: {err}") from None
        return args.resume
    out = _created(args.out)
    write_manifest(out, manifest)
    return out


def result_bytes(specs) -> int:
    """A generous estimate of what a run writes: per run a table row and its final
    parameters (3n + 1 numbers) in its unit file, twice (units and runs.csv), plus 1 MB."""
    total = 0
    for spec in specs:
        runs = spec.max_runs or spec.runs
        per_run = 600 + 8 * (3 * max(spec.widths) * spec.input_dim + 1)
        total += 2 * per_run * runs * len(spec.widths) * len(spec.deltas)
    return total + 2**20


def check_space(out: Path, need: int) -> None:
    """Refuse an output directory on a disk without `need` bytes free."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise UsageError(
            f"--out: {out} needs about {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free"
        )


def _created(out: Path | None) -> Path:
    """The output directory (default runs/<timestamp>/), created and proven writable."""
    if out is None:
        out = Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    from gdrelu.store import MANIFEST, UNITS

    if (out / "summary.json").exists():
        raise UsageError(f"--out: {out} already holds results; choose another directory")
    if (out / MANIFEST).exists() or (out / UNITS).exists():
        raise UsageError(
            f"--out: {out} holds a started run; finish it with --resume {out}, or choose "
            "another directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out: cannot write to {out}: {e.strerror}") from None
    return out
