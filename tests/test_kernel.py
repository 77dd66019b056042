"""The Pallas kernel of the propagator's steps (`gdrelu.kernel`), in interpret mode on the
CPU: the same numbers as the XLA loop, and a program that lowers for an NVIDIA GPU."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdrelu import engine, kernel, propagator
from gdrelu.fastpath import SideMoments


@functools.cache  # the tests share one batch of 128 runs (JAX arrays: immutable)
@functools.partial(jax.jit, static_argnums=(0, 1, 2))  # one compile, not one per operation
def _batch(runs, width=16, seed=0):
    """He-initialized runs on the paper's data with its step size, as the propagator's
    reference parameters, deferred state and side moments."""
    from gdrelu import theory
    from gdrelu.data import paper_data
    from gdrelu.fastpath import side_moments
    from gdrelu.init import he_init

    keys = jax.random.split(jax.random.key(seed), (runs, 2))
    params = jax.vmap(lambda k: he_init(width, key=k, dtype=jnp.float64))(keys[:, 0])
    # every other run gets 1-2 irregular neurons (b ≠ 0 at the start), tracked too
    irregular = np.zeros((runs, width))
    irregular[::2, 0], irregular[::4, 1] = 0.05, -0.03
    params = params._replace(b=params.b + irregular * params.a)
    data = jax.vmap(lambda k: paper_data(k, 0.1, width**2, jnp.float64))(keys[:, 1])
    slope0, regular = jax.vmap(propagator.regular_neurons)(params)
    state = propagator.deferred(params, slope0, regular)
    return params, state, jax.vmap(side_moments)(data), theory.paper_step_size(params, data)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_kernel_equals_the_xla_loop(alpha):
    """Interpret mode runs the kernel's own arithmetic with XLA on the CPU: after 1000
    GD steps every output of `deferred_steps` agrees with the XLA loop's to 1e-12
    relative (the same operations in the same order, fused differently) and the flags
    exactly; with 3 of 4 blocks stepping, the last block keeps Φ = I bit for bit."""
    params, state, moments, h = _batch(128)
    args = (params, state, moments, h, alpha, 1000)
    steps = jax.jit(  # one compile each, not one per eager operation
        propagator.deferred_steps,
        static_argnums=5,
        static_argnames=("block", "num_blocks", "kernel"),
    )
    kwargs = dict(block=32, num_blocks=3)
    xla = steps(*args, **kwargs)
    ours = steps(*args, kernel="interpret", **kwargs)
    for mine, theirs in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        if mine.dtype == bool or jnp.issubdtype(mine.dtype, jnp.integer):
            np.testing.assert_array_equal(mine, theirs)
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)
    pending, kink, exact = ours.state, ours.kink, ours.exact
    np.testing.assert_array_equal(pending.phi[96:], np.broadcast_to(np.eye(3), (32, 2, 3, 3)))
    assert not np.allclose(pending.phi[:96], state.phi[:96])
    assert np.all(kink[:96] > 0) and exact.sum() > 64
    assert state.tracked_real[:, 4:].sum() == 96 and state.fits.all()  # irregular ones


def _chunk_arrays(runs):
    """`_block_steps`' arrays (runs axis last) of a real batch, before its steps."""
    params, state, moments, h = _batch(runs)
    picked = (jnp.take_along_axis(v, state.tracked, 1) for v in params[:3])
    tracked = jnp.stack(list(picked), -1).transpose(2, 1, 0)
    carry = (state.phi.transpose(1, 2, 3, 0), params.c, tracked, h * 0, h < 0)
    fixed = (state.grams.transpose(1, 2, 3, 0), tracked[0] > 0, state.tracked_real.T,
             SideMoments(*(v.T for v in moments)), h)  # fmt: skip
    return carry, fixed


