"""The `gdrelu` command.

    gdrelu run                       # the embedded default experiment
    gdrelu run --widths 16,32 --runs 200 --out results/
    gdrelu run --config experiment.toml --seed 3
    gdrelu compare --optimizers gd,sgd,adam --widths 16,32 --runs 200 --max-checks 20
    gdrelu run --preset section10 --scale small  # the paper's Section 10 grid, laptop size

Settings come from the defaults, then the TOML file, then the flags. A bad setting is
reported on one line naming it, with exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad request: reported on one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(message)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


# flag name -> (spec field, type, help)
_RUN_FLAGS = {
    "--widths": ("widths", _int_list, "comma-separated widths n (default 16,32,64,128)"),
    "--deltas": ("deltas", _float_list, "comma-separated offsets Δ (default 0,0.01,0.1)"),
    "--runs": ("runs", int, "runs per (width, Δ) cell (default 1000)"),
    "--seed": ("seed", int, "master seed (default 0)"),
    "--dtype": ("dtype", str, "float64 (default) or float32"),
    "--check-every": ("check_every", int, "GD steps between checks (default 1000)"),
    "--max-checks": ("max_checks", int, "checks before a run is unfinished (default 1000)"),
    "--target-halfwidth": ("target_halfwidth", float, "add runs until each 95%% CI half-width ≤ H"),
    "--max-runs": ("max_runs", int, "most runs per cell with --target-halfwidth"),
    "--optimizer": ("optimizer", str, "gd (default), sgd, momentum or adam"),
    "--step-size": ("step_size", str, "paper (default), small (0.01/n) or a number"),
    "--step-factor": ("step_factor", float, "multiplies the step size (default 1)"),
    "--sampler": ("sampler", str, "minibatches: multinomial (sgd's default) or epoch"),
    "--batch-size": ("batch_size", int, "minibatch size B (default 16)"),
    "--data": (
        "data",
        str,
        "six-points (default), star, cross, double-cross, multi-axis, p-ex, radial or rbf",
    ),
    "--num-heldout": ("num_heldout", int, "validation and test points of continuous data (1024)"),
    "--split": ("split", _float_list, "train,validation,test fractions of a --data-file"),
    "--data-file": ("data_file", str, "CSV (header; last column y) or NPZ (x, y) with --data file"),
    "--dim": ("dim", int, "input dimension d for multi-axis, radial, rbf (default 1)"),
    "--num-train": ("num_train", int, "training points of continuous data (default 256·d)"),
    "--init": ("init", str, "weights: he (default), swapped or ntk"),
    "--bias-init": ("bias_init", str, "layer-1 biases: zero (default), unif, kink-neg-unif, ..."),
    "--buckets": (
        "buckets",
        str,
        "widths sharing a compiled program: auto (default: pow2, and widths ≤ 128 together "
        "on GD's propagator), pow2, one or none (results unchanged)",
    ),
}


def _optimizer_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of two or more distinct names")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gdrelu", description="Monte Carlo studies of GD on two-layer ReLU nets")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run an experiment (the paper's 1-D GD figure by default)")
    compare = sub.add_parser(
        "compare", help="several optimizers on the same data and initial networks, paired"
    )
    compare.add_argument(
        "--optimizers",
        type=_optimizer_list,
        required=True,
        help="comma-separated optimizers to compare, e.g. gd,sgd,momentum,adam",
    )
    run.add_argument("--preset", choices=["section10"], help="a preset grid instead of a spec")
    run.add_argument(
        "--scale", choices=["small", "full"], default="small", help="size of the preset grid"
    )
    for command in (run, compare):
        for flag, (field, kind, text) in _RUN_FLAGS.items():
            if not (command is compare and field == "optimizer"):
                command.add_argument(flag, dest=field, type=kind, help=text)
        command.add_argument("--config", type=Path, help="TOML file of experiment settings")
        command.add_argument(
            "--out", type=Path, help="output directory (default runs/<timestamp>/)"
        )
        command.add_argument(
            "--resume",
            type=Path,
            metavar="DIR",
            help="finish an interrupted run in DIR (same settings): finished units are kept",
        )
        command.add_argument("--quiet", action="store_true", help="no progress bar")
        command.add_argument(
            "--memory-budget",
            type=float,
            metavar="GB",
            help="memory a batch of runs may use (default: 70%% of the accelerators' free "
            "memory, or half the host's available memory); more runs go in several batches",
        )
        command.add_argument(
            "--distributed",
            action="store_true",
            help="one of several processes (jax.distributed): each trains a share of every "
            "cell, process 0 writes; address, count and id from the flags below or from "
            "the cluster's environment (SLURM, TPU pods)",
        )
        command.add_argument("--coordinator", help="host:port of process 0 (--distributed)")
        command.add_argument("--num-processes", type=int, help="process count (--distributed)")
        command.add_argument("--process-id", type=int, help="this process's id (--distributed)")
        command.add_argument(
            "--cache-dir",
            type=Path,
            default=default_cache_dir(),
            help="where compiled XLA programs are kept between runs ('none': nowhere; "
            "default $GDRELU_CACHE_DIR or ~/.cache/gdrelu/xla)",
        )
    return parser


def default_cache_dir() -> Path | None:
    """$GDRELU_CACHE_DIR, else $XDG_CACHE_HOME/gdrelu/xla (~/.cache/gdrelu/xla)."""
    if "GDRELU_CACHE_DIR" in os.environ:
        return Path(os.environ["GDRELU_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gdrelu" / "xla"


def use_compilation_cache(path: Path | None) -> None:
    """Keep every compiled program on disk: a second run with the same shapes compiles
    nothing (JAX checks the compiler version and the program in each entry's key). Small
    programs too: a default run's 75 programs take 1.9 MB, and loading the ~60 that
    compile in under 0.2 s saves ~3.5 s of a warm 17 s run on 2 CPU cores."""
    if path is None or str(path).lower() == "none":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _spec_from(args):
    from gdrelu.spec import STEP_SIZE_RULES, ExperimentSpec, SpecError

    values = {}
    if args.config is not None:
        try:
            with open(args.config, "rb") as f:
                values = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"--config: cannot read {args.config}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"--config: {args.config} is not valid TOML: {e}") from None
    for field, *_ in _RUN_FLAGS.values():
        if getattr(args, field, None) is not None:
            values[field] = getattr(args, field)
    if isinstance(values.get("step_size"), str) and values["step_size"] not in STEP_SIZE_RULES:
        try:
            values["step_size"] = float(values["step_size"])
        except ValueError:
            raise UsageError(
                f"step_size: {values['step_size']!r} is not one of {STEP_SIZE_RULES} or a number"
            ) from None
    try:
        if getattr(args, "optimizers", None):
            return [ExperimentSpec.from_dict(_compared(values, o)) for o in args.optimizers]
        return [ExperimentSpec.from_dict(values)]
    except SpecError as e:
        raise UsageError(str(e)) from None
    except TypeError as e:
        raise UsageError(f"config: {e}") from None


def _compared(values: dict, optimizer: str) -> dict:
    """One optimizer's settings in `gdrelu compare`: every optimizer trains to the step
    budget unless GD's certificate stops it (a proof that its final network stays in the
    linear regime), and P(stuck) reads the final network for all, so the pairs compare
    like with like."""
    values = {**values, "optimizer": optimizer, "stuck_rule": "final"}
    values["stop_on"] = ["stuck", "degenerate"] if optimizer == "gd" else []
    return values


def _result_bytes(specs) -> int:
    """A generous estimate of what a run writes: per run a table row and its final
    parameters (3n + 1 numbers) in its unit file, twice (units and runs.csv), plus 1 MB."""
    total = 0
    for spec in specs:
        runs = spec.max_runs or spec.runs
        per_run = 600 + 8 * (3 * max(spec.widths) * spec.input_dim + 1)
        total += 2 * per_run * runs * len(spec.widths) * len(spec.deltas)
    return total + 2**20


def _check_space(out: Path, specs) -> None:
    """Refuse, before any compute, an output directory on a disk without room."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    need = _result_bytes(specs)
    if free < need:
        raise UsageError(
            f"--out: {out} needs about {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free"
        )


