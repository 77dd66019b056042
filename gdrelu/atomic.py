"""Files written whole or not at all: a temporary file of the writing process, flushed
and renamed into place with its directory entry synced (docs/design.md, "Resume"), and
the temporary files that killed writers leave behind; NPZ archives read back with their
files closed, damaged or not."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def write_bytes(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file of this process, flushed and renamed into
    place (`write_with`): a crash never leaves a half-written file under its final name."""
    write_with(path, lambda f: f.write(data))


def write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """What `write` writes into the open file it is given, into `path` through a temporary
    file of this process, flushed and renamed into place: a crash, or `write` failing
    partway, never leaves a half-written file under its final name; the bytes go straight
    to the file, never held in memory whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share it
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a Ctrl-C: no temporary file stays behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_directory(path.parent)


# `write_with`'s .NAME.PID.tmp of the files gdrelu writes (a user's .notes.txt.1.tmp is
# none of them)
_TEMPORARY = re.compile(r"^\..+\.(json|csv|npz|png|md|html)\.\d+\.tmp$")


def temporaries(out: Path) -> list[Path]:
    """`write_with`'s temporary files anywhere under `out`: a writer's in progress, or
    one a killed process left (no finished file is one; once `out` is held, every such
    file is a dead writer's, since every writer holds the directory)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.rglob(".*.tmp") if is_temporary(p))


def is_temporary(path: Path) -> bool:
    """Whether `path` is a file of `write_with`'s .NAME.PID.tmp form."""
    return bool(_TEMPORARY.match(path.name)) and path.is_file()


def _sync_directory(directory: Path) -> None:
    """Flush `directory`'s entries (a rename just made) to disk, so that a power failure
    keeps the renamed file; POSIX only (Windows opens no directory)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """`text` into `path` (UTF-8), renamed into place: never half-written."""
    write_bytes(path, text.encode("utf-8"))


def write_figure(path: Path, draw: Callable[[BinaryIO], None]) -> None:
    """The PNG that `draw` saves to a buffer, written as every file is (`write_bytes`):
    a figure that fails partway leaves no file."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"savefig.format": "png"}):  # whatever the user's rc file says
        draw(buffer)
    write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def read_npz(path, refusal: str = "one array, not an NPZ archive"):
    """The NPZ archive at `path`, open for reading; its file is closed on leaving even
    where numpy refuses the archive (`np.load(path)` leaves a damaged one's file open).
    ValueError(`refusal`) where the file holds one array (`np.save`'s), not an archive."""
    with open(path, "rb") as f:
        archive = np.load(f)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(refusal)
        with archive:
            yield archive
