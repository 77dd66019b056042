"""The propagator's GD and heavy-ball steps as one C loop (`gdrelu.native`,
kernel="native"): the XLA loop's numbers bit for bit, in the engine too, and a clear
refusal where it cannot run."""

import ctypes
import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, JAXLIB, disk_full, files_left_open
from test_kernel import _batch

from gdrelu import Params, WeightedData, engine, native, propagator, simulate, theory
from gdrelu.cells import Cell, initial_runs
from gdrelu.data import paper_data
from gdrelu.fastpath import side_moments
from gdrelu.spec import ExperimentSpec

try:
    native.library()
    NO_COMPILER = None
except native.NativeUnavailable as error:
    NO_COMPILER = str(error)
needs_compiler = pytest.mark.skipif(NO_COMPILER is not None, reason=f"{NO_COMPILER}")


# jaxlib 0.12's XLA rounds a few of the loop's sums otherwise than 0.10 and 0.11 did (on
# the same inputs: up to 8e-15 relative after 200 steps, docs/design.md); the C loop keeps
# the bits of those releases, which `_assert_same_steps` checks where they are XLA's.
XLA_ROUNDS_AS_THE_C_LOOP = JAXLIB < (0, 12)


def _assert_same_steps(ours: propagator.Stepped, xla: propagator.Stepped):
    """Φ_t, Σ_t, c and the flags bit for bit (the floats to 1e-12 relative on a jaxlib
    whose XLA rounds otherwise); the tracked neurons and kinks to 1e-14 (there 1e-10, the
    issue's tolerance: a kink |b_i/a_i| of a small a_i magnifies a rounding)."""
    exact = (ours.c, ours.c_velocity, ours.state, ours.exact, ours.end.grams, ours.end.real)
    same = (xla.c, xla.c_velocity, xla.state, xla.exact, xla.end.grams, xla.end.real)
    for mine, theirs in zip(jax.tree.leaves(exact), jax.tree.leaves(same), strict=True):
        if XLA_ROUNDS_AS_THE_C_LOOP or not jnp.issubdtype(theirs.dtype, jnp.floating):
            np.testing.assert_array_equal(mine, theirs)
        else:
            scale = float(np.abs(theirs).max(initial=0.0))
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-15 * scale)
    rtol = 1e-14 if XLA_ROUNDS_AS_THE_C_LOOP else 1e-10
    np.testing.assert_allclose(ours.end.witnesses, xla.end.witnesses, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(ours.kink, xla.kink, rtol=rtol, atol=1e-300)


def _natively(steps, *args, **kwargs):
    """`steps(*args, kernel="native", **kwargs)`, whose program is checked to call the C
    loop (so that a "native" that quietly ran XLA's loop cannot equal XLA's loop)."""
    text = steps.lower(*args, **kwargs, kernel="native").as_text()
    assert "gdrelu_propagator_steps" in text, "the C loop is not in the program"
    return steps(*args, **kwargs, kernel="native")


@needs_compiler
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_native_loop_equals_the_xla_loop(alpha):
    """1000 GD steps of 128 runs (half of them with irregular neurons), the first 3 of 4
    blocks stepping: Φ_t, c, Σ_t and the exact flags of `deferred_steps` equal the XLA
    loop's bit for bit; the tracked neurons and the largest kink agree to 1e-14 relative
    (XLA's code contracts some of their multiply-adds otherwise: a few entries differ in
    the last bits); the last block keeps Φ = I."""
    params, state, moments, h = _batch(128)
    steps = jax.jit(
        propagator.deferred_steps, static_argnums=5, static_argnames=("block", "kernel")
    )
    args = (params, state, moments, h, alpha, 1000)
    xla = steps(*args, block=32, num_blocks=3)
    ours = _natively(steps, *args, block=32, num_blocks=3)
    _assert_same_steps(ours, xla)
    np.testing.assert_array_equal(ours.state.phi[96:], np.broadcast_to(np.eye(3), (32, 2, 3, 3)))
    assert not np.allclose(ours.state.phi[:96], state.phi[:96])


@needs_compiler
def test_a_count_that_is_not_a_multiple_of_the_lanes_steps_those_runs_only():
    """The C loop takes `native.LANES` = 8 runs at a time: with 10 of 12 runs stepping, it
    steps a last group of lanes 8-15 (12-15 padding), and runs 10 and 11 keep their carry
    (which `native.native_steps` merges back: the C loop itself steps whole groups)."""
    params, state, moments, h = jax.tree.map(lambda v: v[:12], _batch(128))
    steps = jax.jit(
        propagator.deferred_steps, static_argnums=5, static_argnames=("block", "kernel")
    )
    args = (params, state, moments, h, 0.0, 200)
    xla = steps(*args, block=2, num_blocks=5)
    ours = _natively(steps, *args, block=2, num_blocks=5)
    _assert_same_steps(ours, xla)
    np.testing.assert_array_equal(ours.state.phi[10:], np.broadcast_to(np.eye(3), (2, 2, 3, 3)))


# Slow: in the fast suite the default kernel (the C loop) meets the reference code's
# statuses (tests/test_golden.py::test_monte_carlo_statuses) and the results pinned at
# 71d13f4, before the C loop, by XLA's (tests/test_pinned.py), and step by step XLA's bits.
@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mc_outcomes_n16.npz", "mc_outcomes_n32_delta0.1.npz"])
def test_engine_with_the_native_loop_equals_the_xla_loop(monkeypatch, name):
    """`simulate` with kernel "auto" (chosen by the environment: the propagator's C loop,
    XLA's general path) gives the XLA loop's result on the reference code's Monte Carlo
    runs, every field bit for bit, and so their stored statuses. (Kernel "native" by name
    also takes the general path's C loop, to rounding: tests/test_native_general.py.)"""
    m = np.load(DATA / name)
    runs = 64
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"][:runs])
    params = Params(m["a0"][:runs], m["b0"][:runs], m["w0"][:runs], m["c0"][:runs])
    kwargs = dict(check_every=int(m["check_every"]), max_checks=int(m["max_checks"]))
    jax.clear_caches()  # both runs trace their chunks here, not in an earlier test
    xla = simulate(params, data, m["lr"][:runs], kernel="xla", **kwargs)
    calls = []
    steps = native.native_steps
    monkeypatch.setattr(native, "native_steps", lambda *a: calls.append(a) or steps(*a))
    monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", "auto")
    general = engine.TRACE_COUNT["general"]
    ours = simulate(params, data, m["lr"][:runs], **kwargs)
    assert calls  # the chunk traced the C loop
    assert engine.TRACE_COUNT["general"] == general  # the redos' program serves both kernels
    for mine, theirs in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    stored = m["status"][:runs]
    np.testing.assert_array_equal(ours.status, np.where(stored == "CROSSED", 1, 2))


def test_native_is_refused_without_a_compiler_and_off_the_cpu(monkeypatch):
    cpu = jax.devices("cpu")
    with pytest.raises(ValueError, match="'native' is a C loop for CPUs, not gpu"):
        engine.propagator_kernel("gpu", "native")
    monkeypatch.setenv("CC", "/no/such/compiler")
    native.library.cache_clear()
    try:
        with pytest.raises(native.NativeUnavailable, match=r"found no C compiler.*no/such"):
            engine.blocking_for(cpu, 64, kernel="native")
    finally:
        native.library.cache_clear()


@needs_compiler
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_native_heavy_ball_equals_the_xla_loop(alpha):
    """Heavy ball (D = 6: z_i = (θ_i, v_i), μ = 0.9) from a nonzero velocity: 1000 steps of
    96 of 128 runs give the XLA loop's Φ_t, Σ_t, c, c's velocity and flags bit for bit,
    the tracked neurons and the largest kink to 1e-14; the last block keeps Φ = I."""
    params, _, moments, h = _batch(128)
    velocity = jax.tree.map(lambda v: -1e-3 * np.asarray(v), params)

    @jax.jit  # one program, not one per eager operation
    def deferred(params, velocity):
        regular = jax.vmap(propagator.regular_neurons)(params)
        return propagator.deferred(params, *regular, velocity)

    state = deferred(params, velocity)
    steps = jax.jit(
        propagator.deferred_steps,
        static_argnums=5,
        static_argnames=("block", "kernel", "optimizer"),
    )
    momentum = propagator.get_optimizer("momentum")
    args = (params, state, moments, 0.1 * h, alpha, 1000)
    common = dict(block=32, num_blocks=3, optimizer=momentum, velocity=velocity)
    xla = steps(*args, **common)
    ours = _natively(steps, *args, **common)
    _assert_same_steps(ours, xla)
    np.testing.assert_array_equal(ours.state.phi[96:], np.broadcast_to(np.eye(6), (32, 2, 6, 6)))
    assert not np.allclose(ours.c_velocity[:96], velocity.c[:96])


# -m slow (16 s, programs no other test needs): the C loop's heavy-ball bits are checked
# step by step above, and `simulate` on the C loop ("auto") against the general path, side
# changes included, by tests/test_propagator_optimizers.py::test_side_changes_are_redone
@pytest.mark.slow
@needs_compiler
def test_engine_heavy_ball_with_the_native_loop_equals_the_xla_loop(monkeypatch):
    """`simulate` of full-batch heavy ball with the crossing rule, kernel "auto" (the
    propagator's C loop) and "xla": every field bit for bit, on runs that cross (redone on
    the general path) and runs whose neuron 0 changes side (its chunks redone too) as well
    as runs that train to the end on the propagator."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=32, seed=11)
    params, data, _ = initial_runs(Cell(8, 0.0, spec), np.arange(32))
    params = params._replace(a=params.a.at[:, 0].set(1e-7 * np.sign(params.a[:, 0])))
    step = 0.1 * theory.paper_step_size(params, data)
    kwargs = dict(optimizer="momentum", stop_on=("crossed",), check_every=50, max_checks=12)
    jax.clear_caches()  # the C loop traced here, not in an earlier test of this process
    xla = simulate(params, data, step, kernel="xla", **kwargs)
    calls = []
    steps = native.native_steps
    monkeypatch.setattr(native, "native_steps", lambda *a: calls.append(a) or steps(*a))
    ours = simulate(params, data, step, kernel="auto", **kwargs)
    assert calls and calls[0][5] == 0.9  # the chunk traced the heavy-ball C loop
    for mine, theirs in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert {engine.Status.CROSSED, engine.Status.UNFINISHED} <= set(ours.status.tolist())
    assert np.any(np.sign(ours.params.a[:, 0]) != np.sign(params.a[:, 0]))


@needs_compiler
@pytest.mark.parametrize("name", ["sgd", "momentum"])
def test_native_minibatch_steps_equal_the_xla_loop(name):
    """SGD and heavy ball with the paper's B = 16 multinomial draws per step, from
    per-run keys and step counts: the C loop's threefry words, tail counts and minibatch
    moments give, after 300 steps of 96 of 128 runs, the XLA loop's Φ_t, Σ_t, c, c's
    velocity and flags bit for bit, the tracked neurons and the largest kink to 1e-14."""
    params, state, moments, h = _batch(128)
    velocity = None
    if name == "momentum":
        velocity = jax.tree.map(np.zeros_like, params)
        regular = jax.vmap(propagator.regular_neurons)(params)
        state, h = propagator.deferred(params, *regular, velocity), 0.1 * h
    data = jax.vmap(lambda k: paper_data(k, 0.1, 16**2, np.float64))(
        jax.random.split(jax.random.key(0), (128, 2))[:, 1]
    )
    keys = jax.random.key_data(jax.random.split(jax.random.key(3), 128))
    noise = propagator.Noise(data, keys, np.arange(128, dtype=np.int32) * 7)
    optimizer = propagator.get_optimizer(name, sampler="multinomial")
    steps = jax.jit(
        propagator.deferred_steps,
        static_argnums=5,
        static_argnames=("block", "kernel", "optimizer"),
    )
    args = (params, state, moments, h, 0.1, 300)
    common = dict(block=32, num_blocks=3, optimizer=optimizer, velocity=velocity, noise=noise)
    xla = steps(*args, **common)
    ours = _natively(steps, *args, **common)
    _assert_same_steps(ours, xla)
    assert not np.allclose(ours.c[:96], params.c[:96])


@needs_compiler
@pytest.mark.parametrize("points", [2, 12])
def test_native_minibatches_of_any_number_of_points_equal_the_xla_loop(points):
    """SGD on 2 points (one tail count: XLA contracts it differently) and on 12 (the last
    three of zero weight, so some thresholds are +inf): the C loop's steps equal the XLA
    loop's as for the six points."""
    params, state, _, _ = jax.tree.map(lambda v: np.asarray(v)[:32], _batch(128))
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 3.0, (32, points)) * rng.choice([-1.0, 1.0], (32, points))
    weights = rng.uniform(0.0, 1.0, (32, points)) * (rng.uniform(size=(32, points)) > 0.2)
    weights[:, 0] = 1.0
    if points > 3:
        weights[:, -3:] = 0.0
    data = WeightedData(x, np.sin(x) + 0.1 * x, weights / weights.sum(-1, keepdims=True))
    moments = jax.vmap(side_moments)(data)
    h = theory.paper_step_size(params, data)
    keys = jax.random.key_data(jax.random.split(jax.random.key(6), 32))
    noise = propagator.Noise(data, keys, np.zeros(32, np.int32))
    steps = jax.jit(
        propagator.deferred_steps,
        static_argnums=5,
        static_argnames=("block", "kernel", "optimizer"),
    )
    args = (params, state, moments, h, 0.0, 200)
    common = dict(block=8, optimizer=propagator.get_optimizer("sgd"), noise=noise)
    _assert_same_steps(_natively(steps, *args, **common), steps(*args, **common))


