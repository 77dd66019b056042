"""The propagator's GD steps as one C loop (`gdrelu.native`, kernel="native"): the XLA
loop's numbers bit for bit, in the engine too, and a clear refusal where it cannot run."""

import jax
import numpy as np
import pytest
from test_kernel import _batch

from gdrelu import Params, WeightedData, engine, native, propagator, simulate

try:
    native.library()
    NO_COMPILER = None
except native.NativeUnavailable as error:
    NO_COMPILER = str(error)
needs_compiler = pytest.mark.skipif(NO_COMPILER is not None, reason=f"{NO_COMPILER}")


def _assert_same_steps(ours: propagator.Stepped, xla: propagator.Stepped):
    """Φ_t, Σ_t, c and the flags bit for bit; the tracked neurons and kinks to 1e-14."""
    exact = (ours.c, ours.c_velocity, ours.state, ours.exact, ours.end.grams, ours.end.real)
    same = (xla.c, xla.c_velocity, xla.state, xla.exact, xla.end.grams, xla.end.real)
    for mine, theirs in zip(jax.tree.leaves(exact), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(ours.end.witnesses, xla.end.witnesses, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(ours.kink, xla.kink, rtol=1e-14, atol=1e-300)


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
    ours = steps(*args, block=32, num_blocks=3, kernel="native")
    _assert_same_steps(ours, xla)
    np.testing.assert_array_equal(ours.state.phi[96:], np.broadcast_to(np.eye(3), (32, 2, 3, 3)))
    assert not np.allclose(ours.state.phi[:96], state.phi[:96])


@needs_compiler
def test_a_count_that_is_not_a_multiple_of_four_steps_those_runs_only():
    """The C loop takes four runs at a time: 10 runs stepping of 12 pads the last group
    with a copy of run 9, and runs 10 and 11 keep their carry."""
    params, state, moments, h = jax.tree.map(lambda v: v[:12], _batch(128))
    steps = jax.jit(
        propagator.deferred_steps, static_argnums=5, static_argnames=("block", "kernel")
    )
    args = (params, state, moments, h, 0.0, 200)
    xla = steps(*args, block=2, num_blocks=5)
    ours = steps(*args, block=2, num_blocks=5, kernel="native")
    _assert_same_steps(ours, xla)
    np.testing.assert_array_equal(ours.state.phi[10:], np.broadcast_to(np.eye(3), (2, 2, 3, 3)))


@needs_compiler
def test_engine_with_the_native_loop_equals_the_xla_loop(monkeypatch, mc_outcomes):
    """`simulate` with kernel="native" (chosen by the environment) gives the XLA loop's
    result on the reference code's Monte Carlo runs, every field bit for bit, and so their
    stored statuses."""
    m = mc_outcomes
    runs = 64
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"][:runs])
    params = Params(m["a0"][:runs], m["b0"][:runs], m["w0"][:runs], m["c0"][:runs])
    kwargs = dict(check_every=int(m["check_every"]), max_checks=int(m["max_checks"]))
    xla = simulate(params, data, m["lr"][:runs], **kwargs)
    calls = []
    steps = native.native_steps
    monkeypatch.setattr(native, "native_steps", lambda *a: calls.append(a) or steps(*a))
    monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", "native")
    ours = simulate(params, data, m["lr"][:runs], **kwargs)
    assert calls  # the chunk traced the C loop
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
def test_native_steps_gd_only():
    params, state, moments, h = _batch(128)
    with pytest.raises(ValueError, match="kernel 'native' does full-batch GD only, not 'momentum'"):
        propagator.deferred_steps(
            params,
            state,
            moments,
            h,
            0.0,
            10,
            optimizer=propagator.get_optimizer("momentum"),
            kernel="native",
        )
