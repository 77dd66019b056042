"""The paper code's Monte Carlo protocols (`gdrelu.protocols`) against direct loops.

Each protocol is run through `run_experiment` on a few runs, and the same runs (the same
initial networks, data, validation weights and minibatch keys) are trained again by a
plain loop over steps written here with numpy: the SGD, Adam and small-step protocols'
stopping rules (a crossing, then early stopping on the validation weights with min_delta
1e-8 and patience 10 checks) must give the same status at the same step. The check
cadence is shortened (the rules, not the cadence, are under test). The swapped-variances
protocol keeps its cadence (checks every 100 steps: that is its rule) with fewer checks,
against a loop that stops on a crossing, degeneracy or the certificate.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import numpy_gradient

from gdrelu import ExperimentSpec, Params, Status, WeightedData, run_experiment, theory
from gdrelu.analysis import stuck_runs
from gdrelu.cells import Cell, initial_runs, noise_keys
from gdrelu.optim import batch_weights, get_optimizer
from gdrelu.protocols import PROTOCOLS, protocol

WIDTH, RUNS, EVERY, CHECKS = 8, 4, 20, 30
MIN_DELTA, PATIENCE = 1e-8, 10


def _validation_loss(theta, x, y, v):
    """The paper code's validation loss: Σ_j v_j r_j², without the ½ of the training loss."""
    a, b, w, c = theta
    r = c + np.maximum(x[:, None] * a + b, 0.0) @ w - y
    return np.sum(v * r * r)


def _direct(name, theta, x, y, p, v, h, key):
    """(status, stop step, final (a, b, w, c)) of one run trained step by step under
    protocol `name`."""
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
            return Status.DIVERGED, step, theta
        if max_kink >= np.min(np.abs(x)):
            return Status.CROSSED, step, theta
        val = _validation_loss(theta, x, y, v)
        improved = val < best - MIN_DELTA
        best, stale = (val, 0) if improved else (best, stale + 1)
        if stale >= PATIENCE:
            return Status.EARLY_STOPPED, step, theta
    return Status.UNFINISHED, step, theta


@pytest.mark.parametrize(
    ("name", "seed", "delta"), [("sgd", 3, 0.1), ("adam", 2, 0.5), ("small-step", 3, 0.1)]
)
def test_protocol_stops_as_a_direct_loop(name, seed, delta):
    """Each case has runs that cross and runs that early-stop (Adam's four at seed 3, Δ = 0.1
    all cross, so its case is seed 2, Δ = 0.5)."""
    fields = {**protocol(name), "check_every": EVERY, "max_checks": CHECKS}
    spec = ExperimentSpec(widths=(WIDTH,), deltas=(delta,), runs=RUNS, seed=seed, **fields)
    (cell_result,) = run_experiment(spec)
    cell, indices = Cell(WIDTH, delta, spec), np.arange(RUNS)
    params, data, valid = jax.device_get(initial_runs(cell, indices))
    keys = jax.random.wrap_key_data(noise_keys(cell, indices))
    steps = np.asarray(cell_result.step_size)
    if spec.step_size == "paper":
        np.testing.assert_allclose(steps, theory.paper_step_size(params, data), rtol=1e-12)
    else:
        np.testing.assert_allclose(steps, 0.01 / WIDTH, rtol=1e-15)
    for r in range(RUNS):
        theta = [np.asarray(leaf[r]) for leaf in params]
        status, step, final = _direct(name, theta, *(v[r] for v in data), valid[r], steps[r],
                                      keys[r])  # fmt: skip
        assert cell_result.result.status[r] == status, (r, cell_result.result.status[r], status)
        assert cell_result.result.stop_step[r] == step
        for got, want in zip(cell_result.result.params, final, strict=True):  # the trajectory
            np.testing.assert_allclose(np.asarray(got)[r], want, rtol=1e-9, atol=1e-12)
    # the paper's protocols stop only on crossing or early stopping, so P(stuck) counts
    # the runs whose final network is still linear (the final rule), never certificates
    # (under the certificate rule every such cell would report P(stuck) = 0), and no run
    # the crossing rule halted, though its last network may be linear again
    result = cell_result.result
    halted = np.isin(result.status, (Status.DIVERGED, Status.CROSSED))
    final_stuck = ~result.escaped & ~halted
    assert (~result.escaped).any() and not (result.status == Status.STUCK).any()
    assert final_stuck.any()
    assert {Status.CROSSED, Status.EARLY_STOPPED} <= set(result.status.tolist())  # both rules act
    np.testing.assert_array_equal(stuck_runs(cell_result), final_stuck)