# -m slow (11 s, programs no other test needs): the C loop's minibatch bits are checked
# step by step above, and `simulate` of SGD on the C loop ("auto") against the general
# path by tests/test_propagator_optimizers.py::test_runs_that_cross_and_go_on_equal_the_general_path
@pytest.mark.slow
@needs_compiler
def test_engine_sgd_with_the_native_loop_equals_the_xla_loop():
    """`simulate` of SGD (B = 16 multinomial draws) with the crossing rule, kernel "auto"
    (the propagator's C loop) and "xla": every field bit for bit, with runs that cross and
    runs that do not."""
    spec = ExperimentSpec(widths=(8,), deltas=(0.0,), runs=32, seed=11)
    params, data, _ = initial_runs(Cell(8, 0.0, spec), np.arange(32))
    step = theory.paper_step_size(params, data)
    keys = jax.random.split(jax.random.key(4), 32)
    kwargs = dict(optimizer="sgd", key=keys, stop_on=("crossed",), check_every=50, max_checks=12)
    xla, ours = (simulate(params, data, step, kernel=k, **kwargs) for k in ("xla", "auto"))
    for mine, theirs in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert {engine.Status.CROSSED, engine.Status.UNFINISHED} <= set(ours.status.tolist())


@needs_compiler
def test_auto_takes_the_c_loop_where_it_trains_and_xla_elsewhere(monkeypatch):
    """The default kernel, "auto": the C loop on a CPU for GD, heavy ball and SGD with
    multinomial minibatches; XLA's loop for the epoch sampler, float32 and off the CPU."""
    monkeypatch.delenv("GDRELU_PROPAGATOR_KERNEL", raising=False)
    optimizer = propagator.get_optimizer
    assert engine.propagator_kernel("cpu") == "native"
    assert engine.propagator_kernel("cpu", optimizer=optimizer("momentum")) == "native"
    assert engine.propagator_kernel("cpu", optimizer=optimizer("sgd")) == "native"
    stochastic = optimizer("momentum", sampler="multinomial")
    assert engine.propagator_kernel("cpu", optimizer=stochastic) == "native"
    epochs = optimizer("sgd", sampler="epoch")
    assert engine.propagator_kernel("cpu", optimizer=epochs) == "xla"
    ten = optimizer("sgd", batch_size=10)  # B·first and 1/B round: the bits would differ
    assert engine.propagator_kernel("cpu", optimizer=ten) == "xla"
    assert engine.propagator_kernel("gpu") == "xla"
    assert engine.propagator_kernel("cpu", dtype=np.dtype(np.float32)) == "xla"


