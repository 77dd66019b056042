"""The propagator's full-batch GD steps as one native loop on a CPU (kernel="native").

XLA's CPU loop of `propagator.deferred_steps` dispatches about 14 operations per GD step.
At 64 runs per block, half of the loop's time is that dispatch and the rest is the memory
traffic between its fusions (docs/performance.md, "The propagator's loop on a CPU").
`native_src/propagator_gd.c` does `kernel.lane_step`'s arithmetic in the same order, four
runs per vector, every step of a chunk in registers. Compiled with multiply-adds
contracted as XLA's CPU backend contracts them, its Φ_t, c and flags are the XLA loop's
bit for bit; the tracked neurons' values and the largest kink agree to 1e-14 relative
(tests/test_native.py). It does full-batch GD, as the Pallas kernel does (`kernel`); the
default stays "xla".

The C source is compiled on first use in a process with the system's C compiler ($CC,
else cc or gcc; GCC's vector extensions, so gcc or clang), into a temporary directory,
and called from the compiled program through `jax.pure_callback`. Without a compiler,
kernel="native" is refused with the reason; nothing falls back.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np

SOURCE = Path(__file__).parent / "native_src" / "propagator_gd.c"
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC")
LANES = 4  # runs per vector of the C loop
_build: dict[str, tempfile.TemporaryDirectory] = {}


class NativeUnavailable(ValueError):
    """kernel="native" cannot run here: no C compiler, or it failed on the source (a
    ValueError, as every refused kernel choice: the CLI exits with code 2)."""


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled loop, built once per process; NativeUnavailable with the reason."""
    if not SOURCE.is_file():  # a broken install, not a missing compiler: no skip, no refusal
        raise FileNotFoundError(f"gdrelu's C source is missing: {SOURCE}")
    name = os.environ.get("CC")
    compiler = shutil.which(name) if name else shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise NativeUnavailable(
            "kernel 'native' compiles a C loop on first use and found no C compiler "
            f"({'$CC=' + repr(name) if name else 'cc, gcc'}); install gcc or clang, or use "
            "kernel 'xla'"
        )
    directory = _build.setdefault("dir", tempfile.TemporaryDirectory(prefix="gdrelu-native-"))
    target = Path(directory.name) / "propagator_gd.so"
    done = subprocess.run(
        [compiler, *FLAGS, str(SOURCE), "-o", str(target)], capture_output=True, text=True
    )
    if done.returncode:
        raise NativeUnavailable(f"{compiler} could not compile {SOURCE.name}:\n{done.stderr}")
    return ctypes.CDLL(str(target))


def host_arrays(phi, c, tracked, kink, moved, grams, plus, real, moments, h, active):
    """The C loop's (component, lanes) float64 arrays of the first `active` runs (runs axis
    last, as `native_steps`), padded to a multiple of `LANES` with the last run repeated:
    (carry (phi, c, tracked, kink, moved), fixed (grams, plus, real, moments, h))."""
    runs = c.shape[-1]
    padded = -(-active // LANES) * LANES
    lanes = np.minimum(np.arange(padded), max(active - 1, 0))

    def columns(v):
        return np.ascontiguousarray(np.asarray(v, np.float64).reshape(-1, runs)[:, lanes])

    neurons = np.swapaxes(tracked, 0, 1)  # (3, T, runs) -> neuron k's (a, b, w) at 3k
    carry = [columns(v) for v in (phi, c, neurons, kink, moved)]
    return carry, [columns(v) for v in (grams, plus, real, np.stack(moments), h)]


def run_loop(carry, fixed, alpha, steps: int) -> None:
    """`gd_steps` on `host_arrays`' arrays: `carry` is updated in place."""
    lanes = carry[1].shape[-1]
    if lanes:
        pointers = [v.ctypes.data_as(ctypes.c_void_p) for v in (*carry, *fixed)]
        library().gd_steps(
            ctypes.c_long(lanes), ctypes.c_long(steps), ctypes.c_double(float(alpha)), *pointers
        )


def _host_steps(phi, c, tracked, kink, moved, grams, plus, real, moments, h, alpha, steps, active):
    """The C loop on the first `active` runs, on the host: the new (phi, c, tracked, kink,
    moved), the other runs as they were."""
    runs, active = c.shape[-1], int(active)
    start = (phi, c, tracked, kink, moved)
    carry, fixed = host_arrays(*start, grams, plus, real, moments, h, active)
    run_loop(carry, fixed, alpha, steps)
    stepped = []
    for new, old in zip(carry, (phi, c, np.swapaxes(tracked, 0, 1), kink, moved), strict=True):
        merged = np.array(old, copy=True).reshape(-1, runs)
        merged[:, :active] = new[:, :active].astype(merged.dtype)
        stepped.append(merged.reshape(np.shape(old)))
    phi, c, tracked, kink, moved = stepped
    return phi, c, np.swapaxes(tracked, 0, 1), kink, moved


def native_steps(carry, fixed, alpha, num_steps: int, active):
    """`propagator._block_steps` for a whole batch in the C loop: carry = (phi, c, tracked,
    kink, moved), fixed = (grams, tracked_plus, real, moments, h), runs axis last (as
    `kernel.kernel_steps`); only the first `active` runs (a traced count) step. float64."""
    library()  # built now: a missing compiler fails here, with its reason, not in a callback
    if carry[1].dtype != np.float64:
        raise ValueError(f"kernel 'native' steps float64 runs, not {carry[1].dtype}")
    grams, plus, real, moments, h = fixed
    shapes = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in carry]

    def host(phi, c, tracked, kink, moved, grams, plus, real, *rest):
        *moments, h, active, alpha = rest
        start = (phi, c, tracked, kink, moved)
        return _host_steps(*start, grams, plus, real, moments, h, alpha, num_steps, active)

    operands = (*carry, grams, plus, real, *moments, h, active, alpha)
    return tuple(jax.pure_callback(host, shapes, *operands))
