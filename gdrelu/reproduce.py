"""`gdrelu reproduce`: every experiment of the paper as its code ran it, into one report.

Each experiment is run with the protocol of the paper's code (docs/fidelity.md), and its
tables give that code's counts (crossed, early stopped) beside gdrelu's P(stuck), at one
of two scales: "small" (all of it on a 2-core CPU in minutes)
or "paper" (the paper's widths and run counts). Its cells are units of the result store
under DIR/NAME/units/, so a killed reproduction resumes where it stopped; a finished
experiment leaves DIR/NAME/section.json and is not run again. The report (DIR/report.md
and DIR/report.html) puts the numbers of the paper's code beside ours where they are
known, with the agreement as a two-proportion z-score.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gdrelu import atomic, plot, report, section10, store
from gdrelu.analysis import cell_summary
from gdrelu.cells import CellResult
from gdrelu.detectors import ESCAPE_MARGIN
from gdrelu.outcome import Status
from gdrelu.progress import widths_text
from gdrelu.protocols import protocol
from gdrelu.runner import run_experiment
from gdrelu.spec import ExperimentSpec
from gdrelu.stats import combined_z, failure_probability, stouffer_z, two_proportion_z

SCALES = ("small", "paper")
PAPER_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)
# Crossed runs of 400 per (width, Δ) in the paper's own code (docs/fidelity.md).
PAPER_CROSSED = {(16, 0.0): 138, (16, 0.1): 143, (32, 0.0): 97, (32, 0.1): 98, (64, 0.0): 70,
                 (64, 0.1): 90}  # fmt: skip
PAPER_RUNS = 400
AGREEMENT_Z = 3.0  # |z| below this: within the Monte Carlo error of both estimates


class Sizes(NamedTuple):
    """Widths, Δ values and runs per cell of an experiment at one scale."""

    widths: tuple[int, ...]
    deltas: tuple[float, ...]
    runs: int


SIZES = {
    "gd-figure": {"small": Sizes((16, 32, 64, 128, 256, 512), (0.0, 0.01, 0.1), 400),
                  "paper": Sizes(PAPER_WIDTHS, (0.0, 0.01, 0.1), 10_000)},
    "variants": {"small": Sizes((16, 64), (0.1,), 200),
                 "paper": Sizes((16, 64, 256, 1024), (0.0, 0.1), 1000)},
    "star": {"small": Sizes((16, 32, 64), (0.0,), 200),
             "paper": Sizes((128, 256, 512, 1024, 2048, 4096, 8192), (0.0,), 1000)},
}  # fmt: skip
STAR_BUDGETS = {"small": (10_000, 50_000, 100_000), "paper": (100_000, 200_000, 500_000, 1_000_000)}
STAR_CHECK_EVERY = 1000


def experiment_specs(name: str, scale: str) -> list[ExperimentSpec]:
    """The specs of experiment `name` at `scale`; section10's are one per group of its grid
    (`section10.group_specs`), for the memory budget."""
    if name == "gd-figure":
        sizes = SIZES["gd-figure"][scale]
        return [ExperimentSpec(**protocol("gd"), **sizes._asdict())]
    if name in ("sgd", "adam", "small-step", "swapped"):
        return [ExperimentSpec(**protocol(name), **SIZES["variants"][scale]._asdict())]
    if name == "star":
        return [ExperimentSpec(
            data="star", step_size="param-norm", step_factor=2.0, dtype="float32", stop_on=(),
            check_every=STAR_CHECK_EVERY, max_checks=STAR_BUDGETS[scale][-1] // STAR_CHECK_EVERY,
            **SIZES["star"][scale]._asdict(),
        )]  # fmt: skip
    if name == "section10":
        return section10.group_specs(section10.SCALES[SECTION10_SCALE[scale]])
    raise ValueError(f"experiment: {name!r} is not one of {', '.join(EXPERIMENTS)}")


def kept_cells(name: str, scale: str) -> int:
    """Cells of each of `experiment_specs(name, scale)`'s specs whose results stay in
    memory together: a Section 10 group's configurations, else the spec's own."""
    if name == "section10":
        return section10.group_size(section10.SCALES[SECTION10_SCALE[scale]])
    return 1


def _interval(k: int, n: int) -> str:
    p, (low, high) = failure_probability(k, n)
    return f"{p:.3f} [{low:.3f}, {high:.3f}]"


def _stuck_table(cells: list[CellResult], with_paper: bool) -> tuple[report.Table, list[float]]:
    """Per cell: runs, status counts, P(stuck) [95% CI]; the paper's crossed runs and z.
    Also the z of each cell the paper's code reports."""
    header = ["width", "Δ", "runs", "crossed", "early stopped", "unfinished", "diverged",
              "stuck (by the rule)", "P(stuck) [95% CI]"]  # fmt: skip
    if with_paper:
        header += ["P(crossed)", "paper's code: crossed/400", "z"]
    rows, zs = [], []
    others = (Status.EARLY_STOPPED, Status.UNFINISHED, Status.DIVERGED)
    for cr in cells:
        s, status = cell_summary(cr), cr.result.status
        crossed, runs = int(np.sum(status == Status.CROSSED)), int(status.size)
        counts = [int(np.sum(status == code)) for code in others]
        row = [cr.cell.width, cr.cell.delta, runs, crossed, *counts, s["stuck"],
               _interval(s["stuck"], runs)]  # fmt: skip
        if with_paper:
            theirs = PAPER_CROSSED.get((cr.cell.width, cr.cell.delta))
            z = two_proportion_z(crossed, runs, theirs, PAPER_RUNS) if theirs is not None else None
            row += [_interval(crossed, runs), "-" if theirs is None else theirs,
                    "-" if z is None else f"{z:+.2f}"]  # fmt: skip
            zs += [] if z is None else [z]
        rows.append(tuple(row))
    return report.Table(tuple(header), rows), zs


