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


def has_real_dtype(array) -> bool:
    """Whether an array's dtype is a real number's, floating or integer (bfloat16 too; a
    bool or complex one is not)."""
    import jax.numpy as jnp

    dtype = np.asarray(array).dtype
    return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))


def first_repeated(values):
    """The first of `values` equal to one before it (0 and -0.0 are equal), else None."""
    return next((v for i, v in enumerate(values) if v in values[:i]), None)


def check_kind(name: str, value, kind) -> None:
    """Refuse a plain tuple, list or dict where the NamedTuple `kind` (`Params`,
    `WeightedData`) goes: its fields are read by name."""
    if not isinstance(value, kind):
        fields = ", ".join(kind._fields)
        raise ValueError(
            f"{name}: a gdrelu.{kind.__name__}({fields}), not {type(value).__name__}; "
            f"build one with gdrelu.{kind.__name__}(*values)"
        )


def check_key(name: str, key) -> None:
    """Refuse what is no single JAX PRNG key (a number, None, a batch of keys), naming
    `name`: JAX's own errors do not say which argument."""
    import jax

    typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = not typed and isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32
    if not (typed or raw):
        raise ValueError(f"{name}: a JAX PRNG key, such as jax.random.key(0), not {key!r}")
    if np.ndim(key) != (0 if typed else 1):
        raise ValueError(f"{name}: one key, not a batch of shape {np.shape(key)} (jax.vmap)")