def _budget_bytes(gigabytes: float | None) -> int | None:
    if gigabytes is None:
        return None
    if not gigabytes > 0 or gigabytes == float("inf"):
        raise UsageError(f"--memory-budget: {gigabytes} is not a positive number of GB")
    return int(gigabytes * 1e9)


def _start_processes(args, specs):
    """jax.distributed.initialize (before any other JAX call) with CPU collectives over
    gloo: this process's `Processes`."""
    if args.resume:
        raise UsageError("--distributed: not with --resume yet (units live on process 0)")
    if any(spec.target_halfwidth is not None for spec in specs):
        raise UsageError("--distributed: not with --target-halfwidth yet")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"--distributed: {err}") from None
    from jax.experimental import multihost_utils

    from gdrelu.runner import Processes

    count = jax.process_count()
    if any(spec.runs < count for spec in specs):
        raise UsageError(f"--runs: fewer runs per cell than the {count} processes")
    return Processes(jax.process_index(), count, multihost_utils.process_allgather)


def _prepare_resume(args, manifest) -> Path:
    """The directory of an interrupted run, checked against this run's manifest."""
    from gdrelu.store import ResumeError, check_manifest

    if args.out is not None:
        raise UsageError("--resume: give the run's directory there, not with --out")
    try:
        check_manifest(args.resume, manifest)
    except ResumeError as err:
        raise UsageError(f"--resume: {err}") from None
    return args.resume


