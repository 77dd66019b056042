"""The paper code's Monte Carlo protocols (`gdrelu.protocols`) against direct loops.

Each protocol is run through `run_experiment` on a few runs, and the same runs (the same
initial networks, data, validation weights and minibatch keys) are trained again by a
plain loop over steps written here with numpy: the SGD, Adam and small-step protocols'
stopping rules (a crossing, then early stopping on the validation weights with min_delta
1e-8 and patience 10 checks) must give the same status at the same step. The check
cadence is shortened (the rules, not the cadence, are under test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import numpy_gradient

from gdrelu import ExperimentSpec, Status, run_experiment, theory
from gdrelu.cells import Cell, initial_runs, noise_keys
from gdrelu.optim import batch_weights, get_optimizer
from gdrelu.protocols import PROTOCOLS, protocol

WIDTH, RUNS, EVERY, CHECKS = 8, 4, 20, 30
MIN_DELTA, PATIENCE = 1e-8, 10


def _loss(theta, x, y, v):
    a, b, w, c = theta
    r = c + np.maximum(x[:, None] * a + b, 0.0) @ w - y
    return 0.5 * np.sum(v * r * r)


def _direct(name, theta, x, y, p, v, h, key):
    """(status, stop step) of one run trained step by step under protocol `name`."""
    spec = protocol(name)
    optimizer = get_optimizer(spec["optimizer"], sampler=spec.get("sampler"))
    weights = jax.jit(lambda t: batch_weights(optimizer, jnp.asarray(p), key, t))
    first = [np.zeros_like(t) for t in theta]
    second = [np.zeros_like(t) for t in theta]
    max_kink, best, stale, step = 0.0, np.inf, 0, 0
    for _ in range(CHECKS):
        for _ in range(EVERY):
            q = np.asarray(weights(step)) if optimizer.stochastic else p
            grads = numpy_gradient(theta, x, y, q)
            step += 1
            if spec["optimizer"] == "adam":
                first = [0.9 * m + 0.1 * g for m, g in zip(first, grads, strict=True)]
                second = [0.999 * s + 0.001 * g * g for s, g in zip(second, grads, strict=True)]
                c1, c2 = 1 - 0.9**step, 1 - 0.999**step
                grads = [
                    (m / c1) / (np.sqrt(s / c2) + 1e-8) for m, s in zip(first, second, strict=True)
                ]
            theta = [t - h * g for t, g in zip(theta, grads, strict=True)]
            max_kink = max(max_kink, np.max(np.abs(theta[1] / theta[0])))
        if not all(np.all(np.isfinite(t)) for t in theta):
            return Status.DIVERGED, step
        if max_kink >= np.min(np.abs(x)):
            return Status.CROSSED, step
        val = _loss(theta, x, y, v)
        improved = val < best - MIN_DELTA
        best, stale = (val, 0) if improved else (best, stale + 1)
        if stale >= PATIENCE:
            return Status.EARLY_STOPPED, step
    return Status.UNFINISHED, step


@pytest.mark.parametrize("name", ["sgd", "adam", "small-step"])
def test_protocol_stops_as_a_direct_loop(name):
    fields = {**protocol(name), "check_every": EVERY, "max_checks": CHECKS}
    spec = ExperimentSpec(widths=(WIDTH,), deltas=(0.1,), runs=RUNS, seed=3, **fields)
    (cell_result,) = run_experiment(spec)
    cell, indices = Cell(WIDTH, 0.1, spec), np.arange(RUNS)
    params, data, valid = jax.device_get(initial_runs(cell, indices))
    keys = jax.random.wrap_key_data(noise_keys(cell, indices))
    steps = np.asarray(cell_result.step_size)
    if spec.step_size == "paper":
        np.testing.assert_allclose(steps, theory.paper_step_size(params, data), rtol=1e-12)
    else:
        np.testing.assert_allclose(steps, 0.01 / WIDTH, rtol=1e-15)
    for r in range(RUNS):
        theta = [np.asarray(leaf[r]) for leaf in params]
        status, step = _direct(name, theta, *(v[r] for v in data), valid[r], steps[r], keys[r])
        assert cell_result.result.status[r] == status, (r, cell_result.result.status[r], status)
        assert cell_result.result.stop_step[r] == step


def test_protocols_name_the_paper_codes_settings():
    """What docs/fidelity.md says the paper's code did, field by field."""
    assert PROTOCOLS["gd"]["check_every"] == 1000 and PROTOCOLS["gd"]["max_checks"] == 1000
    for name in ("sgd", "adam"):
        assert protocol(name)["sampler"] == "multinomial" and protocol(name)["batch_size"] == 16
        assert protocol(name)["early_stopping"] and protocol(name)["stop_on"] == ("crossed",)
        assert protocol(name)["step_size"] == "paper"
    assert (
        protocol("small-step")["step_size"] == "small" and protocol("small-step")["early_stopping"]
    )
    swapped = ExperimentSpec(**protocol("swapped"), widths=(WIDTH,), runs=2)
    assert (swapped.init, swapped.check_every, swapped.max_checks) == ("swapped", 100, 10_000)
    with pytest.raises(ValueError, match="protocol"):
        protocol("lbfgs")
