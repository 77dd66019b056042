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
