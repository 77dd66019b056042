"""The propagator's steps (GD, heavy ball, SGD) as one native loop on a CPU
(kernel="native", the default on CPUs with a C compiler: `engine.propagator_kernel`).

XLA's CPU loop of `propagator.deferred_steps` dispatches about 14 operations per GD step.
At 64 runs per block, half of the loop's time is that dispatch and the rest is the memory
traffic between its fusions (docs/performance-log.md, "The propagator's loop on a CPU").
`native_src/propagator_gd.c` does `propagator._block_steps`' arithmetic in the same order,
eight runs per vector, every step of a chunk in registers, for full batches and for the
multinomial sampler's minibatches (the same threefry words as `optim.multinomial_words`).
Compiled with multiply-adds contracted as XLA's CPU backend contracts them, its Φ_t, c
and flags are the XLA loop's bit for bit; the tracked neurons' values and the largest
kink agree to 1e-14 relative (tests/test_native.py).

Each C source is compiled on first use in a process with the system's C compiler ($CC,
else cc or gcc; GCC's vector extensions, so gcc or clang), as a library of its own (this
loop's, `library`; the general path's, `general_library`), kept in gdrelu's compilation
cache for later processes on the same CPU (`cached`; not while that cache is off), and
registered with XLA as an FFI target (`registered`, `general_registered`): the compiled
program calls it by name on its own buffers, so JAX keeps the program in its compilation
cache (it keeps none with a Python callback), and no operand is copied between devices
(`jax.pure_callback`'s copy to CPU device 0 could wait forever under several CPU
devices). Without a compiler, kernel="native" is refused with the reason, and "auto"
warns and takes XLA's loop.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gdrelu.atomic import write_bytes

SOURCE = Path(__file__).parent / "native_src" / "propagator_gd.c"
GENERAL_SOURCE = SOURCE.with_name("general.c")  # `native_general`'s loop
HEADERS = (SOURCE.with_name("lanes.h"), SOURCE.with_name("ffi.h"))
FLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=fast",
    "-fno-math-errno",  # square roots as vector instructions, not calls that may set errno
    "-shared",
    "-fPIC",
    "-DGDRELU_XLA_FFI",
)
TARGET = "gdrelu_propagator_steps"  # the C loop's name as an XLA FFI target
GENERAL_TARGET = "gdrelu_general_steps"  # the general path's loop (`native_general`)
LANES = 8  # runs per vector of the C loop (its LANES)
TRACKED = 6  # tracked neurons per run (`propagator.tracked_neurons`)


class NativeUnavailable(ValueError):
    """kernel="native" cannot run here: no C compiler, or it failed on the source (a
    ValueError, as every refused kernel choice: the CLI exits with code 2)."""


@functools.cache
def library() -> ctypes.CDLL:
    """The propagator's loop, built once per process (or loaded from gdrelu's cache,
    `cached`); NativeUnavailable with the reason."""
    return _built(SOURCE, "propagator")


@functools.cache
def general_library() -> ctypes.CDLL:
    """The general path's loop (`native_general`), as `library`. A library of its own: its
    twelve specialized loops take three times as long to compile as the propagator's, which
    a GD run (the propagator's loop alone) then never waits for."""
    return _built(GENERAL_SOURCE, "general")


def c_compiler() -> str | None:
    """The C compiler the loops are built with: $CC where set (None if it is not found),
    else cc or gcc on the path; None where there is none."""
    name = os.environ.get("CC")
    return shutil.which(name) if name else shutil.which("cc") or shutil.which("gcc")


def _built(source: Path, library_name: str) -> ctypes.CDLL:
    """`source` compiled as the shared library `library_name` with the system's C compiler, or
    loaded from gdrelu's cache; NativeUnavailable with the reason."""
    for path in (source, *HEADERS):  # a broken install, not a missing compiler: no skip
        if not path.is_file():
            raise FileNotFoundError(f"gdrelu's C source is missing: {path}")
    name, compiler = os.environ.get("CC"), c_compiler()
    if compiler is None:
        raise NativeUnavailable(
            "kernel 'native' compiles a C loop on first use and found no C compiler "
            f"({'$CC=' + repr(name) if name else 'cc, gcc'}); install gcc or clang, or use "
            "kernel 'xla'"
        )
    target = cached(compiler, source, library_name)
    if target is not None and target.is_file():
        try:
            return ctypes.CDLL(str(target))
        except OSError:
            target.unlink(missing_ok=True)  # a broken entry: build it again
    built = _build_directory() / f"{library_name}.so"
    done = subprocess.run(
        [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", str(built)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise NativeUnavailable(f"{compiler} could not compile {source.name}:\n{done.stderr}")
    if target is not None:
        try:  # another process may write the same entry: each renames its own whole file
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(target, built.read_bytes())
        except OSError:
            pass  # a read-only or full cache costs the next process a compile, nothing else
    try:
        return ctypes.CDLL(str(built))
    except OSError as error:  # e.g. a temporary directory mounted noexec
        raise NativeUnavailable(f"the compiled C loop could not be loaded: {error}") from None


@functools.cache
def _build_directory() -> Path:
    """This process's directory for the libraries it builds: made at its first build,
    removed when it exits (a loaded library's file may go; its mapping stays)."""
    directory = Path(tempfile.mkdtemp(prefix="gdrelu-native-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def remove_build_directory() -> None:
    """Remove this process's build directory now, where one was made: for an exit past
    the exit handlers (`cli.leave_at_once`), which would have removed it."""
    if _build_directory.cache_info().currsize:
        shutil.rmtree(_build_directory(), ignore_errors=True)


def cached(compiler: str, source: Path, name: str) -> Path | None:
    """Where the library `name` of `source` built by `compiler` for this CPU is kept: in
    the directory of JAX's compilation cache (`gdrelu.cache`), as
    gdrelu-native/<name>-<key>.so, the key a hash of the source, the headers, the
    flags, the compiler and this CPU's model and features (-march=native code may not run
    on another CPU); None while that cache is off."""
    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        return None
    key = hashlib.sha256(b"".join(path.read_bytes() for path in (source, *HEADERS)))
    compiler_file = Path(compiler).resolve()
    stat = compiler_file.stat()
    header = Path(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")
    key.update(header.read_bytes() if header.is_file() else b"")  # none: the build says so
    key.update(repr((FLAGS, str(compiler_file), stat.st_size, stat.st_mtime_ns)).encode())
    key.update(_processor().encode())
    return Path(directory) / "gdrelu-native" / f"{name}-{key.hexdigest()[:32]}.so"


def _processor() -> str:
    """This CPU's model and feature flags (Linux: /proc/cpuinfo), else what Python knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def _c_order(carry, fixed, noise, xp):
    """`native_steps`' operands in the C loop's order, each (components..., runs): carry
    (phi, c, tracked with neuron k's z at D·k, kink, moved[, c_velocity]), fixed (grams,
    plus, real, the 10 moments stacked, h[, key, step, thresholds, first, table]); `xp`:
    numpy or jax.numpy."""
    phi, c, tracked, *flags = carry
    grams, plus, real, moments, h = fixed
    fixed = [grams, plus, real, xp.stack(moments), h, *(noise or ())]
    return [phi, c, xp.swapaxes(tracked, 0, 1), *flags], fixed


def _dtype(position: int):
    """The C loop's dtype of fixed operand `position` (`_c_order`): the noise's key and step
    are uint32, the rest float64."""
    return np.uint32 if position in (5, 6) else np.float64


def _lanes(v, dtype, runs: int, count: int, xp):
    """v (components..., runs) as the C loop's (component, lanes) array of its first `count`
    runs, padded to a multiple of `LANES` with the last of them repeated."""
    v = xp.asarray(v).astype(dtype).reshape(-1, runs)[:, :count]
    extra = -count % LANES
    return xp.pad(v, ((0, 0), (0, extra)), mode="edge") if extra and count else v


def host_arrays(carry, grams, plus, real, moments, h, active):
    """The C loop's (component, lanes) arrays (`_c_order`, `_lanes`) of the first `active`
    runs, for `run_loop`."""
    runs = carry[1].shape[-1]
    carry, fixed = _c_order(carry, (grams, plus, real, moments, h), None, np)

    def columns(v):
        return np.ascontiguousarray(_lanes(v, np.float64, runs, active, np))

    return [columns(v) for v in carry], [columns(v) for v in fixed]


def run_loop(carry, fixed, alpha, steps: int, momentum=None) -> None:
    """The C loop on `host_arrays`' arrays, updated in place: GD (`gd_steps`, D = 3), or
    heavy ball with `momentum` μ (`heavy_ball_steps`, D = 6, carry with c's velocity).
    The arrays' shapes are checked first: the C loop trusts them."""
    size = 3 if momentum is None else 6
    rows = [2 * size * size, 1, TRACKED * size, 1, 1] + [1] * (momentum is not None)
    rows += [2 * size * size, TRACKED, TRACKED, 10, 1]
    lanes = carry[1].shape[-1]
    arrays = (*carry, *fixed)
    if len(arrays) != len(rows):
        raise ValueError(f"the C loop takes {len(rows)} arrays, not {len(arrays)}")
    for v, expected in zip(arrays, rows, strict=True):
        if v.shape != (expected, lanes) or v.dtype != np.float64 or not v.flags.c_contiguous:
            raise ValueError(
                f"the C loop (D = {size}) takes C-contiguous float64 "
                f"({expected}, {lanes}) arrays, not {v.dtype} {v.shape}"
            )
    if lanes % LANES:
        raise ValueError(f"the C loop takes lanes in multiples of {LANES}, not {lanes}")
    if not lanes:
        return
    number, whole = ctypes.c_double, ctypes.c_long
    pointers = [v.ctypes.data_as(ctypes.c_void_p) for v in arrays]
    start = [whole(lanes), whole(steps), number(float(alpha))]
    if momentum is not None:
        start.append(number(float(momentum)))
    loop = library().gd_steps if momentum is None else library().heavy_ball_steps
    loop(*start, *pointers)


@functools.cache
def registered() -> str:
    """The propagator's C loop registered with XLA as the CPU FFI target `TARGET`, once per
    process; returns `TARGET`."""
    handler = library().gdrelu_steps
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return TARGET


@functools.cache
def general_registered() -> str:
    """The general path's C loop (`general_library`) registered as `GENERAL_TARGET`, once
    per process; returns `GENERAL_TARGET`."""
    handler = general_library().gdrelu_general_steps
    jax.ffi.register_ffi_target(GENERAL_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return GENERAL_TARGET


def lanes_call(target: str, carry, fixed, fixed_dtypes, settings):
    """FFI target `target` (`registered` or `general_registered`) called inside a program
    on (components..., runs) arrays in the C loops' layout (`_lanes`: (component, lanes),
    lanes padded to a multiple of `LANES`): the float64 `carry`, the `fixed` operands in
    `fixed_dtypes`, then `settings` stacked as the float64 config. Returns the carry after
    the call, padded."""
    runs = carry[0].shape[-1]
    start = [_lanes(v, jnp.float64, runs, runs, jnp) for v in carry]
    rest = [_lanes(v, d, runs, runs, jnp) for v, d in zip(fixed, fixed_dtypes, strict=True)]
    config = jnp.stack([jnp.asarray(v, jnp.float64) for v in settings])
    shapes = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in start]
    return jax.ffi.ffi_call(target, shapes)(*start, *rest, config)


def native_steps(carry, fixed, alpha, num_steps, active, momentum=None, noise=None, draws=None):
    """`propagator._block_steps` for a whole batch in the C loop: carry = (phi, c, tracked,
    kink, moved), and c's velocity after them for heavy ball with `momentum` μ; fixed =
    (grams, tracked_plus, real, moments, h), runs axis last (as `kernel.kernel_steps`);
    with `draws` B, each step's moments come from B multinomial draws of `noise` = (key
    (2, runs), step (runs,), thresholds, first, table of the `DrawTable`) instead. Only the
    first `active` runs (a traced count) step, `num_steps` times (an int or traced). float64.

    The loop is an XLA FFI custom call (`registered`): the program holds its name, so JAX
    keeps the program in its compilation cache, and each device runs it on its own
    buffers. The arrays go to the C loop's layout, (component, lanes) with lanes padded to a
    multiple of `LANES`, and back, inside the program."""
    target = registered()  # a missing compiler fails here, with its reason
    if carry[1].dtype != np.float64:
        raise ValueError(f"kernel 'native' steps float64 runs, not {carry[1].dtype}")
    runs = carry[1].shape[-1]
    old, fixed = _c_order(carry, fixed, noise, jnp)
    mu = -1.0 if momentum is None else float(momentum)
    settings = (alpha, mu, num_steps, 0 if draws is None else draws, active)
    dtypes = [_dtype(i) for i in range(len(fixed))]
    stepped = lanes_call(target, old, fixed, dtypes, settings)
    on = jnp.arange(runs) < active
    merged = [
        jnp.where(on, new[:, :runs], v.reshape(-1, runs)).astype(v.dtype).reshape(v.shape)
        for new, v in zip(stepped, old, strict=True)
    ]
    merged[2] = jnp.swapaxes(merged[2], 0, 1)
    return tuple(merged)
