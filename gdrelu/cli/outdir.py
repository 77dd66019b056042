"""The run directory of a command: room on its disk, created and proven writable, held
by this process alone, and its manifest written or, on --resume, checked, all before any
compute."""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from gdrelu.cli.errors import UsageError


def open_directory(args, manifest: dict[str, Any], need_bytes: int = 0) -> Path:
    """The directory to resume, checked against `manifest`, or a new one holding it; held
    (`_held`) until `release` so that no second gdrelu process writes into it."""
    from gdrelu.store import write_manifest

    if args.resume is not None:
        check_space(args.resume, need_bytes)
        check_resumable(args.resume, manifest)
        _writable(args.resume, "--resume")
        _held(args.resume, "--resume")
        _remove_stale_temporaries(args.resume)
        return args.resume
    out = _created(args.out)  # first: a place it cannot write is no question of space
    try:
        check_space(out, need_bytes)
    except UsageError:
        discard_unstarted(out)
        raise
    write_manifest(out, manifest)
    return out


def check_resumable(directory: Path, manifest: dict[str, Any]) -> None:
    """`UsageError` naming --resume unless `directory`'s manifest is `manifest`'s (the
    same request): before the memory budget is checked, whose refusal would otherwise
    hide that the request differs."""
    from gdrelu.store import ResumeError, check_manifest

    try:
        check_manifest(directory, manifest)
    except ResumeError as err:
        raise UsageError(f"--resume: {err}") from None


def holds_parts(out: Path) -> bool:
    """Whether `out` holds finished batches of a unit in progress (units/parts/)."""
    from gdrelu.store import PARTS, UNITS

    return any((out / UNITS / PARTS).glob("*.npz"))


def discard_unstarted(out: Path, stored_too: bool = False) -> None:
    """Remove what a new run wrote in `out` while no unit is stored there yet (a run
    refused once its draws showed a bad setting), so that nothing half-written stays and
    the same --out can be given again: its manifest, lock, units/ with the parts of the
    batches it trained before the refusal, and `out` itself where this run created it. A
    directory holding units is kept, unless `stored_too`: the units are this new run's,
    and a resume could never finish it (a bad setting in a later width's draws)."""
    from gdrelu.store import MANIFEST, PARTS, UNITS

    units = out / UNITS
    if units.is_dir() and any(units.glob("*.npz")):
        if not stored_too:
            return
        for unit in units.glob("*.npz"):
            unit.unlink()
    for name in (MANIFEST, LOCK):
        (out / name).unlink(missing_ok=True)
    for part in (units / PARTS).glob("*.npz"):
        part.unlink()
    made_here = [p for p in (out, *out.parents) if p in _MADE]  # out, then parents it needed
    for made in (units / PARTS, units, *made_here):
        with contextlib.suppress(OSError):  # absent, or not empty: the user's files stay
            made.rmdir()


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
    """The output directory, new or empty, created, proven writable and held; by default
    runs/<timestamp>/, with a suffix when another run took that second's name."""
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file, not a directory")
    if out is not None:
        _MADE.update(_missing(out))
    else:
        stamp = Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for suffix in ("", *(f"-{i}" for i in range(2, 100))):
            out = stamp.with_name(stamp.name + suffix)
            try:
                missing = _missing(out)
                out.mkdir(parents=True)
                _MADE.update(missing)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise UsageError(f"--out: cannot create {out}: {e.strerror}") from None
    _refuse_used(out, probe=True)
    _writable(out, "--out")
    _held(out, "--out")
    _refuse_used(out)  # again, now that no other gdrelu process can start there
    _remove_stale_temporaries(out)
    return out


def _remove_stale_temporaries(out: Path) -> None:
    """Remove what killed writers left in `out` (`atomic.temporaries`), now that this
    process holds it: no other writer can be at work there. Without a lock (a filesystem
    without flock, Windows) nothing is removed."""
    from gdrelu.atomic import temporaries

    if _HELD and _HELD[-1][0] == out and _HELD[-1][1] >= 0:
        for path in temporaries(out):
            path.unlink(missing_ok=True)


def _refuse_used(out: Path, probe: bool = False) -> None:
    """Refuse a directory that holds anything: a run's results or start, or other files
    that runs.csv, summary.json and the figures would overwrite. A started run that
    another process holds is said to be written (with `probe`: before this process
    holds it, and only there, as the probe's lock is itself an instant's holder)."""
    from gdrelu.atomic import is_temporary
    from gdrelu.store import MANIFEST

    if not out.is_dir():
        return
    if (out / "summary.json").exists() or (out / "report.md").exists():  # run's, reproduce's
        raise UsageError(f"--out: {out} already holds results; choose another directory")
    if (out / MANIFEST).exists():  # units/ alone is no run a resume could finish
        if probe and _locked_elsewhere(out):  # not "finish it with --resume"
            raise UsageError(f"--out: another gdrelu process is writing to {out}")
        raise UsageError(
            f"--out: {out} holds a started run; finish it with --resume {out}, or choose "
            "another directory"
        )
    found = [p.name for p in sorted(out.iterdir()) if p.name != LOCK and not is_temporary(p)]
    if found:
        named = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise UsageError(f"--out: {out} is not empty ({named}); choose a new or empty directory")


def _missing(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist yet: what creating it makes."""
    return [p for p in (out, *out.parents) if not p.exists()]


def _writable(out: Path, flag: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"{flag}: cannot write to {out}: {e.strerror}") from None


LOCK = ".lock"
_MADE: set[Path] = set()  # run directories this process created
_HELD: list[tuple[Path, int]] = []  # directories held, and their locks' descriptors


def _held(out: Path, flag: str) -> None:
    """Hold `out` with an exclusive lock on out/.lock (where the OS has flock): a second
    gdrelu process writing there (a requeued job, another terminal) is refused."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; nothing guards the directory
        _HELD.append((out, -1))
        return
    try:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # another user's lock file in a shared directory: read it
        fd = os.open(out / LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):  # no locks on this filesystem
            warnings.warn(f"{out} cannot be locked ({err.strerror}); nothing keeps a second "
                          "gdrelu process out of it", stacklevel=2)  # fmt: skip
            os.close(fd)
            fd = -1
        else:
            os.close(fd)
            raise UsageError(f"{flag}: another gdrelu process is writing to {out}") from None
    _HELD.append((out, fd))


def _locked_elsewhere(out: Path) -> bool:
    """Whether another process holds `out` (`_held`); False where the OS has no flock.
    Asked before this process holds it: its own lock would answer yes."""
    try:
        import fcntl

        fd = os.open(out / LOCK, os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    finally:
        os.close(fd)  # and with it the shared lock
    return False


def held() -> Path | None:
    """The run directory this process holds, if any."""
    return _HELD[-1][0] if _HELD else None


def release() -> None:
    """Let go of every directory this process holds (at the end of a command)."""
    while _HELD:
        _, fd = _HELD.pop()
        if fd >= 0:
            os.close(fd)