def _prepare_out(out: Path | None) -> Path:
    """Create the output directory and prove it writable, before any compute."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
    if (out / "summary.json").exists():
        raise UsageError(f"--out: {out} already holds results; choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out: cannot write to {out}: {e.strerror}") from None
    return out


class _Progress:
    """A progress bar over all runs: finished runs by status, and the ETA."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="run", disable=not enabled, dynamic_ncols=True)
        self.counts: dict[str, int] = {}
        self.finished_in_batch = 0

    def on_check(self, widths, k, status, label=""):
        from gdrelu.engine import Status

        finished = int(np.sum(status != Status.RUNNING))
        self.bar.update(finished - self.finished_in_batch)
        self.finished_in_batch = finished
        labels = {s.label: int(np.sum(status == s)) for s in Status if s != Status.RUNNING}
        shown = {k: v + self.counts.get(k, 0) for k, v in labels.items()}
        self.bar.set_postfix({k: v for k, v in shown.items() if v}, refresh=False)
        widths = ",".join(map(str, np.atleast_1d(widths)))
        self.bar.set_description(f"{label}n={widths} check {k}")

    def on_cells_done(self, cell_results):
        from gdrelu.engine import Status

        for cr in cell_results:
            for s in Status:
                if s != Status.RUNNING:
                    self.counts[s.label] = self.counts.get(s.label, 0) + int(
                        np.sum(cr.result.status == s)
                    )
        self.finished_in_batch = 0

    def close(self):
        self.bar.close()


def _check_kernel(platform: str) -> None:
    """$GDRELU_PROPAGATOR_KERNEL, checked for this platform before anything is written."""
    from gdrelu.engine import propagator_kernel

    try:
        propagator_kernel(platform)
    except ValueError as e:
        raise UsageError(str(e)) from None


def use_every_cpu_core() -> None:
    """One XLA CPU device per core (before JAX starts its backends), so that the engine
    spreads its blocks of runs over all cores; on a GPU this changes nothing."""
    import jax

    if jax.config.jax_num_cpu_devices > 0:  # the caller chose
        return
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except (AttributeError, RuntimeError) as err:  # an older JAX, or backends already up
        print(f"warning: one CPU device for all cores ({err})", file=sys.stderr)