def test_kernel_rejects_runs_that_do_not_split_into_programs():
    # the first 48 runs of the batch of 128 (runs axis last): no draw of 48 runs to compile
    carry, fixed = jax.tree.map(lambda v: v[..., :48], _chunk_arrays(128))
    with pytest.raises(ValueError, match="48 runs do not split into programs of 32"):
        kernel.kernel_steps(carry, fixed, 0.0, 10, 48, interpret=True)


def test_kernel_lowers_to_triton_for_an_nvidia_gpu():
    """Without a GPU: the kernel lowers to a Triton custom call for CUDA in float64, for
    an abstract H100 (jax 0.11 asks for the target's kind; the PTX is compiled on the
    GPU, where scripts/device_check.sh runs it)."""
    from jax import export
    from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

    carry, fixed = _chunk_arrays(128)
    steps = jax.jit(lambda carry, fixed: kernel.kernel_steps(carry, fixed, 0.0, 1000, 128))
    shapes = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), (carry, fixed))
    unchecked = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    h100 = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=None, platform="gpu")
    with use_abstract_mesh(AbstractMesh((1,), ("runs",), abstract_device=h100)):
        exported = export.export(steps, platforms=["cuda"], disabled_checks=unchecked)(*shapes)
    assert "__gpu$xla.gpu.triton" in exported.mlir_module()


@pytest.mark.slow  # duplicated in kind by faster tests; runs with -m slow
def test_engine_with_the_kernel_reproduces_the_golden_runs(monkeypatch, mc_outcomes):
    """`simulate` with the kernel (interpret mode on the CPU, chosen by the environment)
    gives the stored Monte Carlo status and stop step of the reference code's runs."""
    from gdrelu import Params, WeightedData, simulate

    monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", "interpret")
    jax.clear_caches()  # the compact propagator chunk has the same shapes at every width
    calls = []
    steps = propagator.kernel_steps
    monkeypatch.setattr(
        propagator, "kernel_steps", lambda *a, **k: calls.append(k) or steps(*a, **k)
    )
    m = mc_outcomes
    runs = 64
    data = WeightedData(np.tile(m["x"], (runs, 1)), np.tile(m["y"], (runs, 1)), m["xw"][:runs])
    params = Params(m["a0"][:runs], m["b0"][:runs], m["w0"][:runs], m["c0"][:runs])
    kwargs = dict(check_every=int(m["check_every"]), max_checks=int(m["max_checks"]))
    result = simulate(params, data, m["lr"][:runs], **kwargs)
    assert calls and all(k["interpret"] for k in calls)  # the chunk traced the kernel
    stored = m["status"][:runs]
    np.testing.assert_array_equal(result.status, np.where(stored == "CROSSED", 1, 2))
    crossed = result.status == engine.Status.CROSSED
    np.testing.assert_array_equal(result.stop_step[crossed], m["stop_step"][:runs][crossed])


def test_kernel_choice_is_checked(monkeypatch):
    cpu = jax.devices("cpu")
    assert engine.blocking_for(cpu, 64, kernel="xla").kernel == "xla"
    assert engine.blocking_for(cpu, 64, kernel="interpret").kernel == "interpret"
    with pytest.raises(ValueError, match="'pallas' compiles with Triton for GPUs, not cpu"):
        engine.blocking_for(cpu, 64, kernel="pallas")
    monkeypatch.setenv("GDRELU_PROPAGATOR_KERNEL", "cuda")
    with pytest.raises(ValueError, match=r"\$GDRELU_PROPAGATOR_KERNEL.*not 'cuda'"):
        engine.blocking_for(cpu, 64)


def test_kink_max_keeps_nan_as_xla_does():
    """Triton's float max drops NaN; the kernel's must not (a NaN kink is a diverged run)."""
    kink = jnp.array([0.5, np.nan, 0.5, np.nan, 2.0])
    ratio = jnp.array([np.nan, 0.5, 1.0, np.nan, 1.0])
    np.testing.assert_array_equal(kernel._max(kink, ratio), jnp.maximum(kink, ratio))
