"""Where the test suite's time goes: XLA compilation per test and per program.

    python scripts/profile_suite.py [--out DIR] [--top N] [-- pytest arguments]

Runs `python -m pytest` (the arguments after `--`, else the default suite) with this file
loaded as a plugin in every test process, then prints:
- the suite's wall time summed over the test processes, and how much of it JAX spent
  compiling, tracing and lowering (its monitoring events);
- the programs that compiled longest in all (name, compilations, seconds; a read from the
  suite's compilation cache counts as a compilation of almost no time);
- the tests that compiled longest, and the part of that no other test shares (programs
  of a name and argument shapes that only this test compiled): what dropping the test or
  changing its shapes would save.
Each process writes DIR/profile-<worker>.json (DIR: a new temporary directory).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

OUT_VARIABLE = "GDRELU_SUITE_PROFILE"
COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
FINISHED = re.compile(r"Finished XLA compilation of (.*?) in ([0-9.e-]+) sec")
COMPILING = re.compile(r"Compiling (\S+) with global shapes and types (.*?)\. Argument", re.S)


class _Recorder(logging.Handler):
    """JAX's compile log and monitoring events, filed under the running test."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.test = "<collection>"
        self.events = collections.defaultdict(collections.Counter)  # test -> event -> s
        self.programs = []  # (test, name, shapes, seconds)
        self.shapes = {}

    def emit(self, record):
        message = record.getMessage()
        if found := COMPILING.match(message):
            self.shapes[found.group(1)] = found.group(2)
        elif found := FINISHED.match(message):
            name, seconds = found.group(1), float(found.group(2))
            self.programs.append((self.test, name, self.shapes.pop(name, ""), seconds))

    def on_event(self, event, seconds, **_):
        self.events[self.test][event] += seconds


_RECORDER: _Recorder | None = None


def pytest_configure(config):
    """Plugin entry: listen to JAX from the first compilation on."""
    global _RECORDER
    if os.environ.get(OUT_VARIABLE) is None or _RECORDER is not None:
        return
    import jax
    import jax.monitoring

    _RECORDER = _Recorder()
    jax.config.update("jax_log_compiles", True)
    jax.monitoring.register_event_duration_secs_listener(_RECORDER.on_event)
    for name in ("jax._src.dispatch", "jax._src.interpreters.pxla"):
        logger = logging.getLogger(name)
        logger.addHandler(_RECORDER)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # the log of every compile would flood the report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Files the events of a test (setup, call, teardown) and its wall time under it."""
    if _RECORDER is None:
        yield
        return
    _RECORDER.test, start = item.nodeid, time.perf_counter()
    yield
    _RECORDER.events[item.nodeid]["wall"] += time.perf_counter() - start
    _RECORDER.test = "<between tests>"


def pytest_sessionfinish(session):
    if _RECORDER is None:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(os.environ[OUT_VARIABLE]) / f"profile-{worker}.json"
    path.write_text(json.dumps({"events": _RECORDER.events, "programs": _RECORDER.programs}))


def summary(directory: str, top: int) -> str:
    """The report of the profiles in `directory`."""
    events, programs = collections.defaultdict(collections.Counter), []
    for name in sorted(glob.glob(os.path.join(directory, "profile-*.json"))):
        profile = json.loads(Path(name).read_text())
        for test, counts in profile["events"].items():
            events[test].update(counts)
        programs += profile["programs"]
    total = collections.Counter()
    for counts in events.values():
        total.update(counts)
    lines = [
        f"tests' wall time, all processes: {total['wall']:.1f} s; compiling {total[COMPILE]:.1f} s,"
        f" tracing {total[TRACE]:.1f} s, lowering {total[LOWER]:.1f} s"
    ]
    by_name = collections.defaultdict(lambda: [0, 0.0])
    users = collections.defaultdict(set)
    for test, name, shapes, seconds in programs:
        by_name[name][0] += 1
        by_name[name][1] += seconds
        users[name, shapes].add(test)
    lines.append(f"\nprograms by compile time ({len(programs)} compilations):")
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    lines += [f"{s:8.1f} s {n:5d}  {name}" for name, (n, s) in ranked]
    own = collections.Counter()
    for test, name, shapes, seconds in programs:
        if users[name, shapes] == {test}:
            own[test] += seconds
    lines.append("\ntests by compile time (s: all, own; wall s):")
    ranked = sorted(events.items(), key=lambda kv: -kv[1][COMPILE])[:top]
    lines += [f"{c[COMPILE]:6.1f} {own[t]:6.1f} {c['wall']:6.1f}  {t}" for t, c in ranked]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory of the per-process profiles")
    parser.add_argument("--top", type=int, default=30, help="rows per table (default 30)")
    args = parser.parse_args(argv[:split])
    out = args.out or tempfile.mkdtemp(prefix="gdrelu-suite-profile-")
    os.makedirs(out, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ, **{OUT_VARIABLE: out})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "pytest", "-p", "profile_suite", *argv[split + 1 :]]
    code = subprocess.call(command, env=env)
    print(summary(out, args.top))
    print(f"\nprofiles in {out}/")
    return code


if __name__ == "__main__":
    sys.exit(main())