def test_auto_without_a_compiler_warns_and_takes_xla(monkeypatch):
    monkeypatch.delenv("GDRELU_PROPAGATOR_KERNEL", raising=False)
    monkeypatch.setenv("CC", "/no/such/compiler")
    native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"found no C compiler.*take XLA's loop"):
            assert engine.propagator_kernel("cpu") == "xla"
    finally:
        native.library.cache_clear()


@needs_compiler
def test_native_steps_no_epoch_minibatches():
    params, state, moments, h = _batch(128)
    sgd = propagator.get_optimizer("sgd", sampler="epoch")
    match = "kernel 'native' trains full batches or multinomial minibatches of 2\\^k draws"
    with pytest.raises(ValueError, match=match):
        propagator.deferred_steps(
            params, state, moments, h, 0.0, 10, optimizer=sgd, kernel="native", noise=object()
        )


def test_the_python_side_pads_to_the_c_loops_lanes():
    """`native.LANES` is the C loops' LANES (lanes.h): the program pads the runs to a multiple of
    it, and the C loop reads whole vectors of that many lanes (a smaller multiple would
    read past the arrays)."""
    import re

    defined = re.search(r"^#define LANES (\d+)$", native.HEADERS[0].read_text(), re.MULTILINE)
    assert defined is not None and int(defined.group(1)) == native.LANES


