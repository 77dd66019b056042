"""JAX's persistent compilation cache, for the library as for the CLI.

Compiled programs are kept on disk, so that a second process with the same shapes loads
them instead of compiling (JAX checks the compiler version and the program in each
entry's key; docs/design.md, "Compilation cache"). `simulate` calls `use_default_cache`
on its first call in a process; `gdrelu run` sets its `--cache-dir` with
`use_compilation_cache`.

The directory: $GDRELU_CACHE_DIR, else $XDG_CACHE_HOME/gdrelu/xla (~/.cache/gdrelu/xla).
To turn the cache off, set GDRELU_CACHE_DIR=none (the tests do). A caller who set JAX's
cache directory (`jax.config.update("jax_compilation_cache_dir", ...)`) keeps it: gdrelu
changes nothing then.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "GDRELU_CACHE_DIR"
_state = {"checked": False}


def default_cache_dir() -> Path | None:
    """$GDRELU_CACHE_DIR, else $XDG_CACHE_HOME/gdrelu/xla (~/.cache/gdrelu/xla), empty
    values read as unset; "none" comes back as Path("none"), which
    `use_compilation_cache` takes as off."""
    if os.environ.get(VARIABLE):  # set and not empty: an empty one would be Path(".")
        return Path(os.environ[VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gdrelu" / "xla"


def use_compilation_cache(path: Path | str | None) -> None:
    """Keep every compiled program in `path` (None or "none": leave the cache off). Small
    programs too: most of a small run's programs compile in well under a second, and
    loading them is faster still (docs/performance.md). An explicit choice, "none" too,
    stands: `use_default_cache` changes nothing after it."""
    _state["checked"] = True
    if path is None or str(path).lower() == "none":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def use_default_cache() -> None:
    """Once per process: the cache in `default_cache_dir()`, unless JAX's cache directory
    is set already (by the caller, or by an earlier call) or $GDRELU_CACHE_DIR is none."""
    if _state["checked"]:
        return
    _state["checked"] = True
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    use_compilation_cache(default_cache_dir())
