"""What counts as a number, or as one of gdrelu's NamedTuples, in a setting: the
predicates every input check shares."""

from __future__ import annotations

import numpy as np


def is_integer(value) -> bool:
    """Whether `value` is a Python or numpy integer (a bool is not)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether `value` is a Python or numpy real number, integers included (a bool is not)."""
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def check_kind(name: str, value, kind) -> None:
    """Refuse a plain tuple, list or dict where the NamedTuple `kind` (`Params`,
    `WeightedData`) goes: its fields are read by name."""
    if not isinstance(value, kind):
        fields = ", ".join(kind._fields)
        raise ValueError(
            f"{name}: a gdrelu.{kind.__name__}({fields}), not {type(value).__name__}; "
            f"build one with gdrelu.{kind.__name__}(*values)"
        )