@needs_compiler
def test_the_ffi_target_refuses_lanes_that_are_not_whole_vectors():
    """Called as an XLA FFI target with 4 lanes, not a multiple of the loop's 8, the C
    loop returns an error rather than read past its arrays."""
    rows = (18, 1, 18, 1, 1, 18, 6, 6, 10, 1)  # GD's carry, then its fixed operands
    arrays = [jax.device_put(np.zeros((r, 4))) for r in rows]
    config = jax.device_put(np.array([0.0, -1.0, 10.0, 0.0, 4.0]))  # alpha, mu, steps, B, active
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays[:5]]
    call = jax.ffi.ffi_call(native.registered(), shapes)
    with pytest.raises(jax.errors.JaxRuntimeError, match="multiples of LANES"):
        jax.block_until_ready(call(*arrays, config))


@needs_compiler
def test_the_c_loop_refuses_arrays_of_the_wrong_shape():
    """`run_loop` checks what the C loop would trust: GD's D = 3 arrays are not heavy
    ball's (D = 6), and lanes come in multiples of `native.LANES` (8). GD's arrays,
    (rows, lanes) in the layout of `host_arrays`: carry Φ (two sides' 3×3), c, the 6
    tracked z_i, kink and moved flags; fixed Σ (two sides' 3×3), plus, real, the 10 side
    moments, h."""

    def arrays(lanes):
        carry = [np.zeros((rows, lanes)) for rows in (18, 1, 18, 1, 1)]
        return carry, [np.zeros((rows, lanes)) for rows in (18, 6, 6, 10, 1)]

    native.run_loop(*arrays(8), 0.0, 0)  # accepted
    carry, fixed = arrays(8)
    with pytest.raises(ValueError, match=r"D = 6\) takes C-contiguous float64 \(72, 8\)"):
        native.run_loop([*carry, np.zeros((1, 8))], fixed, 0.0, 10, momentum=0.9)
    with pytest.raises(ValueError, match="lanes in multiples of 8, not 6"):
        native.run_loop(*arrays(6), 0.0, 10)


