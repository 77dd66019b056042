"""The Monte Carlo protocols of the paper's own code, by name (docs/fidelity.md).

Each is a set of `ExperimentSpec` fields laid over the user's: `gdrelu run --protocol
NAME` or `ExperimentSpec(**{**protocol("sgd"), "widths": (16,)})`.

- "gd": the figure: full-batch GD at the paper's step size, stopping on a crossing or the
  certificate, checks every 1000 steps, at most 1000 checks.
- "sgd": B = 16 multinomial draws per step (counts/B as the loss weights); stopping on a
  crossing or early stopping (validation weights drawn like the training weights,
  N = n²; min_delta 1e-8, patience 10 checks): the certificate is not a proof for SGD.
- "adam": the same minibatches and stopping; learning rate = the paper's GD step size;
  β = (0.9, 0.999), ε = 1e-8.
- "small-step": GD at h = 0.01/n with crossing and early stopping; without the
  certificate, P(stuck) reads the final network.
- "swapped": a ~ N(0, 2/n), w ~ N(0, 2); checks every 100 steps, at most 10 000.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

_EARLY = {"early_stopping": True, "stop_on": ("crossed",)}
_MINIBATCHES = {"sampler": "multinomial", "batch_size": 16}

_FIELDS = {
    "gd": {"optimizer": "gd", "step_size": "paper", "check_every": 1000, "max_checks": 1000},
    "sgd": {"optimizer": "sgd", "step_size": "paper", **_MINIBATCHES, **_EARLY},
    "adam": {"optimizer": "adam", "step_size": "paper", **_MINIBATCHES, **_EARLY},
    "small-step": {"optimizer": "gd", "step_size": "small", "stuck_rule": "final", **_EARLY},
    "swapped": {"optimizer": "gd", "init": "swapped", "check_every": 100, "max_checks": 10_000},
}
PROTOCOLS = MappingProxyType({name: MappingProxyType(f) for name, f in _FIELDS.items()})


def protocol(name: str) -> dict[str, Any]:
    """The spec fields of protocol `name` (a fresh dict)."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: {name!r} is not one of {', '.join(PROTOCOLS)}")
    return dict(PROTOCOLS[name])