def test_min_delta_is_on_the_paper_codes_validation_loss():
    """The paper's code counts an improvement of its Σ v r² by more than 1e-8; a run's
    reported validation loss is ½ Σ v r², so 0.75e-8 there (1.5e-8 in the paper's code's)
    counts and 0.25e-8 does not."""
    import inspect

    from gdrelu import simulate
    from gdrelu.engine.checks import _validated
    from gdrelu.engine.state import RunInfo

    default = inspect.signature(simulate).parameters["min_delta"].default
    assert default == MIN_DELTA
    info = RunInfo(*(jnp.zeros(()),) * 3, jnp.float64(0.5), jnp.int32(3), *(jnp.zeros(()),) * 2)
    after = [_validated(info, 7, 0.5 - d, 0.0, default) for d in (0.75e-8, 0.25e-8)]
    assert [int(i.stale_checks) for i in after] == [0, 4]
    assert float(after[0].best_val) == 0.5 - 0.75e-8 and float(after[1].best_val) == 0.5


def test_protocols_name_the_paper_codes_settings():
    """What docs/fidelity.md says the paper's code did, field by field."""
    assert PROTOCOLS["gd"]["check_every"] == 1000 and PROTOCOLS["gd"]["max_checks"] == 1000
    assert (protocol("gd")["optimizer"], protocol("gd")["step_size"]) == ("gd", "paper")
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


def test_the_settings_a_report_prints_are_those_the_runs_got():
    """The reproduction's settings line printed the spec's open fields (sampler None,
    stop_on None, stuck_rule "auto"); `applied` fills in what the engine does with them,
    as docs/theory.md and docs/fidelity.md give it: GD in the paper's setting trains full
    batch, stops on all three rules and counts certified runs; the star's 2-D GD has no
    proof; SGD draws multinomial minibatches and reads the final network."""

    def applied(name, **more):
        spec = ExperimentSpec(**{**protocol(name), "widths": (WIDTH,), "runs": 2, **more})
        return {k: spec.applied()[k] for k in ("sampler", "stop_on", "stuck_rule")}

    assert applied("gd") == {"sampler": "full", "stop_on": ("crossed", "degenerate", "stuck"),
                             "stuck_rule": "certificate"}  # fmt: skip
    assert applied("gd", data="star", step_size="param-norm") == {
        "sampler": "full", "stop_on": (), "stuck_rule": "final"}  # fmt: skip
    assert applied("sgd") == {"sampler": "multinomial", "stop_on": ("crossed",),
                              "stuck_rule": "final"}  # fmt: skip
    spec = ExperimentSpec(**protocol("sgd"), widths=(WIDTH,), runs=2)
    assert spec.applied() == {**spec.to_dict(), "stuck_rule": "final"}  # the rest as given


def test_a_protocol_is_a_fresh_dict():
    """`protocol` returns a copy: a caller that fills in its own fields (widths, max_checks)
    leaves the protocol as docs/fidelity.md gives it for the next caller."""
    fields = protocol("sgd")
    fields.update(max_checks=3, batch_size=4, widths=(8,))
    assert protocol("sgd")["batch_size"] == 16 and "max_checks" not in protocol("sgd")
    assert "widths" not in PROTOCOLS["sgd"]
    with pytest.raises(TypeError):  # nor can a caller change the table in place
        PROTOCOLS["sgd"]["batch_size"] = 4