@pytest.fixture
def cache_setting():
    """For a test that changes JAX's compilation-cache setting: the setting restored after
    it, and the C libraries loaded afresh before and after it."""
    before = jax.config.jax_compilation_cache_dir
    native.library.cache_clear()
    native.general_library.cache_clear()
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    native.library.cache_clear()
    native.general_library.cache_clear()


@needs_compiler
def test_the_built_loop_is_kept_in_the_compilation_cache(tmp_path, monkeypatch, cache_setting):
    """With JAX's compilation cache on, the first build is kept in its directory and a
    later process (here: the cache of `library` cleared) loads it without compiling;
    with the cache off nothing is written there."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    native.library()
    (kept,) = (tmp_path / "gdrelu-native").glob("*.so")  # the propagator's alone
    assert kept.name.startswith("propagator-")
    native.general_library()
    (general,) = (tmp_path / "gdrelu-native").glob("general-*.so")
    native.library.cache_clear()
    native.general_library.cache_clear()

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    assert native.library().gd_steps is not None
    assert native.general_library().gdrelu_general_steps is not None
    jax.config.update("jax_compilation_cache_dir", None)
    native.library.cache_clear()
    with pytest.raises(AssertionError, match="compiled again"):
        native.library()
    assert sorted(tmp_path.rglob("*.so")) == sorted([kept, general])


def test_a_missing_source_or_header_is_an_error_not_a_missing_compiler(
    tmp_path, monkeypatch, cache_setting
):
    """A C source or header missing from the install is a FileNotFoundError naming it, with
    the compilation cache on or off: not `NativeUnavailable` (a compiler that failed, which
    "auto" passes over with a warning and the tests skip)."""
    missing = tmp_path / "general.c"
    for directory in (None, str(tmp_path)):
        jax.config.update("jax_compilation_cache_dir", directory)
        with monkeypatch.context() as patched:
            patched.setattr(native, "GENERAL_SOURCE", missing)
            native.general_library.cache_clear()
            with pytest.raises(FileNotFoundError, match=r"C source is missing: .*general\.c"):
                native.general_library()
        with monkeypatch.context() as patched:
            patched.setattr(native, "HEADERS", (tmp_path / "lanes.h", native.HEADERS[1]))
            native.general_library.cache_clear()
            with pytest.raises(FileNotFoundError, match=r"C source is missing: .*lanes\.h"):
                native.general_library()


# jaxlib 0.11 renamed the head of a call frame's extensions; its layout is the same
RENAMED = {"XLA_FFI_Extension_Base": "XLA_FFI_InternalExtension",
           "XLA_FFI_Extension_Type": "XLA_FFI_InternalExtension_Type"}  # fmt: skip


@needs_compiler
@pytest.mark.parametrize("source", [native.SOURCE, native.GENERAL_SOURCE], ids=lambda p: p.name)
def test_the_c_loops_compile_against_the_ffi_header_of_jaxlib_0_10_and_of_0_11(source, tmp_path):
    """The C sources build against the installed jaxlib's c_api.h and against the same
    header with the other release's names for the extension head: jaxlib 0.11 (the GPU
    image's) renamed it, and there the C loops failed to build, so that "auto" warned
    and fell back to XLA's loop."""
    header = Path(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h").read_text()
    renames = RENAMED if "XLA_FFI_Extension_Base" in header else {v: k for k, v in RENAMED.items()}
    assert all(name in header for name in renames), "neither release's names in c_api.h"
    other = header
    for old in sorted(renames, key=len, reverse=True):  # a name before its prefix
        other = other.replace(old, renames[old])
    include = tmp_path / "xla" / "ffi" / "api"
    include.mkdir(parents=True)
    (include / "c_api.h").write_text(other)
    compiler = native.c_compiler()
    for directory in (jax.ffi.include_dir(), str(tmp_path)):
        command = [compiler, *native.FLAGS, "-fsyntax-only", f"-I{directory}", str(source)]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, f"against {directory}:\n{done.stderr[-2000:]}"


_WORDS_HARNESS = """
#include "lanes.h"
void counts(const unsigned *k0, const unsigned *k1, unsigned step, long draws, long tails,
            const double *thresholds, double *out) {
  vu a, b;
  vd TH[8], C[8];
  __builtin_memcpy(&a, k0, sizeof a), __builtin_memcpy(&b, k1, sizeof b);
  for (long j = 0; j < tails; j++) TH[j] = load(thresholds + j * LANES);
  tail_counts(a, b, (vu){} + step, draws, tails, TH, C);
  for (long j = 0; j < tails; j++) store(out + j * LANES, C[j]);
}
"""

_WORD_KEYS = np.random.default_rng(5).integers(0, 2**32, size=(native.LANES, 2), dtype=np.uint32)


def _word_thresholds() -> np.ndarray:
    """(5, lanes) nondecreasing thresholds, one lane's last +inf (a category of weight 0)."""
    thresholds = np.sort(np.random.default_rng(6).integers(0, 2**32, size=(5, native.LANES)), 0)
    thresholds = thresholds.astype(np.float64)
    thresholds[4, 3] = np.inf
    return thresholds


_WORD_THRESHOLDS = _word_thresholds()


_WORD_DRAWS = (1, 3, 8, 9, 16, 17, 33)  # GROUP 8 or 4: whole, cut short, odd counts


@functools.cache
def _jax_tail_counts() -> list[np.ndarray]:
    """(2, 5, lanes) per count of `_WORD_DRAWS`: the tail counts of steps 123455 and 123456
    from JAX's words (one program for all counts)."""
    from gdrelu.optim import multinomial_words, tail_counts

    @jax.jit
    def counts(keys, thresholds):
        words = [
            jax.vmap(lambda k, d=d: multinomial_words(k, d, 123455, 2))(keys) for d in _WORD_DRAWS
        ]
        return [jnp.stack([tail_counts(w[:, t].T, thresholds) for t in (0, 1)]) for w in words]

    return [np.asarray(c) for c in counts(_WORD_KEYS, jnp.asarray(_WORD_THRESHOLDS))]


@needs_compiler
@pytest.mark.parametrize("vectors", ["native", "without AVX-512"])
def test_the_c_tail_counts_are_those_of_jax_s_words_for_any_draw_count(vectors, tmp_path):
    """`tail_counts` of lanes.h, which runs a step's threefry calls GROUP at a time (8 with
    AVX-512, 4 without): for 1 to 33 draws, so that groups are whole, cut short, and of an
    odd count, each lane's tail counts equal those of `optim.multinomial_words` (JAX's
    threefry) against its thresholds, a +inf among them (a category of weight 0)."""
    compiler = native.c_compiler()
    flags = [f for f in native.FLAGS if f != "-DGDRELU_XLA_FFI"]
    if vectors != "native":
        if platform.machine() not in ("x86_64", "AMD64"):
            pytest.skip("AVX-512 is an x86 choice")
        flags.append("-mno-avx512f")
    (tmp_path / "words.c").write_text(_WORDS_HARNESS)
    built = tmp_path / "words.so"
    command = [compiler, *flags, f"-I{native.SOURCE.parent}", str(tmp_path / "words.c")]
    done = subprocess.run([*command, "-o", str(built)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    library = ctypes.CDLL(str(built))
    keys, thresholds = _WORD_KEYS, _WORD_THRESHOLDS
    for draws, wanted in zip(_WORD_DRAWS, _jax_tail_counts(), strict=True):
        for step, want in zip((123455, 123456), wanted, strict=True):
            out = np.zeros((5, native.LANES))
            library.counts(
                *(np.ascontiguousarray(keys[:, i]).ctypes.data_as(ctypes.c_void_p) for i in (0, 1)),
                ctypes.c_uint(step), ctypes.c_long(draws), ctypes.c_long(5),
                thresholds.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
            )  # fmt: skip
            np.testing.assert_array_equal(out, want, err_msg=f"{draws} draws, step {step}")


def _fake_compiler(monkeypatch, built: bytes):
    """`subprocess.run` as a compiler that writes `built` as its output (-o) at once, in a
    new build directory (a library loaded from a path is what that path loads again)."""

    def compile_(command, **kwargs):
        output = Path(command[command.index("-o") + 1])
        output.unlink(missing_ok=True)  # as a linker does: the loaded file stays as it was
        output.write_bytes(built)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(native.subprocess, "run", compile_)
    fresh = functools.cache(native._build_directory.__wrapped__)  # the process's, after
    monkeypatch.setattr(native, "_build_directory", fresh)


@needs_compiler
def test_a_broken_or_unwritable_cache_costs_a_compile_and_nothing_else(
    tmp_path, monkeypatch, cache_setting
):
    """A cache entry that does not load (a truncated write, say) is built again and
    replaced; a cache directory that cannot be written is passed over; a build that does
    not load is `NativeUnavailable` with the reason (the compiler here: a copy of the
    loop already built in this process)."""
    real = Path(native.library()._name).read_bytes()
    _fake_compiler(monkeypatch, real)
    native.library.cache_clear()
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
    native.library()
    (kept,) = (tmp_path / "cache" / "gdrelu-native").glob("propagator-*.so")
    kept.write_bytes(b"not a library")
    native.library.cache_clear()
    assert native.library().gd_steps is not None
    assert kept.read_bytes() == real  # replaced
    (tmp_path / "file").write_text("")  # the cache's directory is a file
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "file"))
    native.library.cache_clear()
    assert native.library().gd_steps is not None
    jax.config.update("jax_compilation_cache_dir", None)
    _fake_compiler(monkeypatch, b"not a library")
    native.library.cache_clear()
    with pytest.raises(native.NativeUnavailable, match="could not be loaded"):
        native.library()


@needs_compiler
def test_a_cache_write_that_fails_leaves_no_partial_file(tmp_path, monkeypatch, cache_setting):
    """A full disk while keeping the build (its rename fails) leaves the cache directory
    as it was, the library loaded all the same: nothing half-written under any name."""
    _fake_compiler(monkeypatch, Path(native.library()._name).read_bytes())
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
    native.library.cache_clear()
    monkeypatch.setattr(os, "replace", disk_full)
    assert native.library().gd_steps is not None
    assert list((tmp_path / "cache" / "gdrelu-native").iterdir()) == []


@needs_compiler
def test_the_builds_of_a_process_share_one_directory(monkeypatch, cache_setting):
    """Both libraries built in a process (cache off) go to one build directory, removed
    at exit: none is made and dropped at a build, which Python warns of as left for it
    to clean up."""
    _fake_compiler(monkeypatch, Path(native.library()._name).read_bytes())
    jax.config.update("jax_compilation_cache_dir", None)
    native.library.cache_clear()

    def build_both():
        native.library(), native.general_library()

    assert not files_left_open(build_both)
    built = {Path(native.library()._name), Path(native.general_library()._name)}
    assert {path.parent for path in built} == {native._build_directory()}
    assert {path.name for path in built} == {"propagator.so", "general.so"}


def test_the_cache_key_changes_with_everything_the_build_depends_on(
    tmp_path, monkeypatch, cache_setting
):
    """`native.cached`'s entry is the same for the same build and another one where the
    source, either header, the flags, the compiler (another, or the same one changed) or
    the CPU differ (-march=native code may not run on another CPU: its model and feature
    flags are in the key)."""
    files = {p.name: tmp_path / p.name for p in (native.SOURCE, *native.HEADERS)}
    for original in (native.SOURCE, *native.HEADERS):
        files[original.name].write_bytes(original.read_bytes())
    source = files[native.SOURCE.name]
    monkeypatch.setattr(native, "HEADERS", tuple(files[p.name] for p in native.HEADERS))
    compilers = [tmp_path / "cc", tmp_path / "other-cc"]
    for i, compiler in enumerate(compilers):
        compiler.write_text(f"compiler {i}")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
    first = native.cached(str(compilers[0]), source, "propagator")
    assert first.parent == tmp_path / "cache" / "gdrelu-native"
    assert native.cached(str(compilers[0]), source, "propagator") == first
    entries = {first, native.cached(str(compilers[0]), source, "general")}
    for path in files.values():
        path.write_bytes(path.read_bytes() + b"\n")
        entries.add(native.cached(str(compilers[0]), source, "propagator"))
    entries.add(native.cached(str(compilers[1]), source, "propagator"))
    compilers[0].write_text("compiler 0, updated")
    entries.add(native.cached(str(compilers[0]), source, "propagator"))
    with monkeypatch.context() as patched:
        patched.setattr(native, "FLAGS", (*native.FLAGS, "-DOTHER"))
        entries.add(native.cached(str(compilers[0]), source, "propagator"))
    with monkeypatch.context() as patched:
        patched.setattr(native, "_processor", lambda: "another CPU")
        entries.add(native.cached(str(compilers[0]), source, "propagator"))
    assert len(entries) == 9
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return
    features = {line for line in lines if line.startswith(("flags", "Features"))}
    assert features <= set(native._processor().splitlines())


@needs_compiler
def test_native_steps_refuse_float32_runs():
    """The C loop steps float64 runs: float32 ones are refused as the program is traced,
    not widened to float64 and back."""

    def narrowed(v):  # shapes only: nothing runs
        floating = np.issubdtype(v.dtype, np.floating)
        return jax.ShapeDtypeStruct(v.shape, np.float32 if floating else v.dtype)

    runs = jax.tree.map(narrowed, jax.eval_shape(lambda: _batch(8)))

    def steps(runs):
        return propagator.deferred_steps(*runs, 0.0, 10, kernel="native")

    with pytest.raises(ValueError, match="kernel 'native' steps float64 runs, not float32"):
        jax.eval_shape(steps, runs)


_MANY_LANES = """
import jax, numpy as np
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
from gdrelu import Params, WeightedData, simulate
rng = np.random.default_rng(0)
zeros = np.zeros((512, 8))
params = Params(rng.normal(0, 1, (512, 8)), zeros, rng.normal(0, 0.5, (512, 8)), zeros[:, 0])
x = rng.uniform(-1, 1, (512, 64))
data = WeightedData(x, np.abs(x), np.full((512, 64), 1 / 64))
params, data = jax.device_put((params, data))  # from numpy, it did not wait
kwargs = dict(stop_on=("crossed",), check_every=10, max_checks=1, kernel="auto")
simulate(params, data, np.full(512, 0.01), optimizer="momentum", **kwargs)
print("done")
"""


@pytest.mark.slow  # a fresh process compiles every program (12 s); the FFI design's regression
@needs_compiler
def test_two_devices_with_large_buffers_do_not_wait_on_each_other():
    """512 heavy-ball runs on two CPU devices, in a fresh process. Through
    `jax.pure_callback`, whose operands are first copied to a CPU device, this waited
    forever (the copy queued behind the program in the callback); through the FFI
    target, on each device's own buffers, it ends."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _MANY_LANES], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the native loop's callback waited for 120 s")
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
