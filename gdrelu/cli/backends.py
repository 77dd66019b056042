"""JAX's set-up for a command: 64-bit floats and full matmul precision, one CPU device
per core, the propagator's kernel, several processes, and the
backend's name for the summary."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from gdrelu import cache
from gdrelu.cli.errors import UsageError


def enable_x64() -> None:
    """Before any spec is built: float64 specs need it."""
    import jax

    jax.config.update("jax_enable_x64", True)


_RECORDED_BY: list[Path] = []  # the --resume directory whose record chose the kernel, if any
RESUME_ELSEWHERE = "resume it on a machine that runs that kernel"


def use_kernel(kernel: str | None, recorded_by: Path | None = None):
    """--kernel, when given, as $GDRELU_PROPAGATOR_KERNEL for this command (the engine
    reads it there), or the kernel the run in `recorded_by` recorded (its refusals then
    name that run, not a flag): a function that restores the variable as it was."""
    from gdrelu.engine import KERNEL_VARIABLE

    before = os.environ.get(KERNEL_VARIABLE)
    if kernel is not None:
        os.environ[KERNEL_VARIABLE] = kernel
    _RECORDED_BY[:] = [recorded_by] if kernel is not None and recorded_by is not None else []

    def restore() -> None:
        _RECORDED_BY.clear()
        if before is None:
            os.environ.pop(KERNEL_VARIABLE, None)
        else:
            os.environ[KERNEL_VARIABLE] = before

    return restore


def resume_command(command: str, out, args=None) -> str:
    """The command that finishes the run directory `out`: with the --kernel it needs
    where the kernel asked for (the flag's or $GDRELU_PROPAGATOR_KERNEL's) is not auto,
    and the --memory-budget of `args` if it gave one (the same budget keeps the bits)."""
    from gdrelu.engine import requested_kernel

    kernel, budget = requested_kernel(), getattr(args, "memory_budget", None)
    return (
        f"gdrelu {command} --resume {out}"
        + (f" --kernel {kernel}" if kernel != "auto" else "")
        + (f" --memory-budget {budget!r}" if budget is not None else "")  # every digit
    )


def check_specs_kernel(specs, kernel_flag=None) -> None:
    """`check_kernel` on this process's platform, for `specs` (see `prepare`)."""
    import jax

    check_kernel(jax.devices()[0].platform, specs, from_flag=kernel_flag is not None)


def prepare(*, every_core: bool, cache_dir, specs=(), kernel_flag=None) -> None:
    """JAX's partitionable threefry (`cells.check_threefry`), full matmul precision, one
    device per CPU core (`use_every_cpu_core`), the compilation cache in `cache_dir`
    ("none": off), and the propagator's kernel checked for this platform, before anything
    is written (a refusal names --kernel where `kernel_flag` set it). The cache first: the
    C loop that the kernel check builds is kept there (`native.cached`)."""
    import jax

    from gdrelu.cache import use_compilation_cache
    from gdrelu.cells import check_threefry

    try:
        check_threefry()
    except ValueError as err:
        raise UsageError(str(err)) from None
    jax.config.update("jax_default_matmul_precision", "highest")
    if cache_dir is not None and str(cache_dir).lower() != "none":
        cache_dir = _usable_cache_dir(Path(cache_dir))
    use_compilation_cache(cache_dir)
    if every_core:
        use_every_cpu_core()
    check_specs_kernel(specs, kernel_flag)


