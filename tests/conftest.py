"""Shared fixtures: float64 everywhere, and the golden vectors of the paper's reference code."""

import errno
import gc
import os
import re
import shutil
import signal
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 2)  # the engine shards runs over devices: test that
# What every `gdrelu` command sets (cli/backends.py) and never resets: the commands the
# tests run in-process would otherwise change it for every later test, and with it the
# key of every compiled program, so that a module that calls `simulate` and then `main`
# (or the reverse) compiled each of its programs twice.
jax.config.update("jax_default_matmul_precision", "highest")

DATA = Path(__file__).parent / "data"
# (major, minor, patch) of the installed jaxlib: XLA's rounding differs between releases,
# so a check of bits, or of values pinned on one release, holds on that release only
JAXLIB = tuple(int(part) for part in re.findall(r"\d+", jaxlib.__version__)[:3])
# `gdrelu run` keeps compiled programs in ~/.cache by default: not from the tests. The CLI
# tests run `gdrelu run` in-process, which would point the cache at ~/.cache for every
# later test (separate `gdrelu run` processes sharing a cache:
# tests/test_cli.py::test_second_run_reads_the_compilation_cache).
os.environ["GDRELU_CACHE_DIR"] = "none"
os.environ.setdefault("MPLBACKEND", "Agg")  # figures to files: no window on a desktop
# The suite's own compilation cache instead: one new directory per session, shared by the
# xdist workers (they inherit it from the controller's environment) and removed at the
# end, so that a program the other worker or an earlier module compiled is read back, not
# compiled again; a fresh clone starts empty, as CI does. GDRELU_TEST_CACHE_DIR=none turns
# it off; another directory is used and kept (docs/performance.md, "The test suite").
TEST_CACHE_VARIABLE = "GDRELU_TEST_CACHE_DIR"