def _stuck_section(name, title, cells, spec, directory, seconds, with_paper) -> report.Section:
    figure = f"{name}.png"
    summaries = [cell_summary(cr) for cr in cells]
    setting = plot.setting_line(spec.to_dict())
    atomic.write_figure(
        directory / figure, lambda f: plot.failure_probability_plot(summaries, f, setting)
    )
    table, zs = _stuck_table(cells, with_paper)
    if spec.final_stuck_rule:
        rule = (
            "its final network is still linear (a run the crossing rule stopped is "
            "not: it may escape)"
        )
    else:
        rule = "certified or degenerate (so no crossed run is)"
    text = [f"Final statuses, and P(stuck) with its 95% Clopper-Pearson interval; a run is "
            f"stuck if {rule}: docs/theory.md, 'Outcome of a run'."]  # fmt: skip
    if spec.final_stuck_rule and spec.early_stopping:
        text.append("The paper's code called a run stuck when early stopping ended it before "
                    "any crossing: the column 'early stopped' (docs/fidelity.md).")  # fmt: skip
    if with_paper and zs:
        worst = max(map(abs, zs))
        verdict = "agree: within" if worst < AGREEMENT_Z else "disagree: beyond"
        (squares, p_squares), (shift, p_shift) = combined_z(zs), stouffer_z(zs)
        text.append(
            f"P(crossed) against the paper's code (400 runs a cell): the largest |z| is "
            f"{worst:.2f}, so the two {verdict} {AGREEMENT_Z:g} standard errors. Together, "
            f"Σz² = {squares:.2f} over {len(zs)} cells (p = {p_squares:.3g} under χ² with "
            f"{len(zs)} degrees of freedom), and Stouffer's Σz/√{len(zs)} = {shift:+.2f} "
            f"(p = {p_shift:.3g}), which a bias of one sign in every cell would move."
        )
    return report.Section(name, title, text, [table], figure, spec.applied(), seconds)