def _usable_cache_dir(path: Path) -> Path | str:
    """--cache-dir (or $GDRELU_CACHE_DIR) if it can hold the cache: a directory, or one
    this user can create (its nearest existing ancestor a writable directory). JAX would
    only warn, at every program and into the progress bar, and go on without it: a path
    given is refused; the default (~/.cache/gdrelu/xla) is left off ("none") with one
    warning, so that a read-only home still runs. An existing directory this user cannot
    write (a cache shared read-only) is kept, with one warning: JAX reads its programs."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return path
    if existing == path and path.is_dir():  # a cache shared read-only: JAX reads its hits
        print(f"gdrelu: warning: {path} is not writable: its programs are read, none added",
              file=sys.stderr)  # fmt: skip
        return path
    why = "is not writable" if existing.is_dir() else "is a file, not a directory"
    where = f"{path} {why}" if existing == path else f"{path} cannot be made: {existing} {why}"
    variable = os.environ.get(cache.VARIABLE)
    if variable and Path(variable) == path:
        raise UsageError(f"${cache.VARIABLE}: {where}; 'none' turns it off")
    if path != cache.default_cache_dir():
        raise UsageError(f"--cache-dir: {where}; 'none' turns it off")
    print(f"gdrelu: warning: no compilation cache ({where}); --cache-dir DIR keeps one",
          file=sys.stderr)  # fmt: skip
    return "none"


def use_every_cpu_core() -> None:
    """One XLA CPU device per core (before JAX starts its backends), so that the engine
    spreads its blocks of runs over all cores, unless the caller chose a count
    ($JAX_NUM_CPU_DEVICES, or XLA_FLAGS=--xla_force_host_platform_device_count=K, which
    jax_num_cpu_devices would override); on a GPU this changes nothing."""
    import jax

    chosen_in_flags = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if jax.config.jax_num_cpu_devices > 0 or chosen_in_flags:
        return
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except (AttributeError, RuntimeError) as err:  # an older JAX, or backends already up
        print(f"warning: one CPU device for all cores ({err})", file=sys.stderr)


def check_kernel(platform: str, specs=(), from_flag: bool = False) -> None:
    """$GDRELU_PROPAGATOR_KERNEL (set by --kernel where `from_flag`), checked for this
    platform and for the specs whose runs take the propagator or the general path's C loop
    (`native_general`), before anything is written."""
    from gdrelu import native_general
    from gdrelu.engine import propagator_kernel, requested_kernel
    from gdrelu.propagator import check_kernel_trains

    source, fix = _kernel_source(from_flag, requested_kernel())
    try:  # asked for by name, so that the engine's message leaves the source to this one
        kernel = propagator_kernel(platform, requested_kernel())
    except ValueError as e:
        # a record's kernel: the engine's other kernels would give other bits than its units
        reason = f"{str(e).split(';')[0]}; {fix}" if _RECORDED_BY else str(e)
        raise UsageError(f"{source}: {reason}") from None
    if requested_kernel() == "auto":  # "auto" picks per spec
        return
    for spec in specs:
        try:
            if spec.path == "propagator":
                check_kernel_trains(kernel, spec.trained_by, spec.dtype)
            dimension, points = spec.input_dim, spec.training_points
            native_general.check_requested(kernel, spec.trained_by, dimension, points, spec.dtype)
        except ValueError as e:
            raise UsageError(f"{source}: {e}; {fix}") from None


def _kernel_source(from_flag: bool, kernel: str) -> tuple[str, str]:
    """Who asked for `kernel`, as a refusal names it, and what to do instead: --kernel,
    $GDRELU_PROPAGATOR_KERNEL, or the record of the run being resumed (`use_kernel`),
    which only that kernel resumes."""
    from gdrelu.engine import KERNEL_VARIABLE

    if _RECORDED_BY:
        return f"--resume: {_RECORDED_BY[0]} was started with kernel {kernel!r}", RESUME_ELSEWHERE
    if from_flag:
        return "--kernel", "use --kernel xla"
    return f"${KERNEL_VARIABLE}", "unset it or use 'xla'"


PROCESS_FLAGS = ("coordinator", "num_processes", "process_id", "coordinator_timeout")


def refuse_process_flags_alone(args) -> None:
    """--coordinator, --num-processes, --process-id and --coordinator-timeout mean nothing
    without --distributed."""
    if args.distributed:
        return
    for flag in PROCESS_FLAGS:
        if getattr(args, flag, None) is not None:
            raise UsageError(f"--{flag.replace('_', '-')}: needs --distributed")


COORDINATOR_TIMEOUT = 300  # s: jax.distributed's own default


def _wait_for_coordinator(host: str, port: int, timeout: float) -> None:
    """Until `timeout` seconds have passed, try to open a connection to process 0's
    coordinator; refuse if none opens. jax.distributed would instead wait as long and
    then abort in C++ with a stack trace."""
    import socket
    import time

    host = host.removeprefix("[").removesuffix("]")  # an IPv6 address, as gRPC writes it
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = max(0.1, min(5.0, deadline - time.monotonic()))
            socket.create_connection((host, port), timeout=left).close()
            return
        except socket.gaierror as err:  # no such host: waiting will not make one
            known = f"{host!r} is not a known host ({err.strerror})"
            raise UsageError(f"--coordinator: {known}") from None
        except OSError as err:
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"--coordinator: nothing answered at {host}:{port} in {timeout:g} s "
                    f"({err.strerror or err}); start process 0 there first, or give "
                    "--coordinator-timeout SECONDS"
                ) from None
            time.sleep(0.5)


def start_processes(args, specs):
    """jax.distributed.initialize (before any other JAX call) with CPU collectives over
    gloo: this process's `runner.Processes`."""
    if args.resume:
        raise UsageError("--distributed: not with --resume yet (units live on process 0)")
    if any(spec.target_halfwidth is not None for spec in specs):
        raise UsageError("--distributed: not with --target-halfwidth yet")
    timeout = getattr(args, "coordinator_timeout", None)
    if timeout is not None and timeout < 1:
        raise UsageError(f"--coordinator-timeout: {timeout} is not a number of seconds ≥ 1")
    timeout = COORDINATOR_TIMEOUT if timeout is None else timeout
    count, given = args.num_processes, args.process_id
    if count is not None and count < 1:
        raise UsageError(f"--num-processes: {count} is not a count ≥ 1")
    if given is not None and (given < 0 or (count is not None and given >= count)):
        raise UsageError(f"--process-id: {given} is not in [0, {count or 'the count'})")
    if args.coordinator is not None:
        host, colon, port = args.coordinator.rpartition(":")
        if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"--coordinator: {args.coordinator!r} is not host:port (port 1-65535)")
        if args.process_id:  # process 0 starts the coordinator
            _wait_for_coordinator(host, int(port), timeout)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            args.coordinator, args.num_processes, args.process_id, initialization_timeout=timeout
        )
    except (ValueError, RuntimeError) as err:
        hint = ""
        if args.coordinator is None and "coordinator" in str(err):
            hint = "; outside a cluster JAX detects (SLURM, ...) give --coordinator host:port"
        raise UsageError(f"--distributed: {str(err).rstrip('.')}{hint}") from None
    from jax.experimental import multihost_utils

    from gdrelu.runner import Processes

    return Processes(jax.process_index(), jax.process_count(), multihost_utils.process_allgather)