def pytest_configure(config):
    # the Ctrl-C tests send SIGINT to themselves: a suite started in the background by a
    # shell (`pytest &`) inherits it ignored, and those four tests failed
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not hasattr(config, "workerinput") and TEST_CACHE_VARIABLE not in os.environ:
        config.gdrelu_test_cache = tempfile.mkdtemp(prefix="gdrelu-test-xla-")
        os.environ[TEST_CACHE_VARIABLE] = config.gdrelu_test_cache
    path = os.environ[TEST_CACHE_VARIABLE]
    if path.lower() != "none":  # before anything compiles: JAX reads it at the first compile
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    path = getattr(config, "gdrelu_test_cache", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def finished_cell(cell, status, escaped=None, **fields):
    """A cell's result with these statuses, `escaped` (default none) and any other result
    fields as given, zeros elsewhere (step sizes 0.5), without training."""
    from gdrelu.cells import CellResult
    from gdrelu.model import Params
    from gdrelu.outcome import SimulationResult

    zeros = np.zeros(len(status))
    params = Params(*(np.zeros((zeros.size, cell.width)),) * 3, zeros)
    values = {f: zeros for f in SimulationResult._fields if f != "params"}
    escaped = zeros.astype(bool) if escaped is None else np.asarray(escaped, bool)
    checked = np.full(zeros.size, cell.spec.applies_certificate)
    values.update(status=np.asarray(status, np.int8), escaped=escaped, certificate_checked=checked)
    values.update({k: np.asarray(v) for k, v in fields.items()})
    return CellResult(cell, zeros + 0.5, SimulationResult(params=params, **values))


def agreeing(gather, count: int):
    """A stub `runner.Processes.gather` of `count` processes in which none refused its
    share (the flag `processes.trained_everywhere` gathers before the runs), then `gather`."""

    def gathered(local):
        if isinstance(local, np.ndarray) and local.ndim == 0:
            return np.stack([local] * count)
        return gather(local)

    return gathered


def golden_case(golden, i):
    """The fields of trajectory case i as a dict without the `case{i}_` prefix."""
    prefix = f"case{i}_"
    return {k[len(prefix) :]: golden[k] for k in golden.files if k.startswith(prefix)}


@pytest.fixture(scope="session")
def auto_kernel() -> str:
    """The kernel "auto" should resolve to on this CPU: "native" where a C compiler is on
    the path ($CC, cc or gcc), "xla" otherwise (docs/design.md, "The native loop")."""
    name = os.environ.get("CC")
    found = shutil.which(name) if name else shutil.which("cc") or shutil.which("gcc")
    return "native" if found else "xla"


@pytest.fixture(scope="session")
def trajectories():
    return np.load(DATA / "gd_trajectories.npz")


@pytest.fixture(scope="session", params=["mc_outcomes_n16.npz", "mc_outcomes_n32_delta0.1.npz"])
def mc_outcomes(request):
    return np.load(DATA / request.param)


@pytest.fixture(scope="session")
def mc_simulated(mc_outcomes):
    """The stored Monte Carlo runs simulated from their initial conditions with the paper's
    protocol: (stored outcomes, SimulationResult); shared by the tests that read it."""
    from gdrelu import Params, WeightedData, simulate

    m = mc_outcomes
    runs = m["xw"].shape[0]
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"])
    params = Params(m["a0"], m["b0"], m["w0"], m["c0"])
    every, checks = int(m["check_every"]), int(m["max_checks"])
    return m, simulate(params, data, m["lr"], check_every=every, max_checks=checks)


# Linux's default vm.max_map_count is 65 530; every XLA CPU executable keeps about three
# memory mappings (eager operations compile one per shape). The margin is twice what the
# largest module adds (docs/performance.md, "The test suite").
MAX_MAPPINGS = 45_000


def _mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # no /proc: count as full, and release after every module
        return MAX_MAPPINGS


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module once the process holds
    `MAX_MAPPINGS` memory mappings: the whole suite in one process passed the default
    limit, where the next compile segfaults. Not after every module: a later module would
    trace and lower again every program it shares with an earlier one."""
    yield
    if _mappings() >= MAX_MAPPINGS:
        jax.clear_caches()


def numpy_gradient(theta, x, y, p, scales=(1.0, 1.0)):
    """∇ of ½ Σ p_j (f(x_j) - y_j)² for one ReLU network f = c + s_w Σ w_i σ(s_a a_i·x + b_i),
    written out by hand: x (m,) with a (n,), or x (m, d) with a (d, n); (s_a, s_w) =
    `scales`, (1, 1) in the standard parameterization."""
    a, b, w, c = theta
    sa, sw = scales
    xs = x.reshape(len(x), -1)
    z = sa * xs @ a.reshape(xs.shape[1], -1) + b
    on = z >= 0
    act = np.where(on, z, 0.0)
    r = p * (c + sw * act @ w - y)
    return [
        (sw * sa * np.einsum("j,jk,ji->ki", r, xs, on) * w).reshape(a.shape),
        sw * (r[:, None] * on).sum(0) * w,
        sw * (r[:, None] * act).sum(0),
        r.sum(),
    ]


def numpy_gd(theta, x, y, p, step_size, steps, scales=(1.0, 1.0)):
    """`steps` full-batch GD steps of `numpy_gradient`'s network from θ = (a, b, w, c)."""
    for _ in range(steps):
        grads = numpy_gradient(theta, x, y, p, scales)
        theta = [t - step_size * g for t, g in zip(theta, grads, strict=True)]
    return theta


def paper_runs(n, count, delta=0.0, seed=0):
    """`count` paper runs of width n (He init, six points, N = n² weights) and their h:
    (params, data, step), the runs of a cell of `count` runs."""
    from gdrelu import ExperimentSpec, theory
    from gdrelu.cells import Cell, initial_runs

    spec = ExperimentSpec(widths=(n,), deltas=(delta,), runs=count, seed=seed)
    params, data, _ = initial_runs(Cell(n, delta, spec), np.arange(count))
    return params, data, theory.paper_step_size(params, data)


def files_left_open(call, error=None) -> list[str]:
    """The files and directories call() left for Python to close or clean up (its
    ResourceWarnings, once its objects are collected); call() must raise `error`, if
    one is named."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as raised:
            if error is None or not isinstance(raised, error):
                raise
        else:
            if error is not None:
                raise AssertionError(f"no {error.__name__}")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def disk_full(*args, **kwargs):
    """A stub for any write (`os.fsync`, a store function): the disk is full."""
    raise OSError(errno.ENOSPC, "No space left on device")


def multinomial_counts_by_hand(words, weights, bits=32):
    """Counts (m,) of `optim.multinomial_counts`' rule, one draw at a time: u = the word's
    `bits` leading bits, T_j = ⌊2^bits Σ_{i≤j} p_i / Σp⌋ for j < m - 1, category #{j: T_j ≤
    u}, never past the last point of positive weight. Exact for weights whose partial sums
    are exact (the cumulative sum's order then does not matter)."""
    weights = np.asarray(weights)
    cdf = np.cumsum(weights)
    thresholds = np.floor(cdf[:-1] * (2.0**bits / cdf[-1]))
    last = int(np.flatnonzero(weights > 0)[-1])
    counts = np.zeros(weights.size, np.int64)
    for word in np.asarray(words):
        u = int(word) >> (32 - bits)
        counts[min(sum(1 for t in thresholds if t <= u), last)] += 1
    return counts


def batch_sizes(monkeypatch, module, name: str) -> list[int]:
    """The run counts of the calls of `module.name` from now on (its first argument's
    networks, a leading runs axis), recorded as it is called."""
    sizes, original = [], getattr(module, name)
    monkeypatch.setattr(
        module, name, lambda first, *rest: sizes.append(first.b.shape[0]) or original(first, *rest)
    )
    return sizes


def least_budget(spec, cells: int = 1) -> int:
    """The least memory budget `memory.check_fits` accepts for `spec` alone, with the
    results of `cells` cells of its shape kept together (bisection)."""
    from gdrelu import memory

    low, high = 1, 10**12
    while high - low > 1:
        middle = (low + high) // 2
        try:
            memory.check_fits(spec, middle, cells=cells)
            high = middle
        except memory.BudgetError:
            low = middle
    return high