def _star_section(cells, spec, scale, directory, seconds) -> report.Section:
    """Fractions of runs whose pattern changed, or whose loss dipped below L_lin, by the
    end of each step budget (first-crossing steps), and those that ended below L_lin."""
    budgets = STAR_BUDGETS[scale]
    header = ["width", "runs"]
    for b in budgets:
        header += [f"pattern changed ≤ {b:g}", f"loss < L_lin ≤ {b:g}"]
    header.append("ended below L_lin")
    rows, lines = [], {}
    for cr in cells:
        res, runs = cr.result, cr.result.status.size
        row = [cr.cell.width, runs]
        for b in budgets:
            changed = int(np.sum((res.pattern_change_step >= 0) & (res.pattern_change_step <= b)))
            below = int(np.sum((res.loss_below_step >= 0) & (res.loss_below_step <= b)))
            row += [_interval(changed, runs), _interval(below, runs)]
            lines.setdefault(b, []).append((cr.cell.width, below, runs))
        ended = int(np.sum(res.final_loss < (1.0 - ESCAPE_MARGIN) * res.linear_threshold))
        rows.append((*row, _interval(ended, runs)))
    figure = "star.png"
    ylabel = "fraction of runs with loss < L_lin\nat some step within the budget"
    setting = plot.setting_line(spec.to_dict())
    atomic.write_figure(directory / figure, lambda f: plot.fraction_plot(lines, ylabel, f, setting))
    text = ["Star data (11 rays, 3 points each), float32, h = 2/‖θ‖² at initialization (the "
            "star code's step size applied twice per epoch), no stopping. Fractions with 95% "
            "Clopper-Pearson intervals, counted at ANY step up to each budget, as the paper's "
            "code counted them; the last column reads the final network."]  # fmt: skip
    table = report.Table(tuple(header), rows)
    return report.Section("star", "Star data (2-D)", text, [table], figure, spec.applied(), seconds)


SECTION10_SCALE = {"small": "tiny", "paper": "full"}


def _section10(directory: Path, scale: str, on_progress, memory_budget=None) -> report.Section:
    """The Section 10 grid (`gdrelu.section10`), each group a unit of the store."""
    start, grid = time.perf_counter(), section10.SCALES[SECTION10_SCALE[scale]]
    rows, units = [], _units(directory)
    before = store.stored_seconds(units)
    for group in section10.configurations(grid):
        on_progress(f"section10 {section10.unit_name(group)}")
        rows += section10.run_group(grid, group, units=units, memory_budget=memory_budget)
    best = section10.best_step_sizes(rows)
    atomic.write_figure(directory / "section10.png", lambda f: plot.relative_rmse_plot(best, f))
    header = ("data", "d", "init", "optimizer", "bias init", "step", "test RMSE", "± s.e.",
              "relative")  # fmt: skip
    table = report.Table(header, [
        (r["data"], r["dim"], r["init"], r["optimizer"], r["bias_init"], r["step_size"],
         r["test_rmse"], r["test_rmse_se"], r["relative_test_rmse"]) for r in best
    ])  # fmt: skip
    text = ["Test RMSE at the best-validation epoch, step size chosen by validation RMSE, "
            "mean ± standard error over runs; 'relative' divides by the best row of the same "
            "data and d, over every init, optimizer and bias init."]  # fmt: skip
    settings = {"scale": SECTION10_SCALE[scale], **dataclasses.asdict(grid)}
    return report.Section("section10", "Section 10 grid", text, [table], "section10.png",
                          settings, before + time.perf_counter() - start)  # fmt: skip


TITLES = {
    "gd-figure": "GD: P(stuck) against width (the paper's figure)",
    "sgd": "SGD, B = 16, crossing or early stopping",
    "adam": "Adam, B = 16, the GD step size, crossing or early stopping",
    "small-step": "GD with the small step 0.01/n, crossing or early stopping",
    "swapped": "GD with swapped variances",
}
EXPERIMENTS = (*TITLES, "star", "section10")


