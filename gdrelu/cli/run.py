"""`gdrelu run` and `gdrelu compare`: one spec, or one per optimizer on common random
numbers (a cell's data and initial networks do not depend on its optimizer).

Everything is checked before the output directory is created: the specs, the memory
budget, the processes and the kernel; then each spec's cells train (`runner`), each
finished unit stored at once, and the tables, summary and figures are written."""

from __future__ import annotations

import functools
import sys
import time

from gdrelu.cli import backends, interrupt, options, outdir, resume
from gdrelu.cli.errors import Interrupted, PeerLost, UsageError
from gdrelu.cli.progress import RunProgress, finished_line
from gdrelu.memory import BudgetError
from gdrelu.optim import NAMED
from gdrelu.progress import spec_clock
from gdrelu.spec import SpecError
from gdrelu.store import MANIFEST


def execute(args, started: dict | None = None) -> int:
    """Run the specs of the command line, or of the manifest `started` (--resume)."""
    if getattr(args, "scale", None):
        raise UsageError("--scale: sizes a preset grid; give it with --preset section10")
    if args.command == "compare" and started is None and args.optimizers is None:
        raise UsageError(f"--optimizers: needed, two or more of {', '.join(NAMED)}")
    backends.enable_x64()
    if started is not None:
        specs = resume.recorded_specs(args, started)
    else:
        specs = options.requested_specs(args)
    budget = options.budget_bytes(args.memory_budget)
    backends.refuse_process_flags_alone(args)
    processes = backends.start_processes(args, specs) if args.distributed else None
    if processes is not None:
        backends.check_same_experiment(specs, processes, args.num_processes)
    writer = processes is None or processes.index == 0
    budget = _checked_on_every_process(args, specs, budget, processes, started is not None)
    out = _run_directory(args, specs, processes)
    labels = [f"{spec.optimizer} " if len(specs) > 1 else "" for spec in specs]
    from gdrelu.store import stored_seconds

    # a resumed run's earlier time, read before the bar is drawn: an unreadable unit's
    # error would follow the bar on its line
    before = 0.0 if out is None else stored_seconds(out)
    progress = RunProgress(
        sum(spec.runs * len(spec.cells()) for spec in specs),
        spec_clock(specs),
        enabled=writer and not args.quiet,
        labels=labels,
    )
    start = time.perf_counter()
    try:
        results = _train(specs, progress, processes=processes, budget=budget, out=out)
    except KeyboardInterrupt:
        progress.close()  # before the message, so that no part of the bar follows it
        if writer:
            raise Interrupted(backends.resume_command("run", out, args)) from None
        return interrupt.exit_code()
    except (SpecError, BudgetError) as err:  # refuted by the draws (`runner`)
        if out is not None and started is None:  # a bad setting: no resume can finish it
            outdir.discard_unstarted(out, stored_too=isinstance(err, SpecError))
        raise
    except (ValueError, RuntimeError, MemoryError) as err:
        progress.close()
        if out_of_memory(err):  # trained batches kept: a lower budget resumes them
            if out is not None and started is None and not outdir.holds_parts(out):
                outdir.discard_unstarted(out)
            raise BudgetError(_out_of_memory(err, out, args)) from None
        if processes is None or "gloo" not in str(err).lower():
            raise
        raise PeerLost(_peer_lost(err, out, args)) from None
    finally:
        progress.close()
    if writer:
        seconds = before + time.perf_counter() - start
        _report(specs, results, seconds, out, before, progress.stored)
    return 0


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is the host's or XLA's allocation failing (RESOURCE_EXHAUSTED)."""
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)


def _out_of_memory(err: BaseException, out, args) -> str:
    """The refusal of a run whose allocation failed although the memory model admitted it:
    the allocation's words, a lower budget's advice, and where units were stored (its
    directory kept), the command that finishes it."""
    said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    line = (
        f"--memory-budget: out of memory while training ({said[:200]}), where the memory "
        "model (docs/wide-networks.md) expected the runs to fit; give a lower "
        "--memory-budget, which trains fewer runs at a time"
    )
    if out is not None and (out / MANIFEST).exists():
        line += f"; finish with: gdrelu {args.command} --resume {out} --memory-budget GB"
    return line


def _checked_on_every_process(args, specs, budget, processes, resumed: bool) -> int:
    """The backends prepared (kernel, compiler) and the specs checked against the memory
    budget, which is measured once, here: its bytes. With several processes a refusal on
    one host ends them all on one line (`Processes.agreed`). A `resumed` run's refusal
    says only to raise the budget: --resume refuses a change to the spec's sizes."""

    def checked():
        backends.prepare(
            every_core=processes is None,
            cache_dir=args.cache_dir,
            specs=specs,
            kernel_flag=args.kernel,
        )
        return options.check_fits(specs, budget, lower="" if resumed else None)

    if processes is None:
        return checked()
    elsewhere = UsageError("--distributed: another process refused the run (it says why)")
    return processes.agreed(checked, (UsageError, BudgetError), elsewhere)