SWAPPED_WIDTHS, SWAPPED_RUNS, SWAPPED_SEED, SWAPPED_STEPS = (3, 4), 12, 1, 4000


def _direct_swapped(theta, x, y, p, h, every, certify=True):
    """(status, stop step) of one run of GD trained step by step with checks every `every`
    steps up to SWAPPED_STEPS: diverged, crossed (max |b_i/a_i| ≥ min |x_j| after any step),
    a-degenerate (all a_i of one sign), x-degenerate (at most one point of positive weight
    on a side), stuck (the certificate, if `certify`), in this order (docs/theory.md)."""
    data = WeightedData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(p))
    positive = p > 0
    x_degenerate = min(np.sum(positive & (x > 0)), np.sum(positive & (x < 0))) <= 1
    max_kink, step = 0.0, 0
    while step < SWAPPED_STEPS:
        for _ in range(every):
            grads = numpy_gradient(theta, x, y, p)
            theta = [t - h * g for t, g in zip(theta, grads, strict=True)]
            max_kink = max(max_kink, np.max(np.abs(theta[1] / theta[0])))
            step += 1
        if not all(np.all(np.isfinite(t)) for t in theta):
            return Status.DIVERGED, step
        if max_kink >= np.min(np.abs(x)):
            return Status.CROSSED, step
        if np.all(theta[0] > 0) or np.all(theta[0] < 0):
            return Status.A_DEGENERATE, step
        if x_degenerate:
            return Status.X_DEGENERATE, step
        if certify and _certified(Params(*map(jnp.asarray, theta)), data, h):
            return Status.STUCK, step
    return Status.UNFINISHED, step


@jax.jit
def _certified(params, data, h):
    return theory.provably_stuck(params, data, h)


def test_swapped_protocol_stops_as_a_direct_loop():
    """The swapped protocol's runs (drawn by the swapped init, b = c = 0; checks every
    100 steps; crossed, degenerate and stuck stop a run) against a direct loop: the same
    statuses at the same steps. The same loop with a wrong rule (the GD protocol's cadence
    of 1000 steps, or no certificate) disagrees, so the comparison can fail. The draws'
    swapped variances: test_experiment.py::test_init_variances, at 5 standard errors."""
    fields = protocol("swapped")
    checks = SWAPPED_STEPS // fields["check_every"]
    spec = ExperimentSpec(
        widths=SWAPPED_WIDTHS, deltas=(0.1,), runs=SWAPPED_RUNS, seed=SWAPPED_SEED,
        **{**fields, "max_checks": checks},
    )  # fmt: skip
    engine_runs, direct, runs = [], [], []
    for cell_result in run_experiment(spec):
        cell, indices = cell_result.cell, np.arange(SWAPPED_RUNS)
        assert cell.spec.init == "swapped"  # initial_runs' draws: a ~ N(0, 2/n), w ~ N(0, 2)
        params, data, _ = jax.device_get(initial_runs(cell, indices))
        assert not np.any(params.b) and not np.any(params.c)
        steps = np.asarray(cell_result.step_size)
        np.testing.assert_allclose(steps, theory.paper_step_size(params, data), rtol=1e-12)
        for r in range(SWAPPED_RUNS):
            theta = [np.asarray(leaf[r]) for leaf in params]
            run = (theta, *(v[r] for v in data), steps[r])
            engine_runs.append((cell_result.result.status[r], cell_result.result.stop_step[r]))
            direct.append(_direct_swapped(*run, every=100))
            runs.append(run)
    assert engine_runs == direct
    statuses = {status for status, _ in direct}
    assert {Status.CROSSED, Status.STUCK, Status.UNFINISHED} <= statuses  # the rules all act
    assert any(step % 1000 for _, step in direct)  # runs stop between multiples of 1000
    for wrong in ({"every": 1000}, {"every": 100, "certify": False}):  # up to a difference
        assert any(_direct_swapped(*run, **wrong) != d for run, d in zip(runs, direct, strict=True))