def _run(args) -> int:
    """`gdrelu run` and `gdrelu compare`: one spec, or one per optimizer on common random
    numbers (the cells' data and initial networks do not depend on the optimizer)."""
    if getattr(args, "preset", None) == "section10":
        return _section10(args)
    import jax

    jax.config.update("jax_enable_x64", True)  # before the specs: float64 specs need it
    specs = _spec_from(args)
    budget = _budget_bytes(args.memory_budget)
    processes = _start_processes(args, specs) if args.distributed else None
    writer = processes is None or processes.index == 0
    jax.config.update("jax_default_matmul_precision", "highest")
    if processes is None:
        use_every_cpu_core()
    _check_kernel(jax.devices()[0].platform)
    out = None
    if writer:
        from gdrelu.provenance import manifest

        _check_space(args.resume or args.out or Path("runs"), specs)
        started = manifest([s.to_dict() for s in specs])
        out = _prepare_resume(args, started) if args.resume else _prepare_out(args.out)
        if not args.resume:
            from gdrelu.store import write_manifest

            write_manifest(out, started)
    use_compilation_cache(args.cache_dir)
    from gdrelu import runner
    from gdrelu.analysis import comparisons, experiment_summary, format_table
    from gdrelu.records import table
    from gdrelu.store import write_results

    spec = specs[0]
    total = len(spec.widths) * len(spec.deltas) * spec.runs * len(specs)
    progress = _Progress(total, enabled=writer and not args.quiet)
    start = time.perf_counter()
    results = []

    def stored(cell_results):
        progress.bar.update(sum(cr.result.status.size for cr in cell_results))
        progress.on_cells_done(cell_results)

    try:
        for each in specs:
            label = f"{each.optimizer} " if len(specs) > 1 else ""
            results += runner.run_experiment(
                each,
                on_check=lambda w, k, status, label=label: progress.on_check(w, k, status, label),
                on_cells_done=progress.on_cells_done,
                processes=processes,
                memory_budget=budget,
                units=out,
                on_stored=stored,
            )
    except KeyboardInterrupt:
        progress.close()
        print(
            f"gdrelu: interrupted; finish with the same flags and --resume {out}", file=sys.stderr
        )
        return 130
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    if not writer:
        return 0
    backend = _backend()
    extra = {}
    if len(specs) > 1:
        extra = {
            "optimizers": [s.optimizer for s in specs],
            "comparisons": comparisons(results),
        }
    summary = experiment_summary(spec, results, seconds=seconds, backend=backend, extra=extra)
    write_results(out, table(results), summary)
    print(format_table(summary["cells"]))
    for c in summary.get("comparisons", []):
        lo, hi = c["ci95"]
        print(
            f"{c['a']} - {c['b']}  n={c['width']} Δ={c['delta']:g}: {c['difference']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}]  McNemar p = {c['p_value']:.3g}"
        )
    print(f"{total} runs in {seconds:.1f} s on {backend}; results in {out}/")
    return 0


def _section10(args) -> int:
    """`gdrelu run --preset section10 --scale S`: the grid of `gdrelu.section10`."""
    given = [flag for flag, (field, *_) in _RUN_FLAGS.items() if getattr(args, field, None)]
    given = [flag for flag in given if flag != "--seed"] + (["--config"] if args.config else [])
    if given:
        raise UsageError(f"{given[0]}: the section10 preset takes only --scale, --seed, --out")
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    use_every_cpu_core()
    from gdrelu import section10
    from gdrelu.store import write_manifest, write_section10

    _check_kernel(jax.devices()[0].platform)
    budget = _budget_bytes(args.memory_budget)
    scale = section10.SCALES[args.scale]
    started = section10.manifest(args.scale, scale, args.seed or 0)
    out = _prepare_resume(args, started) if args.resume else _prepare_out(args.out)
    if not args.resume:
        write_manifest(out, started)
    use_compilation_cache(args.cache_dir)
    groups = section10.configurations(scale)
    per_group = len(scale.bias_inits) * len(scale.step_exponents) * scale.runs
    progress = _Progress(len(groups) * per_group, enabled=not args.quiet)
    start = time.perf_counter()
    rows = []
    try:
        for group in groups:
            label = f"{group['data']} d={group['dim']} {group['init']} {group['optimizer']} "
            rows += section10.run_group(
                scale,
                group,
                seed=args.seed or 0,
                on_check=lambda k, status, label=label: progress.on_check(
                    scale.width, k, status, label
                ),
                memory_budget=budget,
                units=out,
            )
            progress.on_cells_done([])  # the final check finished every run of the group
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    best = section10.best_step_sizes(rows)
    summary = section10.summary(args.scale, scale, best, seconds=seconds, backend=_backend())
    write_section10(out, rows, section10.format_table(best), summary)
    print(section10.format_table(best))
    print(f"{len(groups) * per_group} runs in {seconds:.1f} s on {_backend()}; results in {out}/")
    return 0


def _backend() -> str:
    import jax

    device = jax.devices()[0]
    return f"{jax.default_backend()} ({device.device_kind}, {jax.device_count()} device(s))"


def main(argv=None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return _run(args)
    except UsageError as e:
        print(f"gdrelu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gdrelu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
