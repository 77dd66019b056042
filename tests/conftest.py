"""Shared fixtures: float64 everywhere, and the golden vectors of the paper's reference code."""

import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 2)  # the engine shards runs over devices: test that

DATA = Path(__file__).parent / "data"
# `gdrelu run` keeps compiled programs in ~/.cache by default: not from the tests
os.environ["GDRELU_CACHE_DIR"] = tempfile.mkdtemp(prefix="gdrelu-test-cache-")


def golden_case(golden, i):
    """The fields of trajectory case i as a dict without the `case{i}_` prefix."""
    prefix = f"case{i}_"
    return {k[len(prefix) :]: golden[k] for k in golden.files if k.startswith(prefix)}


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
