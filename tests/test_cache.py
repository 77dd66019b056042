"""`gdrelu.cache`: the persistent compilation cache that `simulate` turns on, in a fresh
process (the suite's own process keeps it off: tests/conftest.py)."""

import json
import os
import subprocess
import sys

# Each case in one child process: `gdrelu.cache` reloaded (so its once-per-process check
# starts afresh) and JAX's cache directory unset before it; one import of gdrelu, not one
# per case (each takes seconds).
PROBE = """
import importlib, json, os, sys
import jax
import gdrelu.cache
seen = []
for value, before in json.loads(sys.argv[1]):
    os.environ.pop("GDRELU_CACHE_DIR", None)
    if value is not None:
        os.environ["GDRELU_CACHE_DIR"] = value
    jax.config.update("jax_compilation_cache_dir", before)
    importlib.reload(gdrelu.cache).use_default_cache()
    seen.append(jax.config.jax_compilation_cache_dir)
print(json.dumps(seen))
"""


def _cache_dirs_after(cases):
    """JAX's cache directory after `use_default_cache` for each (GDRELU_CACHE_DIR or None,
    the directory the caller set before or None)."""
    env = {k: v for k, v in os.environ.items() if k != "GDRELU_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = "/nonexistent-xdg"
    args = [sys.executable, "-c", PROBE, json.dumps(cases)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cache_follows_the_variable_and_none_turns_it_off_and_a_callers_is_kept(tmp_path):
    cases = [(str(tmp_path), None), ("none", None), (None, None), (str(tmp_path), "/mine")]
    assert _cache_dirs_after(cases) == [str(tmp_path), None, "/nonexistent-xdg/gdrelu/xla", "/mine"]


EXPLICIT = """
import importlib, json, os, sys
import jax
import gdrelu.cache
path = sys.argv[1]
seen = []
os.environ["GDRELU_CACHE_DIR"] = path
jax.config.update("jax_compilation_cache_dir", None)
cache = importlib.reload(gdrelu.cache)
cache.use_compilation_cache("none")
cache.use_default_cache()
seen.append(jax.config.jax_compilation_cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
importlib.reload(gdrelu.cache).use_compilation_cache(path)
config = jax.config
seen += [config.jax_compilation_cache_dir, config.jax_persistent_cache_min_compile_time_secs]
print(json.dumps(seen))
"""


def test_an_explicit_none_stands_and_a_cache_keeps_small_programs(tmp_path):
    """`use_compilation_cache("none")` (`--cache-dir none`) is a choice `use_default_cache`
    leaves alone, though $GDRELU_CACHE_DIR names a directory; a cache that is turned on
    keeps every program, however fast it compiled (JAX's default keeps those over 1 s)."""
    done = subprocess.run(
        [sys.executable, "-c", EXPLICIT, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [None, str(tmp_path), 0.0]


def test_empty_variables_read_as_unset_and_an_empty_flag_is_refused(monkeypatch, tmp_path, capsys):
    """An empty $GDRELU_CACHE_DIR or $XDG_CACHE_HOME (as `export VAR=` leaves) is Path("."),
    the working directory: read as unset instead. An empty --cache-dir is refused."""
    from pathlib import Path

    from gdrelu.cache import default_cache_dir
    from gdrelu.cli import main

    monkeypatch.setenv("GDRELU_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert default_cache_dir() == Path.home() / ".cache" / "gdrelu" / "xla"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "gdrelu" / "xla"
    out = tmp_path / "never"
    assert main(["run", "--cache-dir", "", "--out", str(out)]) == 2 and not out.exists()
    assert "--cache-dir: an empty path" in capsys.readouterr().err
