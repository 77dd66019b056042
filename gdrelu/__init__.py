"""gdrelu: Monte Carlo studies of how gradient descent fails on two-layer ReLU networks.

Holzmüller & Steinwart (JMLR 2022) proved that two-layer (Leaky)ReLU networks with He
initialization and zero biases, trained by GD on least squares, usually cannot move
their kinks past the data and end in a per-side linear regression. gdrelu trains many
such networks at once (jit + vmap + lax.scan) and estimates how often.

The names below are imported on first use (PEP 562), so that `import gdrelu.cli` does
not start JAX: the `gdrelu` command then handles Ctrl-C from its first instant.
"""

import importlib as _importlib
import pkgutil as _pkgutil

_HOMES = {
    "Cell": "cells",
    "run_key": "cells",
    "WeightedData": "data",
    "multinomial_weights": "data",
    "paper_data": "data",
    "six_points": "data",
    "gd_step": "engine",
    "simulate": "engine",
    "he_init": "init",
    "swapped_init": "init",
    "Params": "model",
    "activation": "model",
    "activation_pattern": "model",
    "forward": "model",
    "kinks": "model",
    "max_abs_kink": "model",
    "weighted_loss": "model",
    "SimulationResult": "outcome",
    "Status": "outcome",
    "run_experiment": "runner",
    "ExperimentSpec": "spec",
    "SpecError": "spec",
    "clopper_pearson": "stats",
    "failure_probability": "stats",
    "paired_comparison": "stats",
}

__all__ = sorted([*_HOMES, "theory"])


def __getattr__(name: str):
    """An exported name from its module, or a submodule (`gdrelu.theory`), on first use."""
    if name in _HOMES:
        value = getattr(_importlib.import_module(f"gdrelu.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    if name.isidentifier() and not name.startswith("_"):
        try:
            return _importlib.import_module(f"gdrelu.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"gdrelu.{name}":
                raise
    raise AttributeError(f"module 'gdrelu' has no attribute {name!r}")


def __dir__() -> list[str]:
    submodules = (module.name for module in _pkgutil.iter_modules(__path__))
    return sorted({*globals(), *__all__, *submodules})