def _run_directory(args, specs, processes):
    """The writer's run directory, opened with the manifest (None on the other processes).
    With several processes each learns whether process 0 opened it: a refusal there ends
    them all on one line (`Processes.agreed`)."""
    from gdrelu.provenance import manifest

    def opened():
        if processes is not None and processes.index != 0:
            return None
        recorded = manifest([spec.to_dict() for spec in specs], specs)
        hashes = [spec.data_sha256 for spec in specs]
        if any(hashes):  # a resume must read the same points, not only the same path
            recorded["settings"]["data_sha256"] = hashes
        return outdir.open_directory(args, recorded, outdir.result_bytes(specs))

    if processes is None:
        return opened()
    elsewhere = UsageError("--distributed: process 0 could not open the run directory (it says)")
    out = processes.agreed(opened, (UsageError, OSError), elsewhere)
    if out is not None:
        _announce_resume(out, processes.count, args)
    return out


def _peer_lost(err, out, args) -> str:
    """What a process says when a gather failed because another process ended: the
    collective's first line, and how to finish (process 0) or who says it (the others)."""
    first = str(err).strip().splitlines()[0][:200]
    if out is None:
        return f"another process ended ({first}); process 0 says how to finish the run"
    return (
        f"another process ended ({first}); finish with: {backends.resume_command('run', out, args)}"
    )


def _announce_resume(out, count: int, args) -> None:
    """Before a distributed run trains: the way to finish comes first, since process 0
    may be the one that dies (the others then only say that a process ended)."""
    print(
        f"gdrelu: {count} process{'es' if count > 1 else ''}; if one dies the others abort, and "
        f"`{backends.resume_command('run', out, args)}` (one process, no --distributed) finishes "
        "the run",
        file=sys.stderr,
    )


def _train(specs, progress: RunProgress, *, processes, budget, out) -> list:
    """Every spec's cell results, in order, units stored under `out`; the bar counts the
    units stored there before (a resume) at once, those of every spec."""
    from gdrelu import memory, runner

    stored = [runner.stored_widths(spec, out) for spec in specs]
    for i, widths in enumerate(stored):  # a resume's stored runs, before any spec trains
        for cells in widths.values():
            progress.on_stored(i, cells)
    budget = memory.memory_budget(budget)
    held = [sum(memory.results_bytes(s) for s in specs[:i]) for i in range(len(specs))]
    for i, spec in enumerate(specs):  # every spec's batches priced from the start
        planned, done = runner.first_pass(
            spec,
            memory_budget=budget - held[i],
            stored=stored[i],
            processes=processes,
            units=out,
        )
        progress.on_batches(i, planned)
        if done:  # cells whose every run a part holds: priced at nothing
            progress.finished(i, [(cell.width, cell.delta) for cell in done])
    results = []
    for i, spec in enumerate(specs):  # the earlier specs' results stay until the end
        results += runner.run_experiment(
            spec,
            stored=stored[i],
            on_check=functools.partial(progress.on_check, i),
            on_cells_done=functools.partial(progress.on_cells_done, i),
            on_batches=functools.partial(progress.on_batches, i),
            on_forecast=functools.partial(progress.on_forecast, i),
            processes=processes,
            memory_budget=budget - held[i],
            units=out,
        )
    return results


def _report(specs, results, seconds: float, out, before: float, stored: int) -> None:
    """runs.csv, summary.json and the figures, and the table on stdout; `seconds` counts
    the `before` seconds of the units and parts stored before a resume, which held
    `stored` of the runs."""
    from gdrelu.analysis import (
        comparisons,
        experiment_summary,
        format_comparisons,
        format_table,
    )
    from gdrelu.records import table
    from gdrelu.store import write_results

    backend = backends.backend_name()
    extra = {}
    if len(specs) > 1:
        extra = {
            "optimizers": [s.optimizer for s in specs],
            "specs": [s.to_dict() for s in specs],
            "comparisons": comparisons(results),
        }
    summary = experiment_summary(
        specs[0], results, seconds=seconds, backend=backend, extra=extra, together=specs
    )
    runs = sum(cr.result.status.size for cr in results)
    if before or stored:
        summary = _with_earlier_sessions(summary, out, finished=stored >= runs)
        seconds = summary["seconds"]
    write_results(out, table(results), summary)
    print(format_table(summary["cells"]))
    if summary.get("comparisons"):
        print(format_comparisons(summary["comparisons"]))
    print(finished_line(runs, seconds, before, backend, out, stored=stored))


def _with_earlier_sessions(summary: dict, out, finished: bool) -> dict:
    """A resumed run's summary with the peak memory of every session that wrote one (the
    larger of each), and, when every run was `finished` before the resume and a summary
    was written, that summary's seconds: this session trained nothing."""
    import json

    try:
        earlier = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):  # killed before its summary: this session's peak alone
        return summary
    peaks = earlier.get("peak_memory") or {}
    merged = {
        key: max((v for v in (value, peaks.get(key)) if isinstance(v, int)), default=value)
        for key, value in summary["peak_memory"].items()
    }
    kept = {"seconds": earlier["seconds"]} if finished and "seconds" in earlier else {}
    return {**summary, "peak_memory": merged, **kept}
