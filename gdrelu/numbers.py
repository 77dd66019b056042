"""What counts as a number in a setting: the predicates every input check shares."""

from __future__ import annotations

import numpy as np


def is_integer(value) -> bool:
    """Whether `value` is a Python or numpy integer (a bool is not)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether `value` is a Python or numpy real number, integers included (a bool is not)."""
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)