def run_one(
    name: str, scale: str, directory: Path, on_progress, memory_budget: int | None = None
) -> report.Section:
    """Run experiment `name` (resuming from its units) in batches that fit in
    `memory_budget` bytes (default: `memory.memory_budget`) and return its report section."""
    if name == "section10":
        return _section10(directory, scale, on_progress, memory_budget)
    (spec,) = experiment_specs(name, scale)
    units = _units(directory)
    before, start = store.stored_seconds(units), time.perf_counter()
    cells = run_experiment(
        spec,
        memory_budget=memory_budget,
        units=units,
        on_check=lambda widths, k, status: on_progress(f"{name} n={widths_text(widths)} check {k}"),
    )
    seconds = before + time.perf_counter() - start
    if name == "star":
        return _star_section(cells, spec, scale, directory, seconds)
    return _stuck_section(name, TITLES[name], cells, spec, directory, seconds, name == "gd-figure")


def _units(directory: Path) -> Path:
    """Where experiment `directory` keeps its units: in its own units/, or, for a
    reproduction an older gdrelu started, in units/units/."""
    started_before = directory / "units"
    return started_before if (started_before / store.UNITS).is_dir() else directory


def reproduce(
    out: Path,
    *,
    scale: str = "small",
    only: tuple[str, ...] | None = None,
    on_progress: Callable[[str], None] = lambda line: None,
    memory_budget: int | None = None,
) -> Path:
    """Run the experiments `only` (default: all) at `scale` into `out`, skipping those
    already finished there, and write out/report.md and out/report.html; returns the
    Markdown report's path. `memory_budget`: bytes a batch of runs may use (`run_one`)."""
    if scale not in SCALES:
        raise ValueError(f"scale: {scale!r} is not one of {', '.join(SCALES)}")
    names = tuple(only or EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"only: {', '.join(unknown)} not among {', '.join(EXPERIMENTS)}")
    sections = []
    for name in names:
        directory = out / name
        saved = directory / "section.json"
        section = _saved_section(saved)
        if section is None:
            directory.mkdir(parents=True, exist_ok=True)
            section = run_one(name, scale, directory, on_progress, memory_budget)
            atomic.write_text(saved, json.dumps(section.to_json(), indent=1, default=float))
        sections.append(section._replace(figure=f"{name}/{section.figure}"))
    return write(out, scale, sections)


def _saved_section(path: Path) -> report.Section | None:
    """The finished section stored at `path`, or None: not finished, or its file damaged
    (then the section runs again, from its stored units where it has them)."""
    if not path.exists():
        return None
    try:
        return report.Section.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"{path} is unreadable ({err}); that section runs again", stacklevel=2)
        return None


def write(out: Path, scale: str, sections: list[report.Section]) -> Path:
    """DIR/report.md and DIR/report.html of finished sections."""
    title = f"gdrelu reproduction of Holzmüller & Steinwart (JMLR 2022), scale {scale}"
    preamble = [
        "Each section runs one experiment of the paper with the protocol and metric of the "
        "paper's own code (docs/fidelity.md). Intervals are 95% Clopper-Pearson; z-scores "
        "compare our proportions with the paper's code's under the pooled binomial null.",
        f"Total time of the sections: {sum(s.seconds for s in sections):.0f} s.",
    ]
    atomic.write_text(out / "report.md", report.markdown(title, preamble, sections))
    atomic.write_text(out / "report.html", report.html_page(title, preamble, sections, out))
    return out / "report.md"


def estimated_work(scale: str, names=EXPERIMENTS) -> dict[str, tuple[str, float]]:
    """(path, work) of each experiment at `scale`, at most: run-steps on the propagator
    (GD runs end within about 42 000 steps), neuron-point-steps on the general path (the
    others may use their whole budget; Section 10 over its minibatches)."""
    work = {}
    for name in names:
        if name == "section10":
            grid = section10.SCALES[SECTION10_SCALE[scale]]
            configs = len(section10.configurations(grid)) * len(grid.bias_inits)
            runs = configs * len(grid.step_exponents) * grid.runs
            steps = grid.epochs_times_d * grid.train_per_dim // grid.batch_size
            work[name] = ("general", runs * steps * grid.width * grid.batch_size)
            continue
        (spec,) = experiment_specs(name, scale)
        runs = spec.runs * len(spec.deltas)
        steps = 42_000 if name == "gd-figure" else spec.check_every * spec.max_checks
        if spec.path == "general" or spec.mixed_layout:  # general blocks: at most that
            work[name] = ("general", runs * steps * spec.num_points * sum(spec.widths))
        else:
            work[name] = ("propagator", runs * steps * len(spec.widths))
    return work


