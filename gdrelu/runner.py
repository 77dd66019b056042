"""Training a spec's runs: memory-budgeted batches of padded networks, the adaptive run
count, several processes, and resuming from the unit store (docs/design.md, "Runner").

A unit is one spec's width (all its Δ cells); each finished unit is stored at once
(`store.save_unit`), and so is each finished batch of a bucket trained in several or
grown to a target (`store.save_part`), so a run killed at any moment redoes only the batch
in progress (the bucket in progress across processes).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from gdrelu import memory, parts, store
from gdrelu.batched import joined
from gdrelu.buckets import shared_width, width_buckets
from gdrelu.cells import (
    Cell,
    CellResult,
    batch_settings,
    initial_runs,
    joined_cells,
    noise_keys,
    points_at_zero,
    training_arguments,
    validation_arguments,
    warn_of_cells_at_zero,
)
from gdrelu.engine import PointAtZeroWarning, simulate
from gdrelu.growth import OnForecast, grown_to_target
from gdrelu.memory import run_bytes
from gdrelu.model import Params
from gdrelu.processes import Processes, cell_from_processes, trained_everywhere
from gdrelu.progress import progress_after
from gdrelu.spec import ExperimentSpec, SpecError
from gdrelu.step_size import initial_step_sizes

Work = Sequence[tuple[Cell, np.ndarray]]  # (cell, run indices) in batch order
OnCheck = Callable[[tuple[int, ...], int, np.ndarray], None]  # (widths, check, statuses)
OnCells = Callable[[Sequence[CellResult]], None]
OnBatches = Callable[[Sequence[Sequence[Cell]]], None]  # the cells of each batch to come
OnBatchDone = Callable[[Sequence[tuple[CellResult, np.ndarray]], float], None]


def run_experiment(
    spec: ExperimentSpec,
    *,
    on_check: OnCheck | None = None,
    on_cells_done: OnCells | None = None,
    processes: Processes | None = None,
    memory_budget: int | None = None,
    units: Path | None = None,
    on_stored: OnCells | None = None,
    stored: dict[int, list[CellResult]] | None = None,
    on_batches: OnBatches | None = None,
    on_forecast: OnForecast | None = None,
) -> list[CellResult]:
    """Run every cell of `spec`, one bucket of widths at a time (`width_buckets`: all
    their Δ cells in one batch, padded to the bucket's width), in the spec's cell order.
    A bucket whose runs do not fit in `memory_budget` bytes (default: a share of the free
    memory, `memory.memory_budget`), less what the finished runs hold, goes in several
    batches (`memory.results_bytes`; a run's result does not depend on its batch).

    With `units` (a run directory), the widths whose unit is stored there are loaded
    (`on_stored` receives their cells; `stored`: those the caller read already,
    `stored_widths`) and each width trained is stored as soon as its bucket finishes,
    before `on_cells_done` receives its cells. A bucket trained in several batches, or
    that `target_halfwidth` may grow, also stores each batch as it ends
    (`store.save_part`; not across processes), and a resume reads those batches instead
    of training them.

    With `processes`, this process trains runs index, index + count, … of every cell and
    `processes.gather` collects the shares: each process returns the same runs as one.

    With `target_halfwidth` H, each bucket continues in batches of `runs` more runs (run
    indices continue, so keys do too) for the cells whose 95% interval of P(stuck) is
    wider than 2H, until it is not or a cell has `max_runs` runs: the result of a cell
    equals that of a spec with its final count as `runs`. `on_check(widths, k, status)`
    reports progress after each check; `on_batches(batches)` the cells of each batch to
    come, once for every bucket to train before the first trains, then for each batch of
    added runs as it begins (`batch_plan`); `on_forecast` where each grown cell is
    expected to end (`growth`). A width whose single run needs more than the budget
    raises `memory.BudgetError` before anything is compiled.
    """
    arguments = locals()
    _check_arguments(spec, processes, {name: arguments[name] for name in CALLBACKS})
    units = None if units is None else Path(units)
    measured = memory.memory_budget(memory_budget)
    memory.check_fits(spec, measured)
    results = _stored_before(spec, units, stored, on_stored)
    if len(results) < len(spec.widths):
        if on_batches is not None:
            planned = first_batches(
                spec, memory_budget=measured, stored=results, processes=processes, units=units
            )
            on_batches(planned)
        budget = _batches_budget(spec, measured)
        part_dir = units if processes is None else None
        trained = _trained_buckets(
            spec, set(results), on_check, processes, budget, on_batches, part_dir, on_forecast
        )
        results |= _stored_as_trained(spec, trained, units, on_cells_done)
    return [cr for width in spec.widths for cr in results[width]]


CALLBACKS = ("on_check", "on_cells_done", "on_stored", "on_batches", "on_forecast")


def _check_arguments(spec, processes: Processes | None, callbacks: dict) -> None:
    """Refuse what is no spec, what several processes cannot do yet, and a callback
    (`callbacks`: `run_experiment`'s `CALLBACKS` by name) that cannot be called: it would
    fail only after a chunk has trained."""
    for name, callback in callbacks.items():
        if callback is not None and not callable(callback):
            raise ValueError(f"{name}: {callback!r} is not a function")
    if not isinstance(spec, ExperimentSpec):
        raise TypeError(
            f"spec: an ExperimentSpec (ExperimentSpec.from_dict for a dict), not {spec!r}"
        )
    if processes is not None and spec.target_halfwidth is not None:
        raise ValueError("target_halfwidth: not supported across processes yet")
    if processes is not None and spec.runs < processes.count:
        raise ValueError(f"runs: {spec.runs} per cell, fewer than the {processes.count} processes")


def _stored_before(spec, units: Path | None, stored, on_stored) -> dict:
    """{width: cells} of the units stored under `units` (`stored`: read already), each
    given to `on_stored`; the parts a kill left after their units were stored removed."""
    results = dict(stored_widths(spec, units) if stored is None else stored)
    if units is not None:
        store.remove_superseded_parts(units)
    if on_stored is not None:
        for cells in results.values():
            on_stored(cells)
    return results


def _batches_budget(spec: ExperimentSpec, measured: int) -> int:
    """The bytes a spec's batches may use: the budget less its finished runs' results."""
    return measured - memory.results_bytes(spec)


def _stored_as_trained(spec, trained, units: Path | None, on_cells_done) -> dict:
    """{width: cells} of each bucket's {width: cells} and seconds before of `trained`:
    every width's unit of a bucket stored under `units` (the bucket's time, that of its
    parts stored before included, goes to its first width's unit), then its parts
    removed, then `on_cells_done` for each width."""
    results, clock = {}, time.perf_counter()
    for widths, before in trained:
        if units is not None:
            seconds, clock = time.perf_counter() - clock, time.perf_counter()
            for i, (width, cells) in enumerate(widths.items()):
                took = before + seconds if i == 0 else 0.0
                store.save_unit(units, unit_name(spec, width), cells, took)
            store.remove_superseded_parts(units)
        results |= widths
        if on_cells_done is not None:
            for cells in widths.values():
                on_cells_done(cells)
    return results


def unit_name(spec: ExperimentSpec, width: int) -> str:
    return f"{spec.optimizer}-w{width}"


def stored_cells(units: Path | None, name: str, cells: Sequence[Cell]) -> list[CellResult] | None:
    """The stored results of `cells` (unit `name` under `units`), or None if not stored."""
    stored = None if units is None else store.load_unit(Path(units), name, cells)
    if stored is None:
        return None
    return [CellResult(cell, *pair) for cell, pair in zip(cells, stored, strict=True)]


def stored_widths(spec: ExperimentSpec, units: Path | None) -> dict[int, list[CellResult]]:
    """{width: its cells' results} of every width of `spec` whose unit is stored."""
    found = {}
    for width in spec.widths:
        cells = [Cell(width, delta, spec) for delta in spec.deltas]
        stored = stored_cells(units, unit_name(spec, width), cells)
        if stored is not None:
            found[width] = stored
    return found


def _bucket_work(spec: ExperimentSpec, stored: set[int], processes: Processes | None):
    """(bucket, widths, work) of every bucket of `spec` with a width not in `stored`: the
    buckets and padding of the whole spec, so that a resumed run pads each width as the
    uninterrupted run did; the work holds every run of each cell, or this process's
    share (runs index, index + count, ...)."""
    runs = np.arange(spec.runs)
    if processes is not None:
        runs = runs[processes.index :: processes.count]
    for bucket, all_widths in width_buckets(spec):
        widths = tuple(w for w in all_widths if w not in stored)
        if widths:
            cells = [Cell(width, delta, spec) for width in widths for delta in spec.deltas]
            yield bucket, widths, [(cell, runs) for cell in cells]


def first_batches(spec: ExperimentSpec, **settings) -> list[list[Cell]]:
    """The cells of each batch `run_experiment(spec, memory_budget=..., processes=...,
    units=...)` trains in its first pass over the widths not in `stored` (a grown cell's
    batches come after), as it announces them to `on_batches`: of each, the cells with
    runs no part under `units` holds (`first_pass`'s keywords)."""
    return first_pass(spec, **settings)[0]


def first_pass(
    spec: ExperimentSpec,
    *,
    memory_budget: int,
    stored: Collection[int] = (),
    processes: Processes | None = None,
    units: Path | None = None,
) -> tuple[list[list[Cell]], list[Cell]]:
    """(`first_batches`, `cells_in_parts`) at once, the parts read once."""
    return _first_pass(spec, memory.memory_budget(memory_budget), stored, processes, units)


def cells_in_parts(
    spec: ExperimentSpec, *, stored: Collection[int] = (), units: Path | None = None
) -> list[Cell]:
    """The cells of the widths of `spec` not in `stored` whose every run a part under
    `units` holds: the first pass trains none of their runs."""
    return _first_pass(spec, None, stored, None, units)[1]


def _first_pass(spec, measured: int | None, stored, processes, units):
    """(`first_batches`, `cells_in_parts`) with `measured` bytes (None: no batches)."""
    part_dir = None if units is None or processes is not None else Path(units)
    planned, done = [], []
    for bucket, widths, work in _bucket_work(spec, set(stored), processes):
        cells = [cell for cell, _ in work]
        names = [unit_name(spec, width) for width in widths]
        held = {} if part_dir is None else store.part_runs(part_dir, cells, names)
        done += [cell for cell, idx in work if not parts.not_held(held, [(cell, idx)])]
        if measured is not None:
            budget = _batches_budget(spec, measured)
            batches = _pieces(work, batch_plan(work, bucket=bucket, budget=budget)[0])
            planned += [[c for c, _ in new] for p in batches if (new := parts.not_held(held, p))]
    return planned, done


def _trained_buckets(
    spec: ExperimentSpec,
    stored: set[int],
    on_check,
    processes: Processes | None,
    budget: int,
    on_batches: OnBatches | None = None,
    part_dir: Path | None = None,
    on_forecast: OnForecast | None = None,
):
    """({width: its cells' results}, seconds its parts took before) of every bucket of
    `spec` with a width not in `stored` (`_bucket_work`); `on_batches` hears of a growing
    cell's batches as they come. With `part_dir` (a unit directory), each batch is stored
    there as a part as it ends (`parts.train_keeping_parts`) where a bucket takes several or
    will grow, and a batch whose runs are stored there already is read, not trained."""
    for bucket, widths, work in _bucket_work(spec, stored, processes):
        train = functools.partial(
            train_cells,
            bucket=bucket,
            classify_width=shared_width(spec, widths[0]),
            on_check=on_check,
            budget=budget,
        )
        cells = [cell for cell, _ in work]
        before = 0.0
        if processes is not None:
            done = trained_everywhere(train, work, processes)
            done = [cell_from_processes(cr, spec.runs, processes) for cr in done]
        elif part_dir is None:
            done = train(work)
        else:
            names = [unit_name(spec, width) for width in widths]
            growing = spec.target_halfwidth is not None
            train, before = parts.train_keeping_parts(train, work, part_dir, names, growing)
            done = train(work)
        if spec.target_halfwidth is not None:
            grow = functools.partial(train, on_batches=on_batches)
            done = grown_to_target(spec, cells, done, grow, on_check, on_forecast)
        yield {width: [cr for cr in done if cr.cell.width == width] for width in widths}, before


def train_cells(
    work: Work,
    *,
    bucket: int,
    classify_width: int,
    on_check: OnCheck | None,
    budget: int,
    on_batches: OnBatches | None = None,
    on_batch_done: OnBatchDone | None = None,
    held: Mapping[Cell, parts.HeldRuns] | None = None,
) -> list[CellResult]:
    """Train the runs of each (cell, indices) of `work`, every network padded to `bucket`
    neurons, in batches that fit in `budget` bytes, in blocks that shrink to fit
    (`memory.batching`): each cell's runs in index order, whatever the split. The cells
    may come from several specs that train alike (`cells.batch_settings`), such as the step
    sizes of a grid. `on_batches` receives the cells of each batch before the first
    trains (`batch_plan`); `on_batch_done` each batch's (cell result, run indices) and
    seconds as it ends. The runs `held` (stored before) are read instead of trained: a
    batch holding only such runs is neither announced nor trained, and one holding some
    trains the others alone. JAX's 64-bit mode must be on: without
    it the multinomial counts, and so a float32 spec's runs, would be drawn otherwise
    than the CLI draws them."""
    _require_x64()
    batches, block, redo = batch_plan(work, bucket=bucket, budget=budget)
    at_zero: dict[Cell, list[int]] = {}  # per cell: runs with a point at x = 0, runs trained
    train = functools.partial(
        _train_batch,
        bucket=bucket,
        classify_width=classify_width,
        block=block,
        redo=redo,
        at_zero=at_zero,
    )
    held = held or {}
    pieces = _pieces(work, batches)
    fresh = [parts.not_held(held, p) for p in pieces]
    if on_batches is not None:
        on_batches([[cell for cell, _ in new] for new in fresh if new])
    planned = zip(batches, pieces, fresh, strict=True)
    results = _batches_by_cell(train, len(work), planned, held, on_check, on_batch_done)
    warn_of_cells_at_zero(work, at_zero)
    # each cell's batches joined once, and freed as they are (`joined_cells`)
    return [joined_cells(batches_of_cell) for batches_of_cell in results]


def _batches_by_cell(
    train, cells: int, planned, held, on_check, on_batch_done
) -> list[list[CellResult]]:
    """The results of each of the `cells` cells of the work in the batches `planned`
    ((positions in the work, batch, runs to train) each), in batch order; nothing else
    holds them on return, so that joining them frees them."""
    results: list[list[CellResult]] = [[] for _ in range(cells)]
    finished = np.zeros(0, np.int8)  # statuses of the batches done, for on_check
    for owned, batch, new in planned:
        callback = None
        if on_check is not None:
            callback = functools.partial(progress_after, on_check, finished)
        done = _batch_results(train, batch, new, held, callback, on_batch_done)
        for (i, _), cr in zip(owned, done, strict=True):
            results[i].append(cr)
        finished = np.concatenate([finished, *(cr.result.status for cr in done)])
    return results


def _require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "run_experiment: a spec's runs draw their multinomial counts in float64, as the "
            'CLI\'s do: call jax.config.update("jax_enable_x64", True) at start-up (float32 '
            "specs still train in float32)"
        )


def _batch_results(train, batch: Work, new: Work, held, on_check, on_batch_done) -> list:
    """Each cell's result of `batch`: its runs `new` trained (their results and seconds to
    `on_batch_done`), the others read from `held`."""
    trained = {}
    if new:
        start = time.perf_counter()
        done = train(new, on_check=on_check)
        kept = [(cr, idx) for cr, (_, idx) in zip(done, new, strict=True)]
        if on_batch_done is not None:
            on_batch_done(kept, time.perf_counter() - start)
        trained = {cr.cell: (cr, idx) for cr, idx in kept}
    return [parts.batch_result(c, idx, held.get(c), trained.get(c)) for c, idx in batch]


def batch_plan(work: Work, *, bucket: int, budget: int) -> tuple[list, int | None, int | None]:
    """How `train_cells` splits `work` to fit in `budget` bytes (`memory.batching`): its
    batches, each a list of (position in `work`, run indices) in work order, consecutive
    runs of the cells in turn; and the block and redo sizes they train in (None: the
    engine's)."""
    total = sum(idx.size for _, idx in work)
    spec = work[0][0].spec
    per_run, per_block_run = run_bytes(spec, bucket, work[0][0])
    mixed = spec.mixed_layout
    limit, block, redo = memory.batching(per_run, per_block_run, budget, total, mixed, width=bucket)
    sizes = np.array([idx.size for _, idx in work])
    starts = np.cumsum(sizes) - sizes  # each cell's first position in the whole work
    batches = []
    for first in range(0, total, limit):
        lows = np.clip(first - starts, 0, sizes)
        highs = np.clip(first + limit - starts, 0, sizes)
        batches.append([(i, work[i][1][lows[i] : highs[i]]) for i in np.flatnonzero(lows < highs)])
    return batches, block, redo


def _pieces(work: Work, batches) -> list[Work]:
    """The (cell, run indices) of each of `batch_plan`'s batches."""
    return [[(work[i][0], idx) for i, idx in owned] for owned in batches]


def batch_inputs(work: Work, *, bucket: int, classify_width: int):
    """`simulate`'s inputs for the runs of `work`, networks padded to `bucket` neurons:
    (params, data, step sizes, keyword arguments: keys, the spec's training and validation
    arguments, `classify_width`). The cells must train alike (`cells.batch_settings`)."""
    spec = work[0][0].spec
    if any(batch_settings(cell.spec) != batch_settings(spec) for cell, _ in work):
        raise ValueError("train_cells: the cells of a batch must train alike")
    keys_of = noise_keys if not spec.full_batch else lambda cell, idx: None  # none to draw
    parts = [
        (*initial_runs(cell, idx, bucket), keys_of(cell, idx), np.full(idx.size, cell.width))
        for cell, idx in work
    ]
    count = sum(idx.size for _, idx in work)
    params, data, valid, keys, widths = joined(parts, count=count)
    runs = [(cell.spec, idx.size) for cell, idx in work]
    step = initial_step_sizes(runs, params, data, widths, classify_width)
    _check_step_sizes(work, np.asarray(step))
    arguments = {
        "key": keys,
        **training_arguments(spec),
        **validation_arguments(spec, valid),
        "classify_width": classify_width,
    }
    return params, data, step, arguments


def _check_step_sizes(work: Work, step: np.ndarray) -> None:
    """Refuse, naming the first such run, step sizes that are not positive and finite: a
    data-dependent rule on training data without curvature (all points at one x, as a
    split of a file with repeated x can leave) gives 1/0."""
    bad = np.flatnonzero(~(np.isfinite(step) & (step > 0)))
    if bad.size == 0:
        return
    sizes = np.cumsum([idx.size for _, idx in work])
    owner = int(np.searchsorted(sizes, bad[0], side="right"))
    cell, indices = work[owner]
    index = int(indices[bad[0] - (sizes[owner - 1] if owner else 0)])
    raise SpecError(
        "step_size",
        f"rule {cell.spec.step_size!r} gives h = {step[bad[0]]} for run {index} of width "
        f"{cell.width}, Δ = {cell.delta:g} ({bad.size} such runs in its batch): its training "
        "points leave no curvature (for --split: points that share one x); give a number",
    )


def _train_batch(
    work: Work, *, bucket: int, classify_width: int, on_check, block=None, redo=None, at_zero
) -> list[CellResult]:
    """Train the runs of `work` in one `simulate` call (`train_cells`), in blocks and redos
    of `block` and `redo` runs (None: the engine's); count in `at_zero` each cell's runs
    with a training point at x = 0, and its runs trained: [flagged, trained]."""
    params, data, step, arguments = batch_inputs(work, bucket=bucket, classify_width=classify_width)
    flagged = points_at_zero(work[0][0].spec, data.x)
    label = tuple(sorted({cell.width for cell, _ in work}))
    callback = None if on_check is None else (lambda k, status: on_check(label, k, status))
    with warnings.catch_warnings():  # said per cell instead, `warn_of_cells_at_zero`
        warnings.simplefilter("ignore", PointAtZeroWarning)
        sim = simulate(params, data, step, **arguments, on_check=callback, block=block, redo=redo)
    step = np.asarray(step)
    done, first = [], 0
    for cell, idx in work:
        part = slice(first, first + idx.size)
        result = jax.tree.map(lambda v, s=part: v[s], sim)
        # copies: a view would keep the whole padded batch alive beside the next batches
        a, b, w = (np.array(v[..., : cell.width]) for v in result.params[:3])
        final = Params(a, b, w, result.params.c)
        done.append(CellResult(cell, step[part], result._replace(params=final)))
        if flagged is not None:
            counts = at_zero.setdefault(cell, [0, 0])
            counts[0] += int(flagged[part].sum())
            counts[1] += idx.size
        first += idx.size
    return done
