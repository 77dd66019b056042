"""`gdrelu run --preset section10 --scale S`: the grid of `gdrelu.section10`, resumable
like any run (its manifest records the scale and seed)."""

from __future__ import annotations

import functools
import time

from gdrelu import section10 as grid
from gdrelu.cli import backends, options, outdir
from gdrelu.cli.errors import Interrupted, UsageError
from gdrelu.cli.parser import RUN_FLAGS
from gdrelu.cli.progress import RunProgress, finished_line
from gdrelu.progress import spec_clock

_OTHERS = ("config", "protocol", *backends.PROCESS_FLAGS)


def execute(args, started: dict | None = None) -> int:
    """Train every group of the grid, then write its table, summary and figure."""
    _refuse_spec_flags(args)
    scale_name, seed = _scale_and_seed(args, started)
    scale = grid.SCALES[scale_name]
    backends.enable_x64()
    firsts = grid.group_specs(scale, seed)
    backends.prepare(
        every_core=True, cache_dir=args.cache_dir, specs=firsts, kernel_flag=args.kernel
    )
    budget = options.budget_bytes(args.memory_budget)
    groups = grid.configurations(scale)
    smallest = scale_name == "tiny"  # no scale to lower to: the budget alone
    options.check_fits(
        firsts,
        budget,
        together=False,
        lower="" if smallest else "--scale",
        cells=grid.group_size(scale),
    )
    out = outdir.open_directory(args, grid.manifest(scale_name, scale, seed))
    labels = [f"{g['data']} d={g['dim']} {g['init']} {g['optimizer']} " for g in groups]
    per_group = grid.group_size(scale) * scale.runs
    from gdrelu.store import stored_seconds, write_section10

    before = stored_seconds(out)  # a resumed grid's earlier time, before the bar is drawn
    progress = RunProgress(
        len(groups) * per_group, spec_clock(firsts), enabled=not args.quiet, labels=labels
    )
    start = time.perf_counter()
    rows = []
    try:
        for i, group in enumerate(groups):
            rows += grid.run_group(
                scale,
                group,
                seed=seed,
                on_check=functools.partial(progress.on_check, i, scale.width),
                on_done=functools.partial(_group_done, progress, i),
                on_batches=functools.partial(progress.on_batches, i),
                memory_budget=budget,
                units=out,
            )
    except KeyboardInterrupt:
        progress.close()
        raise Interrupted(backends.resume_command("run", out, args)) from None
    finally:
        progress.close()
    seconds = before + time.perf_counter() - start
    best = grid.best_step_sizes(rows)
    backend = backends.backend_name()
    summary = grid.summary(scale_name, scale, best, seconds=seconds, backend=backend, seed=seed)
    write_section10(out, rows, grid.format_table(best), summary)
    print(grid.format_table(best))
    runs = len(groups) * per_group
    print(finished_line(runs, seconds, before, backend, out, stored=progress.stored))
    return 0


def _group_done(progress: RunProgress, i: int, cell_results, stored: bool) -> None:
    """Group i's runs, trained (their checks timed) or read back from its unit (not timed:
    the clock restarts after them); every cell of the group is done."""
    if stored:
        progress.on_stored(i, cell_results)
    else:
        progress.on_cells_done(i, cell_results)


def _refuse_spec_flags(args) -> None:
    """Of the spec's flags the preset takes only --seed (with its own --scale, and --out,
    --resume, --quiet, --cache-dir, --kernel and --memory-budget), and runs in one process."""
    fields = [(flag, field) for flag, (field, *_) in RUN_FLAGS.items() if flag != "--seed"]
    fields += [(f"--{name.replace('_', '-')}", name) for name in _OTHERS]
    given = [flag for flag, field in fields if getattr(args, field, None) is not None]
    if getattr(args, "distributed", False):
        given.append("--distributed")
    if args.command != "run":
        given.insert(0, f"gdrelu {args.command}")
    if given:
        raise UsageError(
            f"{given[0]}: not with the section10 preset, which takes --scale, --seed, --out, "
            "--resume, --quiet, --cache-dir, --kernel and --memory-budget"
        )


def _scale_and_seed(args, started: dict | None) -> tuple[str, int]:
    """The flags', else the manifest's (--resume), else small and 0."""
    recorded = started["specs"][0] if started is not None else {}
    scale = args.scale or recorded.get("scale", "small")
    seed = args.seed if args.seed is not None else recorded.get("seed", 0)
    if scale not in grid.SCALES:
        raise UsageError(f"--resume: {args.resume} records an unknown scale {scale!r}")
    return scale, seed