PROBE_WORK = 2e8  # neuron-point-steps of a general-path probe: about 1 s on a 2-core CPU
PROBE_STEPS = 1000  # at most, per probe chunk


def path_rates() -> dict[str, float]:
    """Seconds per unit of `estimated_work` on this backend, from a warm chunk of each
    path: 256 runs of width 64 on the six points."""
    import jax

    from gdrelu import he_init, simulate, theory
    from gdrelu.data import paper_data

    keys = jax.random.split(jax.random.key(0), 768)
    params = jax.vmap(lambda k: he_init(64, key=k))(keys[:256])
    data = jax.vmap(lambda k: paper_data(k, 0.0, 64**2))(keys[256:512])
    step = theory.paper_step_size(params, data)
    probes = {
        "propagator": (dict(stop_on=("crossed",)), 256 * 1000),
        "general": (dict(optimizer="sgd", key=keys[512:], stop_on=()), 256 * 1000 * 64 * 6),
    }
    rates = {}
    for path, (kwargs, units) in probes.items():
        simulate(params, data, step, check_every=1000, max_checks=1, **kwargs)
        start = time.perf_counter()
        simulate(params, data, step, check_every=1000, max_checks=1, **kwargs)
        rates[path] = (time.perf_counter() - start) / units
    return rates


def general_rate(spec: ExperimentSpec) -> float:
    """Seconds per neuron-point-step of `spec`'s runs on the general path, measured at its
    widest width with its own data, dtype and optimizer, every run training (no stopping):
    the warm time of two chunks of S steps less that of one (so the fixed cost of a call
    drops out), for one engine block of runs per CPU device, or all of a cell's runs on an
    accelerator. Per neuron and point a step costs more at larger widths (caches:
    docs/star-at-scale.md), so the widest width's rate bounds the narrower ones'."""
    import jax

    from gdrelu.buckets import shared_width
    from gdrelu.cells import Cell
    from gdrelu.engine import simulate
    from gdrelu.engine.placement import BLOCK
    from gdrelu.runner import batch_inputs

    width = max(spec.widths)
    cpu = jax.default_backend() == "cpu"
    runs = min(spec.runs, BLOCK * jax.local_device_count()) if cpu else spec.runs
    budget = spec.check_every * spec.max_checks  # no more steps than a run may take
    steps = min(budget, PROBE_STEPS, max(10, round(PROBE_WORK / (runs * width * spec.num_points))))
    work = [(Cell(width, spec.deltas[0], spec), np.arange(runs))]
    params, data, step, arguments = batch_inputs(
        work, bucket=width, classify_width=shared_width(spec, width)
    )
    arguments.update(stop_on=(), check_every=steps)

    def seconds(checks: int) -> float:
        start = time.perf_counter()
        jax.block_until_ready(simulate(params, data, step, **{**arguments, "max_checks": checks}))
        return time.perf_counter() - start

    seconds(1)  # compiles, or reads the programs from the cache
    one, two = seconds(1), seconds(2)
    return max(two - one, 0.0) / (runs * steps * width * spec.num_points)


def estimated_seconds(scale: str, names=EXPERIMENTS) -> float:
    """An upper estimate of the time `reproduce` takes at `scale` on this backend: the
    propagator's and Section 10's work at `path_rates`, every other general-path
    experiment's at its own `general_rate`."""
    rates = path_rates()
    total = 0.0
    for name, (path, work) in estimated_work(scale, names).items():
        if path == "general" and name != "section10":
            (spec,) = experiment_specs(name, scale)
            total += work * general_rate(spec)
        else:
            total += work * rates[path]
    return total