def check_same_experiment(specs, processes, num_processes) -> None:
    """Refuse, on every process alike, processes given different experiments: each
    gathers a digest of every spec field (a data file by its contents, not its path), of
    the number of specs and of --num-processes (the cluster's count where not given), and
    all end with one line naming the fields that differ (a --runs or --seed of its own
    mixed two experiments' runs into one runs.csv without a word). Then refuse fewer runs
    per cell than processes."""
    import dataclasses

    import numpy as np

    from gdrelu.spec import ExperimentSpec

    fields = [f.name for f in dataclasses.fields(ExperimentSpec) if f.name != "data_file"]
    values = [[spec.to_dict()[name] for spec in specs] for name in fields]
    count = processes.count if num_processes is None else num_processes  # a cluster's own
    values += [[spec.data_sha256 for spec in specs], len(specs), count]
    flags = [*fields, "the data file's contents", "the optimizers", "--num-processes"]
    local = np.stack([_digest(value) for value in values])
    with stdout_to_stderr():  # the first gather connects gloo, which says so on stdout
        everyone = np.asarray(processes.gather(local))  # (processes, values, 8)
    same = (everyone == everyone[:1]).all(axis=2)  # (processes, values)
    if not same.all():
        others = ", ".join(str(i) for i in np.flatnonzero(~same.all(axis=1)))
        agree = same.all(axis=0)
        if not agree[-2]:  # another number of specs: every field's list differs
            agree[:-2] = True
        differ = ", ".join(f for f, ok in zip(flags, agree, strict=True) if not ok)
        raise UsageError(
            f"--distributed: process {others} was given another experiment than process 0 "
            f"(it differs in {differ}); give every process the same flags and --config"
        )
    if any(spec.runs < processes.count for spec in specs):
        raise UsageError(f"--runs: fewer runs per cell than the {processes.count} processes")


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 pointed at 2 inside the block (what C++ prints there, too), so
    that the command's standard output holds its table alone."""
    sys.stdout.flush()
    kept = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(kept, 1)
        os.close(kept)


def _digest(value):
    """8 bytes of the SHA-256 of `value` as JSON, as uint8 (8,)."""
    import hashlib
    import json

    import numpy as np

    text = json.dumps(value, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha256(text).digest()[:8], np.uint8)


def backend_name() -> str:
    """The backend, device kind and device count, as the summary records them."""
    import jax

    device = jax.devices()[0]
    return f"{jax.default_backend()} ({device.device_kind}, {jax.device_count()} device(s))"
