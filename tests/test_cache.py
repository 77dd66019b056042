"""`gdrelu.cache`: the persistent compilation cache that `simulate` turns on, in fresh
processes (the suite's own process keeps it off: tests/conftest.py)."""

import os
import subprocess
import sys

PROBE = """
import jax
{before}
from gdrelu.cache import use_default_cache
use_default_cache()
print(jax.config.jax_compilation_cache_dir)
"""


def _cache_dir_after(env_value, before=""):
    env = {k: v for k, v in os.environ.items() if k != "GDRELU_CACHE_DIR"}
    if env_value is not None:
        env["GDRELU_CACHE_DIR"] = env_value
    env["XDG_CACHE_HOME"] = "/nonexistent-xdg"
    code = PROBE.format(before=before)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_cache_follows_the_variable_and_none_turns_it_off(tmp_path):
    assert _cache_dir_after(str(tmp_path)) == str(tmp_path)
    assert _cache_dir_after("none") == "None"
    assert _cache_dir_after(None) == "/nonexistent-xdg/gdrelu/xla"


def test_a_cache_the_caller_set_is_kept(tmp_path):
    mine = 'jax.config.update("jax_compilation_cache_dir", "/mine")'
    assert _cache_dir_after(str(tmp_path), before=mine) == "/mine"
